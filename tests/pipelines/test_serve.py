"""`matteflow serve` started as a subprocess on loopback and called with a real HTTP client:
cutouts, errors with metrics-row codes, the size limit, a batch job with its signed callback
(received by a local receiver, retried after a 503), and the token off localhost."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

import matteflow
from tests.images import encode, pattern

SECRET = "webhook-test-secret"
TOKEN = "api-test-token"
PROFILE = "[refine]\ndecontaminate = false\n"


def _get(url: str, **kwargs: object) -> httpx.Response:
    return httpx.get(url, timeout=120, **kwargs)  # type: ignore[arg-type]


def _post(url: str, **kwargs: object) -> httpx.Response:
    return httpx.post(url, timeout=120, **kwargs)  # type: ignore[arg-type]


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _start(host: str, tmp: Path, *extra: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    profile = tmp / "serve.toml"
    profile.write_text(PROFILE)
    command = [sys.executable, "-m", "matteflow", "serve", "--host", host, "--model", "tiny-isnet"]
    return subprocess.Popen(
        [*command, "--profile", str(profile), *extra],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _wait_ready(process: subprocess.Popen[bytes], base: str, headers: dict[str, str]) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(process.communicate()[1].decode())
        try:
            if _get(f"{base}/readyz", headers=headers).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise AssertionError("server not ready in 180 s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    process.communicate(timeout=30)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server on 127.0.0.1 with callbacks to loopback allowed and a 1 MiB request limit."""
    tmp = tmp_path_factory.mktemp("serve")
    port = _free_port("127.0.0.1")
    extra = ["--port", str(port), "--allow-private-callbacks", "--max-request-mb", "1"]
    env = {"MATTEFLOW_WEBHOOK_SECRET": SECRET, "MATTEFLOW_API_TOKEN": ""}
    process = _start("127.0.0.1", tmp, *extra, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(process, base, {})
        yield base
    finally:
        _stop(process)


def test_health_and_the_openapi_page(server: str) -> None:
    assert _get(f"{server}/healthz").json() == {"status": "ok"}
    assert _get(f"{server}/readyz").json() == {"status": "ready", "model": "tiny-isnet"}
    paths = _get(f"{server}/openapi.json").json()["paths"]
    assert {"/v1/cutouts", "/v1/jobs", "/v1/jobs/{job_id}"} <= set(paths)
    assert "image/*" in paths["/v1/cutouts"]["post"]["requestBody"]["content"]
    assert _get(f"{server}/docs").status_code == 200


def test_a_cutout_is_the_apis_cutout(server: str, tmp_path: Path) -> None:
    data = encode(pattern(29, 17), "PNG")
    response = _post(f"{server}/v1/cutouts", content=data)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    (tmp_path / "p.toml").write_text(PROFILE)
    expected = matteflow.remove(data, model="tiny-isnet", profile=str(tmp_path / "p.toml"))
    with Image.open(io.BytesIO(response.content)) as got:
        assert got.mode == "RGBA"
        assert np.array_equal(np.asarray(got), np.asarray(expected))


@pytest.mark.parametrize(
    ("query", "media", "mode", "size"),
    [
        ("format=webp", "image/webp", "RGBA", (29, 17)),
        ("bg_color=ff0000", "image/png", "RGB", (29, 17)),
        ("bg_color=00ff00&format=jpeg", "image/jpeg", "RGB", (29, 17)),
        ("size=50x40", "image/png", "RGBA", (50, 40)),
    ],
)
def test_cutout_options(server: str, query: str, media: str, mode: str, size: tuple) -> None:  # type: ignore[type-arg]
    response = _post(f"{server}/v1/cutouts?{query}", content=encode(pattern(29, 17), "PNG"))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == media
    with Image.open(io.BytesIO(response.content)) as img:
        assert (img.mode, img.size) == (mode, size)


@pytest.mark.parametrize(
    ("body", "query", "status", "error"),
    [
        (b"<html>not an image</html>", "", 422, ("decode", "unsupported_format")),
        (encode(pattern(), "PNG")[:60], "", 422, ("decode", "truncated")),
        (b"x" * ((1 << 20) + 1), "", 413, ("request", "too_large")),
        (b"x", "model=u2netp", 400, ("request", "model_not_loaded")),
        (b"x", "format=gif", 422, None),
    ],
)
def test_cutout_errors_as_json(server: str, body: bytes, query: str, status: int, error) -> None:  # type: ignore[no-untyped-def]
    response = _post(f"{server}/v1/cutouts?{query}", content=body)
    assert response.status_code == status
    if error is not None:
        found = response.json()["error"]
        assert (found["stage"], found["code"]) == error


class _Receiver(http.server.BaseHTTPRequestHandler):
    """Answers the first callback with 503 (so it is retried), the next with 204."""

    received: list[tuple[dict[str, str], bytes]] = []  # noqa: RUF012 (one receiver per test)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append((dict(self.headers), body))
        self.send_response(503 if len(type(self).received) == 1 else 204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_a_job_runs_and_calls_back_signed(server: str, tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(encode(pattern(21, 13), "PNG"))
    (tmp_path / "m.csv").write_text("uri\na.png\ngone.png\n")
    receiver = http.server.HTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    callback = f"http://127.0.0.1:{receiver.server_port}/hook"
    try:
        request = {
            "manifest": str(tmp_path / "m.csv"),
            "output": str(tmp_path / "out"),
            "callback_url": callback,
        }
        response = _post(f"{server}/v1/jobs", json=request)
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            job = _get(f"{server}/v1/jobs/{job_id}").json()
            if job["status"] in ("finished", "failed") and len(_Receiver.received) >= 2:
                break
            time.sleep(1)
        assert job["status"] == "finished", job
        assert job["counts"] == {"ok": 1, "skipped": 0, "failed": 1}
        assert job["run"]["failures_by_code"] == {"fetch/not_found": 1}
        assert (tmp_path / "out" / "cutouts" / "a.png").is_file()
        assert len(_Receiver.received) == 2  # a 503, then the retry
        headers, body = _Receiver.received[-1]
        expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert headers["X-Matteflow-Signature"] == expected
        assert json.loads(body)["id"] == job_id and json.loads(body)["status"] == "finished"
    finally:
        receiver.shutdown()
        receiver.server_close()


def test_jobs_refuse_bad_callbacks_and_unknown_ids(server: str) -> None:
    body = {"manifest": "m.csv", "output": "out", "callback_url": "file:///etc/passwd"}
    response = _post(f"{server}/v1/jobs", json=body)
    assert (response.status_code, response.json()["error"]["code"]) == (400, "bad_callback_url")
    assert _get(f"{server}/v1/jobs/nope").status_code == 404


def test_off_localhost_a_token_is_required(tmp_path: Path) -> None:
    host = "127.0.0.2"  # loopback, but not localhost: the server treats it as exposed
    port = _free_port(host)
    refused = _start(host, tmp_path, "--port", str(port), env={"MATTEFLOW_API_TOKEN": ""})
    _, stderr = refused.communicate(timeout=120)
    assert refused.returncode == 2 and b"MATTEFLOW_API_TOKEN" in stderr
    process = _start(host, tmp_path, "--port", str(port), env={"MATTEFLOW_API_TOKEN": TOKEN})
    base, auth = f"http://{host}:{port}", {"Authorization": f"Bearer {TOKEN}"}
    try:
        _wait_ready(process, base, {})
        data = encode(pattern(15, 9), "PNG")
        denied = _post(f"{base}/v1/cutouts", content=data)
        assert (denied.status_code, denied.json()["error"]["code"]) == (401, "unauthorized")
        wrong = {"Authorization": "Bearer nope"}
        assert _get(f"{base}/v1/jobs/x", headers=wrong).status_code == 401
        assert _post(f"{base}/v1/cutouts", content=data, headers=auth).status_code == 200
        assert _get(f"{base}/healthz").status_code == 200
    finally:
        _stop(process)
