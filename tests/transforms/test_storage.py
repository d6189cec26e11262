"""Object access: whole reads, atomic writes, URI checks, retries and error classification."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from apache_beam.io.filesystems import FileSystems
from botocore.exceptions import ClientError
from google.api_core import exceptions as gexc

from matteflow.transforms.failures import (
    BadRow,
    Forbidden,
    NotFound,
    PermanentError,
    TransientError,
    classify,
)
from matteflow.transforms.storage import RetryPolicy, check_uri, read_bytes, write_atomic


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_read_bytes_reads_a_local_file(tmp_path: Path) -> None:
    (tmp_path / "a.bin").write_bytes(b"\x01\x02\x03")
    assert read_bytes(str(tmp_path / "a.bin")) == b"\x01\x02\x03"


def test_read_bytes_of_missing_file_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound) as info:
        read_bytes(str(tmp_path / "gone.png"))
    assert (info.value.stage, info.value.code) == ("fetch", "not_found")
    assert str(tmp_path / "gone.png") in str(info.value)


@pytest.mark.parametrize(
    ("uri", "error", "code"),
    [
        ("", BadRow, "missing_uri"),
        ("gs://", PermanentError, "malformed_uri"),
        ("gs://bucket-only", PermanentError, "malformed_uri"),
        ("s3://bucket/", PermanentError, "malformed_uri"),
        ("ftp://host/x.jpg", PermanentError, "unsupported_scheme"),
    ],
)
def test_bad_uris_fail_permanently_without_a_request(
    uri: str, error: type[Exception], code: str
) -> None:
    with pytest.raises(error) as info:
        check_uri(uri, "fetch")
    assert info.value.code == code  # type: ignore[attr-defined]
    assert not isinstance(info.value, TransientError)


def test_read_bytes_refuses_objects_over_max_bytes(tmp_path: Path) -> None:
    (tmp_path / "a.bin").write_bytes(b"1234")
    assert read_bytes(str(tmp_path / "a.bin"), max_bytes=4) == b"1234"
    with pytest.raises(PermanentError) as info:
        read_bytes(str(tmp_path / "a.bin"), max_bytes=3)
    assert (info.value.stage, info.value.code) == ("fetch", "too_large")


def _in_a_thread(fn: object) -> BaseException | None:
    """What calling fn() raised (None if nothing), failing the test if it blocks 20 s."""
    outcome: list[BaseException | None] = []

    def call() -> None:
        try:
            fn()  # type: ignore[operator]
            outcome.append(None)
        except BaseException as err:
            outcome.append(err)

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(20)
    assert outcome, "the read blocked"
    return outcome[0]


@pytest.mark.parametrize("kind", ["fifo", "folder", "device"])
def test_read_bytes_refuses_what_is_not_a_regular_file(tmp_path: Path, kind: str) -> None:
    # Issue 17, item 3: a FIFO as a source hung the run (the open blocks, the read never ends).
    path = tmp_path / "x.png"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()
    else:
        path.symlink_to("/dev/zero")  # a link to an endless device: followed, then refused
    error = _in_a_thread(lambda: read_bytes(str(path)))
    assert isinstance(error, PermanentError)
    assert (error.stage, error.code) == ("fetch", "not_a_file")


def test_read_bytes_stops_at_the_deadline(tmp_path: Path) -> None:
    (tmp_path / "a.bin").write_bytes(b"1234")
    assert read_bytes(str(tmp_path / "a.bin"), deadline=time.monotonic() + 60) == b"1234"
    with pytest.raises(PermanentError) as info:
        read_bytes(str(tmp_path / "a.bin"), deadline=time.monotonic() - 1)
    assert (info.value.stage, info.value.code) == ("fetch", "timeout")


def test_write_atomic_leaves_only_the_final_file(tmp_path: Path) -> None:
    target = tmp_path / "new" / "deeper" / "x.png"  # folders that do not exist yet
    write_atomic(str(target), b"first")
    write_atomic(str(target), b"second")  # replaces
    assert target.read_bytes() == b"second"
    assert _files(tmp_path) == ["new/deeper/x.png"]


def test_write_atomic_removes_its_temporary_on_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(sources: list[str], destinations: list[str]) -> None:
        raise ValueError("rename refused")

    monkeypatch.setattr(FileSystems, "rename", refuse)
    with pytest.raises(PermanentError, match="rename refused") as info:
        write_atomic(str(tmp_path / "x.png"), b"data")
    assert info.value.stage == "write"
    assert _files(tmp_path) == []


def _client_error(status: int) -> ClientError:
    response = {"Error": {"Code": str(status)}, "ResponseMetadata": {"HTTPStatusCode": status}}
    return ClientError(response, "GetObject")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("err", "expected", "code"),
    [
        (gexc.NotFound("no such object"), NotFound, "not_found"),
        (gexc.Forbidden("denied"), Forbidden, "forbidden"),
        (gexc.TooManyRequests("slow down"), TransientError, "transient"),
        (gexc.ServiceUnavailable("503"), TransientError, "transient"),
        (_client_error(404), NotFound, "not_found"),
        (_client_error(403), Forbidden, "forbidden"),
        (_client_error(500), TransientError, "transient"),
        (ConnectionResetError("reset by peer"), TransientError, "transient"),
        (TimeoutError("read timed out"), TransientError, "transient"),
        (FileNotFoundError(2, "No such file"), NotFound, "not_found"),
        (ValueError("something else"), PermanentError, "unexpected"),
    ],
)
def test_classify_storage_errors(err: Exception, expected: type, code: str) -> None:
    result = classify(err, "fetch", "gs://b/x.jpg")
    assert type(result) is expected
    assert (result.stage, result.code) == ("fetch", code)
    assert "gs://b/x.jpg" in str(result)


def test_classify_unwraps_beam_io_errors() -> None:
    from apache_beam.io.filesystem import BeamIOError

    wrapped = BeamIOError("Delete operation failed", {"gs://b/x": gexc.Forbidden("no")})
    assert isinstance(classify(wrapped, "write", "gs://b/x"), Forbidden)


class _Flaky:
    """Fails `failures` times with `error`, then returns "done"."""

    def __init__(self, failures: int, error: Exception) -> None:
        self.left, self.error, self.calls = failures, error, 0

    def __call__(self) -> str:
        self.calls += 1
        if self.left:
            self.left -= 1
            raise self.error
        return "done"


def test_transient_errors_are_retried_with_growing_jittered_backoff() -> None:
    sleeps: list[float] = []
    policy = RetryPolicy(attempts=5, base_s=0.1, cap_s=0.3, sleep=sleeps.append)
    fn = _Flaky(3, gexc.ServiceUnavailable("503"))
    assert policy.call(fn, "fetch", "gs://b/x") == "done"
    assert fn.calls == 4
    # Full jitter: attempt n waits U(0, min(cap, base * 2**n)).
    assert [0 <= s <= cap for s, cap in zip(sleeps, (0.1, 0.2, 0.3), strict=True)] == [True] * 3


def test_retries_stop_after_the_last_attempt() -> None:
    sleeps: list[float] = []
    fn = _Flaky(10, ConnectionResetError("reset"))
    with pytest.raises(TransientError, match="gs://b/x"):
        RetryPolicy(attempts=3, sleep=sleeps.append).call(fn, "fetch", "gs://b/x")
    assert (fn.calls, len(sleeps)) == (3, 2)


def test_permanent_errors_are_not_retried() -> None:
    sleeps: list[float] = []
    fn = _Flaky(1, gexc.NotFound("gone"))
    with pytest.raises(NotFound):
        RetryPolicy(sleep=sleeps.append).call(fn, "fetch", "gs://b/x")
    assert (fn.calls, sleeps) == (1, [])


def test_s3_clients_are_made_once_per_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    from apache_beam.options.pipeline_options import PipelineOptions

    from matteflow.transforms import storage

    flags = ["--s3_endpoint_url=http://127.0.0.1:9", "--s3_region_name=us-east-1"]
    monkeypatch.setattr(FileSystems, "_pipeline_options", PipelineOptions(flags))
    first = storage._store("s3://bucket/a.png")
    assert storage._store("s3://bucket/other/b.png") is first
    assert storage._store("/local/a.png") is not first
    others: list[object] = []
    thread = threading.Thread(target=lambda: others.append(storage._store("s3://bucket/a.png")))
    thread.start()
    thread.join()
    assert others[0] is not first  # Beam's S3 client keeps per-download state
