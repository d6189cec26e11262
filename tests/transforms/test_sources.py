"""Which sources a run may read: URI patterns, the addresses http(s) hosts resolve to, reads
over http from a server on 127.0.0.1, and the whole job with --allow_source."""

from __future__ import annotations

import csv
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from matteflow.pipelines.config import ConfigError, load_config
from matteflow.pipelines.remove_background import main
from matteflow.transforms import sources
from matteflow.transforms.failures import BadRow, NotFound, PermanentError
from matteflow.transforms.metrics import read_metrics
from matteflow.transforms.sources import SourcePolicy, check_source, public_address
from matteflow.transforms.storage import RetryPolicy, read_bytes
from tests.images import encode, pattern

PNG = encode(pattern(), "PNG")
NO_WAIT = RetryPolicy(attempts=3, sleep=lambda s: None)


def test_all_names_exist() -> None:
    assert all(hasattr(sources, name) for name in sources.__all__)


@pytest.mark.parametrize("uri", ["a.png", "/data/x/a.png", "gs://b/a.png", "s3://b/k/a.png"])
def test_default_allows_local_and_buckets(uri: str) -> None:
    check_source(uri, SourcePolicy())


@pytest.mark.parametrize(
    "uri",
    [
        "http://cdn.example.com/a.png",
        "https://cdn.example.com/a.png?sig=1",
        "http://169.254.169.254/latest/meta-data/",
        "ftp://h/a.png",
        "hdfs://h/a.png",
    ],
)
def test_default_refuses_http_and_other_schemes(uri: str) -> None:
    with pytest.raises(BadRow) as info:
        check_source(uri, SourcePolicy())
    assert (info.value.stage, info.value.code) == ("manifest", "source_not_allowed")
    assert "sig=1" not in str(info.value)


RESTRICTED = SourcePolicy(("gs://photos/*", "https://cdn.example.com/*", "/data/photos/*"))


@pytest.mark.parametrize(
    ("uri", "allowed"),
    [
        ("gs://photos/a/b.png", True),
        ("gs://photos-evil/b.png", False),
        ("gs://photos/a/../../other/b.png", False),
        ("gs://photos/./b.png", False),
        ("s3://photos/b.png", False),
        ("https://cdn.example.com/p/a.jpg?X-Amz-Signature=1", True),
        ("https://cdn.example.com@evil.example/a.jpg", False),
        ("https://cdn.example.com.evil.example/a.jpg", False),
        ("http://cdn.example.com/a.jpg", False),
        ("https://cdn.example.com/a\\..\\b.jpg", False),
        ("/data/photos/a.png", True),
        ("/data/photos/../../etc/passwd", False),
        ("/etc/passwd", False),
        ("relative.png", False),  # resolves below the working folder, not /data/photos
    ],
)
def test_patterns_restrict_sources(uri: str, allowed: bool) -> None:
    if allowed:
        check_source(uri, RESTRICTED)
    else:
        with pytest.raises(BadRow, match="source"):
            check_source(uri, RESTRICTED)


def test_local_paths_are_matched_after_following_links(tmp_path: Path) -> None:
    (tmp_path / "allowed").mkdir()
    (tmp_path / "allowed" / "escape").symlink_to("/etc")
    policy = SourcePolicy((f"{tmp_path}/allowed/*",))
    check_source(str(tmp_path / "allowed" / "a.png"), policy)
    with pytest.raises(BadRow):
        check_source(str(tmp_path / "allowed" / "escape" / "passwd"), policy)


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "localhost",
        "0.0.0.0",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "100.64.0.1",
        "169.254.169.254",
        "::1",
        "fe80::1",
        "fd00::1",
        "::ffff:127.0.0.1",
        "224.0.0.1",
        # IPv6 forms that embed a loopback or private IPv4 (issue 17, item 14)
        "::127.0.0.1",  # IPv4-compatible
        "::ffff:0:127.0.0.1",  # IPv4-translated (SIIT)
        "64:ff9b::7f00:1",  # NAT64 well-known prefix
        "64:ff9b:1::a00:1",  # NAT64 local-use prefix
        "2002:7f00:1::",  # 6to4 of 127.0.0.1
        "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
        "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo, client 127.0.0.1
    ],
)
def test_non_public_addresses_are_refused_unless_allowed(host: str) -> None:
    with pytest.raises(PermanentError) as info:
        public_address(f"http://{host}/x", host, 80, allow_private=False)
    assert (info.value.stage, info.value.code) == ("fetch", "private_address")
    assert public_address(f"http://{host}/x", host, 80, allow_private=True)


@pytest.mark.parametrize("host", ["8.8.8.8", "2001:4860:4860::8888"])
def test_public_addresses_pass(host: str) -> None:
    assert public_address(f"http://{host}/x", host, 80, allow_private=False) == host


def test_unresolvable_host_is_not_found() -> None:
    with pytest.raises(NotFound):
        public_address("http://no-such-host.invalid/x", "no-such-host.invalid", 80, False)


class _Handler(BaseHTTPRequestHandler):
    """/ok.png: an image; /flaky.png: 503 on the first request, then the image;
    /moved.png: a redirect to the cloud metadata address; /drip.png: the image, one byte
    every 0.2 s; anything else: 404."""

    flaky_seen = 0

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        if path == "/flaky.png" and _Handler.flaky_seen == 0:
            _Handler.flaky_seen += 1
            self._reply(503, b"busy")
        elif path in ("/ok.png", "/flaky.png"):
            self._reply(200, PNG)
        elif path == "/drip.png":
            self.send_response(200)
            self.send_header("Content-Length", str(len(PNG)))
            self.end_headers()
            for i in range(len(PNG)):
                try:
                    self.wfile.write(PNG[i : i + 1])
                    self.wfile.flush()
                except OSError:  # the client gave up
                    return
                time.sleep(0.2)
        elif path == "/moved.png":
            self.send_response(302)
            self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self._reply(404, b"no")

    def _reply(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def web() -> Iterator[str]:
    """An http server on 127.0.0.1 (see _Handler); yields its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    _Handler.flaky_seen = 0
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_http_reads_from_a_loopback_server_need_allow_private(web: str) -> None:
    with pytest.raises(PermanentError) as info:
        read_bytes(f"{web}/ok.png", NO_WAIT)
    assert info.value.code == "private_address"
    assert read_bytes(f"{web}/ok.png?token=1", NO_WAIT, allow_private=True) == PNG


@pytest.mark.parametrize(("path", "code"), [("/gone.png", "not_found"), ("/moved.png", "redirect")])
def test_http_failures_are_classified(web: str, path: str, code: str) -> None:
    with pytest.raises(PermanentError) as info:
        read_bytes(f"{web}{path}?sig=secret", NO_WAIT, allow_private=True)
    assert (info.value.stage, info.value.code) == ("fetch", code)
    assert "secret" not in str(info.value)


def test_http_bodies_over_max_bytes_are_refused(web: str) -> None:
    with pytest.raises(PermanentError) as info:
        read_bytes(f"{web}/ok.png", NO_WAIT, allow_private=True, max_bytes=len(PNG) - 1)
    assert info.value.code == "too_large"


def test_a_dripping_server_is_cut_off_at_the_deadline(web: str) -> None:
    # Issue 17, item 14: one byte every few seconds kept a row for minutes (no socket timeout
    # fires while bytes keep coming).
    start = time.monotonic()
    with pytest.raises(PermanentError) as info:
        read_bytes(f"{web}/drip.png", NO_WAIT, allow_private=True, deadline=start + 1.0)
    assert (info.value.stage, info.value.code) == ("fetch", "timeout")
    assert time.monotonic() - start < 5


def test_http_503_is_retried(web: str) -> None:
    assert read_bytes(f"{web}/flaky.png", NO_WAIT, allow_private=True) == PNG
    assert _Handler.flaky_seen == 1


def test_profile_and_flags_set_the_policy(tmp_path: Path) -> None:
    profile = tmp_path / "p.toml"
    profile.write_text('[sources]\nallow = ["gs://photos/*"]\n')
    assert load_config(str(profile)).sources == SourcePolicy(("gs://photos/*",))
    cfg = load_config(str(profile), allow_sources=["local"], allow_private_sources=True)
    assert cfg.sources == SourcePolicy(("local",), allow_private=True)
    profile.write_text('[sources]\nallow = "gs://photos/*"\n')
    with pytest.raises(ConfigError, match=r"sources\.allow: expected a list of strings"):
        load_config(str(profile))


def test_the_job_reads_only_allowed_sources(web: str, tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(PNG)
    manifest = tmp_path / "m.csv"
    with manifest.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "uri", "ground_truth_uri", "background"])
        writer.writerows(
            [
                ("local", "a.png", "", ""),
                ("web", f"{web}/ok.png?token=secret", "", ""),
                ("elsewhere", f"{web}/other/a.png", "", ""),
                ("bucket", "gs://b/a.png", "", ""),
                ("truth", "a.png", "gs://b/gt.png", ""),
                ("backdrop", "a.png", "", "http://169.254.169.254/x.png"),
            ]
        )
    allow = ["--allow_source", "local", "--allow_source", f"{web}/ok.png*"]
    argv = ["--manifest", str(manifest), "--model", "tiny-isnet", *allow]

    def outcomes(out: Path, *extra: str) -> dict[str, str]:
        assert main([*argv, "--output", str(out), *extra]) == 0
        return {r["id"]: r["error_code"] or r["status"] for r in read_metrics(str(out)).to_pylist()}

    refused = {
        "local": "ok",
        "elsewhere": "source_not_allowed",
        "bucket": "source_not_allowed",
        "truth": "source_not_allowed",
        "backdrop": "source_not_allowed",
    }
    assert outcomes(tmp_path / "out1") == {**refused, "web": "private_address"}
    assert outcomes(tmp_path / "out2", "--allow_private_sources") == {**refused, "web": "ok"}
    rows = read_metrics(str(tmp_path / "out1")).to_pylist()
    assert "secret" not in repr(rows)
