"""The job against probing by a careless operator or an attacker (issue 17): special files,
review lists fed back, credentials in URIs, formula cells, a glob over its own outputs."""

from __future__ import annotations

import csv
import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from matteflow.pipelines.remove_background import main
from matteflow.transforms.metrics import read_metrics
from tests.images import encode, pattern

PNG = encode(pattern(17, 11), "PNG")
TINY = ["--model", "tiny-isnet"]
ALL_FOR_REVIEW = ["--set", "refine.review_threshold=0"]  # every ok row lands in review/


def _manifest(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _outcomes(out: Path) -> dict[str, str]:
    return {r["id"]: r["error_code"] or r["status"] for r in read_metrics(str(out)).to_pylist()}


def _review(out: Path) -> list[dict[str, str]]:
    with (out / "review" / "manifest.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def test_special_files_as_source_or_background_fail_instead_of_hanging(tmp_path: Path) -> None:
    # Issue 17, item 3: a FIFO as uri or per-row background hung the run (no rows, no run.json)
    (tmp_path / "a.png").write_bytes(PNG)
    os.mkfifo(tmp_path / "pipe.png")
    os.mkfifo(tmp_path / "backdrop.png")
    manifest = _manifest(
        tmp_path / "m.csv",
        ["id", "uri", "background"],
        [
            ["fifo", "pipe.png", ""],
            ["device", "/dev/zero", ""],
            ["backdrop", "a.png", str(tmp_path / "backdrop.png")],
            ["plain", "a.png", ""],
        ],
    )
    out = tmp_path / "out"
    argv = ["--manifest", str(manifest), "--output", str(out), *TINY]
    assert main([*argv, "--set", "outputs.composite=true"]) == 0
    assert _outcomes(out) == {
        "fifo": "not_a_file",
        "device": "not_a_file",
        "backdrop": "not_a_file",
        "plain": "ok",
    }
    assert json.loads((out / "run.json").read_text())["reconciled"] is True


def test_the_review_list_is_a_manifest_from_any_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Issue 17, item 2: a run given relative paths wrote them relative to the working
    # directory, so fed back (resolved against review/) every row was not_found. Ids that
    # look like formulas are written neutralised and read back as they were (item 14).
    (tmp_path / "imgs").mkdir()
    for name in ("a", "b"):
        (tmp_path / "imgs" / f"{name}.png").write_bytes(PNG)
    _manifest(tmp_path / "imgs" / "m.csv", ["uri", "id"], [["a.png", "=1+1"], ["b.png", "b"]])
    monkeypatch.chdir(tmp_path)
    assert main(["--manifest", "imgs/m.csv", "--output", "out", *TINY, *ALL_FOR_REVIEW]) == 0
    listed = _review(tmp_path / "out")
    assert sorted(r["id"] for r in listed) == ["'=1+1", "b"]  # a spreadsheet shows, not runs
    assert all(Path(r["uri"]).is_absolute() and Path(r["mask_uri"]).is_file() for r in listed)
    monkeypatch.chdir(tmp_path / "imgs")  # another working directory
    argv = ["--manifest", "../out/review/manifest.csv", "--output", "../again", *TINY]
    assert main(argv) == 0
    assert _outcomes(tmp_path / "again") == {"=1+1": "ok", "b": "ok"}


class _Images(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(PNG)))
        self.end_headers()
        self.wfile.write(PNG)


@pytest.fixture
def web() -> Iterator[str]:
    """An http server on 127.0.0.1 answering every GET with a PNG; yields its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Images)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_no_credentials_or_tokens_reach_names_or_files(web: str, tmp_path: Path) -> None:
    # Issue 17, item 12: with no `id` column, URIs' tokens landed in the metrics id, and with
    # one host for all rows in output, state and review names and in cutout_uri.
    manifest = _manifest(
        tmp_path / "m.csv",
        ["uri"],
        [
            [f"{web}/shop/a.png?X-Amz-Credential=AKIA.secret&X-Amz-Signature=sig.secret"],
            [f"{web}/shop/b.png#token.secret"],
            [f"{web.replace('//', '//user:secret@')}/shop/c.png"],  # user info: refused
        ],
    )
    out = tmp_path / "out"
    allow = ["--allow_source", f"{web}/*", "--allow_private_sources"]
    argv = ["--manifest", str(manifest), "--output", str(out), *TINY, *allow, *ALL_FOR_REVIEW]
    assert main(argv) == 0
    assert _outcomes(out) == {"a": "ok", "b": "ok", "c": "source_not_allowed"}
    rows = read_metrics(str(out)).to_pylist()
    assert "secret" not in repr(rows)
    for path in out.rglob("*"):
        assert "secret" not in str(path.relative_to(out))
        if path.is_file() and path.suffix in (".csv", ".json"):
            assert "secret" not in path.read_text(), path


def test_a_glob_over_the_output_folder_does_not_read_the_outputs_back(tmp_path: Path) -> None:
    # Issue 17, item 14: 2 -> 6 -> 14 rows over three runs.
    for name in ("a", "b"):
        (tmp_path / "in" / name).mkdir(parents=True)
        (tmp_path / "in" / name / "x.png").write_bytes(PNG)
    out = tmp_path / "in" / "out"
    argv = ["--manifest", f"{tmp_path}/in/**/*.png", "--output", str(out), *TINY]
    for _ in range(2):
        assert main(argv) == 0
        assert len(_outcomes(out)) == 2
    assert json.loads((out / "run.json").read_text())["reconciled"] is True


def test_rows_past_their_deadline_fail_as_timeouts(tmp_path: Path) -> None:
    # Issue 17, item 14: no per-row deadline existed (a byte every 5 s kept a row 75 s).
    (tmp_path / "a.png").write_bytes(PNG)
    manifest = _manifest(tmp_path / "m.csv", ["uri"], [["a.png"]])
    out = tmp_path / "out"
    argv = ["--manifest", str(manifest), "--output", str(out), *TINY]
    assert main([*argv, "--set", "decode.row_timeout_s=1e-9"]) == 0
    assert _outcomes(out) == {"a": "timeout"}
    assert main([*argv, "--set", "decode.row_timeout_s=0"]) == 2  # refused before the run
