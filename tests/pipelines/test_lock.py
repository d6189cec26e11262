"""One batch run per output prefix: the lease, its holder record, stale leases, --force_unlock,
and two real runs on one --output (issue 17, item 6)."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from matteflow.pipelines.lock import (
    LOCK_NAME,
    Holder,
    OutputLocked,
    acquire,
    output_lock,
    pid_namespace,
    release,
)
from matteflow.pipelines.remove_background import main
from matteflow.transforms.metrics import read_metrics
from tests.images import encode, pattern

_HOLD = """
import sys, time
from matteflow.pipelines.lock import acquire
acquire(sys.argv[1], argv=["--output", sys.argv[1]])
print("held", flush=True)
time.sleep(120)
"""


def _lease(out: Path) -> dict[str, object]:
    return json.loads((out / LOCK_NAME).read_text())


def _write_lease(out: Path, **fields: object) -> None:
    record = {
        "run_id": "r1",
        "user": "someone",
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started_at": "2026-12-01T09:00:00+00:00",
        "command": [],
        "pid_namespace": pid_namespace(),
        **fields,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / LOCK_NAME).write_text(json.dumps(record))


@pytest.fixture
def holder_process(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Another live process on this host holding the lease of tmp_path/out."""
    out = tmp_path / "out"
    with subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(out)], stdout=subprocess.PIPE, text=True
    ) as proc:
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
            yield out, proc.pid
        finally:
            proc.kill()


def test_a_lease_names_its_holder_and_is_released(tmp_path: Path) -> None:
    out = tmp_path / "out"
    argv = ["--output", str(out), "--s3_secret_access_key=hunter2"]
    with output_lock(str(out), argv=argv) as me:
        lease = _lease(out)
        assert (lease["host"], lease["pid"], lease["run_id"]) == (
            socket.gethostname(),
            os.getpid(),
            me.run_id,
        )
        assert lease["user"] and lease["started_at"]
        assert "hunter2" not in json.dumps(lease)
    assert not (out / LOCK_NAME).exists()


def test_the_lease_is_released_when_the_block_fails(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(ZeroDivisionError), output_lock(str(out)):
        _ = 1 / 0
    assert not (out / LOCK_NAME).exists()


def test_a_live_holder_keeps_the_lease(holder_process: tuple[Path, int]) -> None:
    out, pid = holder_process
    with pytest.raises(OutputLocked) as info:
        acquire(str(out))
    assert f"pid {pid}" in str(info.value) and socket.gethostname() in str(info.value)
    assert "--force_unlock" in str(info.value)
    assert _lease(out)["pid"] == pid  # untouched


def test_force_unlock_takes_over(holder_process: tuple[Path, int]) -> None:
    out, _ = holder_process
    me = acquire(str(out), force=True)
    assert _lease(out)["run_id"] == me.run_id
    release(str(out), me)
    assert not (out / LOCK_NAME).exists()


def test_a_lease_of_a_dead_process_on_this_host_is_taken_over(tmp_path: Path) -> None:
    out = tmp_path / "out"
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait(30)
    _write_lease(out, pid=gone.pid)
    me = acquire(str(out))
    assert _lease(out)["run_id"] == me.run_id


def test_a_lease_from_another_host_is_never_guessed_stale(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _write_lease(out, host="worker-7.example", pid=1)
    with pytest.raises(OutputLocked, match=r"someone@worker-7\.example pid 1"):
        acquire(str(out))


@pytest.mark.parametrize("namespace", ["pid:[1]", ""])
def test_a_dead_pid_of_another_pid_namespace_is_not_stale(tmp_path: Path, namespace: str) -> None:
    """Another container with the same host name: its pids are not ours to check."""
    out = tmp_path / "out"
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait(30)
    _write_lease(out, pid=gone.pid, pid_namespace=namespace)
    with pytest.raises(OutputLocked):
        acquire(str(out))


def test_release_leaves_a_lease_that_is_no_longer_ours(tmp_path: Path) -> None:
    out = tmp_path / "out"
    me = acquire(str(out))
    _write_lease(out, run_id="taken-over")
    release(str(out), me)
    assert _lease(out)["run_id"] == "taken-over"


def test_holder_parse_refuses_what_is_not_a_lease() -> None:
    for data in (b"null", b"[]", b"{", b'{"run_id": 1}'):
        assert Holder.parse(data) is None


def _manifest(folder: Path, count: int) -> Path:
    folder.mkdir()
    manifest = folder / "manifest.csv"
    with manifest.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["uri"])
        for n in range(count):
            pixels = pattern(96, 64)
            pixels.putpixel((n % 96, 0), (n, 0, 0))
            (folder / f"{n:03d}.png").write_bytes(encode(pixels, "PNG"))
            writer.writerow([f"{n:03d}.png"])
    return manifest


@pytest.mark.slow
def test_a_second_run_on_one_output_exits_2_and_the_first_completes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two real runs on one --output: the second stops before touching anything."""
    count = 40
    manifest = _manifest(tmp_path / "images", count)
    out = tmp_path / "out"
    argv = ["--manifest", str(manifest), "--output", str(out), "--model", "tiny-isnet"]
    with subprocess.Popen(
        [sys.executable, "-m", "matteflow.pipelines.remove_background", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as first:
        try:
            deadline = time.monotonic() + 120
            while not (out / LOCK_NAME).exists():
                assert first.poll() is None and time.monotonic() < deadline, "never locked"
                time.sleep(0.05)
            assert main(argv) == 2
            err = capsys.readouterr().err
            assert f"pid {first.pid}" in err and "is in use by another run" in err
            log, _ = first.communicate(timeout=300)
        finally:
            first.kill()
    assert first.returncode == 0, log[-3000:]
    summary = json.loads((out / "run.json").read_text())
    assert summary["reconciled"] and summary["counts"]["ok"] == count
    assert read_metrics(str(out)).num_rows == count
    assert not (out / LOCK_NAME).exists()
    assert main(argv) == 0  # free again: the rerun skips every row
    assert json.loads((out / "run.json").read_text())["counts"]["skipped"] == count


def test_a_failed_run_releases_its_lease(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(encode(Image.new("RGB", (8, 8)), "PNG"))
    (tmp_path / "m.csv").write_text("uri\na.png\nmissing.png\n")
    out = tmp_path / "out"
    argv = ["--manifest", str(tmp_path / "m.csv"), "--output", str(out), "--model", "tiny-isnet"]
    assert main([*argv, "--max_failure_rate", "0.1"]) == 3
    assert (out / "run.json").exists() and not (out / LOCK_NAME).exists()


def test_force_unlock_flag_on_the_command_line(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(encode(Image.new("RGB", (8, 8)), "PNG"))
    (tmp_path / "m.csv").write_text("uri\na.png\n")
    out = tmp_path / "out"
    _write_lease(out, host="gone.example")
    argv = ["--manifest", str(tmp_path / "m.csv"), "--output", str(out), "--model", "tiny-isnet"]
    assert main(argv) == 2
    assert not (out / "run.json").exists()
    assert main([*argv, "--force-unlock"]) == 0
    assert not (out / LOCK_NAME).exists()
