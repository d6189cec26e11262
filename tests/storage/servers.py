"""Local storage servers for the bucket tests: emulator processes on 127.0.0.1 and a
fault-injecting HTTP proxy to put in front of them (../shared/ENVIRONMENT.md, appendix C).

Nothing here listens on, or connects to, anything but 127.0.0.1.
"""

from __future__ import annotations

import collections
import http.client
import random
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

__all__ = ["HOST", "FaultProxy", "Faults", "Server", "free_port", "start_server"]

HOST = "127.0.0.1"
# Headers that describe one hop's connection or framing; the proxy sets its own.
_HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length"}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass
class Server:
    """A server process listening on `url`; its stdout and stderr go to `log`."""

    name: str
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the process (kill it if it lingers past timeout) and reap it."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)


def start_server(
    name: str, args: list[str], port: int, log_dir: Path, timeout: float = 30.0
) -> Server:
    """Run the venv console script `name` with args and wait until it accepts connections on
    127.0.0.1:port. Raises RuntimeError with the server's output if it exits or is not up
    within timeout seconds (the process is stopped first)."""
    log = log_dir / f"{name}-{port}.log"
    with log.open("wb") as out:  # a file, not a pipe: a chatty server must never block on it
        process = subprocess.Popen(
            [str(Path(sys.executable).with_name(name)), *args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Server(name, f"http://{HOST}:{port}", process, log)
    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        if _accepts(port):
            return server
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(
        f"{name} did not come up on {HOST}:{port} within {timeout:.0f}s"
        f" (exit code {process.returncode}); its output:\n{server.log_tail()}"
    )


@dataclass(frozen=True)
class Faults:
    """What a FaultProxy injects. The default injects nothing.

    every: 0 = no transient faults; N = every Nth distinct request fails, counted in the order
        first seen. A request is identified by method + full path with query string (uploads
        share one path), so a client's retry of a failed request is the same request.
    rate: besides `every`, each distinct request fails with this probability, drawn when it is
        first seen from a generator seeded with `seed` (the same draws on every run; which
        requests get them follows the order requests arrive in).
    attempts: how many times in a row a chosen request fails before it is forwarded; keep it
        below the client's retry budget.
    status: the status of an injected failure (503, 500, 429, ...); 0 drops the connection
        without a response.
    statuses: when given, each chosen request's status is drawn from these instead (e.g.
        (503, 0): half 503s, half dropped connections), from the same seeded generator.
    methods: only requests with these methods can be chosen; empty = any method.
    deny: (path substring, status) pairs: a request whose path contains the substring is always
        answered with that status (e.g. ("secret.png", 403)); checked before `every`.
    """

    every: int = 0
    rate: float = 0.0
    seed: int = 0
    attempts: int = 1
    status: int = 503
    statuses: tuple[int, ...] = ()
    methods: frozenset[str] = frozenset()
    deny: tuple[tuple[str, int], ...] = ()


@dataclass
class _State:
    faults: Faults
    lock: threading.Lock = field(default_factory=threading.Lock)
    seen: collections.Counter[str] = field(default_factory=collections.Counter)
    eligible: int = 0  # distinct requests that `every` may choose, so far
    chosen: dict[str, int] = field(default_factory=dict)  # request -> status to inject
    draws: random.Random | None = None  # for `rate` and `statuses`, seeded on first use
    injected: int = 0
    by_status: collections.Counter[int] = field(default_factory=collections.Counter)
    forwarded: int = 0
    # every request as (method, path with query, its body's first 1 KB): what clients asked for
    log: list[tuple[str, str, bytes]] = field(default_factory=list)


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        # A client that resets its keep-alive connection (after an injected failure, or at
        # exit) is normal here; anything else still prints its traceback.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


class FaultProxy:
    """An HTTP proxy on 127.0.0.1 that forwards every request to `upstream` (a storage
    emulator) and injects the failures `faults` describes.

    Point a client at `url` instead of the emulator: STORAGE_EMULATOR_HOST for
    google-cloud-storage and Beam gs://, `--s3_endpoint_url` (tests.storage.conftest.s3_flags)
    for Beam s3://, `endpoint_url=` for boto3.

    `faults` may be replaced while the proxy runs; `reset()` forgets which requests were seen
    and zeroes the counters. `injected` counts failures sent (denials included), split by status
    in `injected_by_status`; `forwarded` counts requests passed upstream. Which requests fail is
    decided by the order requests are first seen, so a single-threaded client sees the same
    faults on every run and a concurrent one sees about the same number of them.

    HEAD responses keep the upstream Content-Length (Beam s3:// reads the object size from it).
    JSON metadata that names the upstream is rewritten to name the proxy: the GCS emulator fixes
    an object's mediaLink from the uploader's Host header, and google-cloud-storage downloads
    from that link, so without this an object uploaded directly would be read around the proxy.
    Request bodies are read by Content-Length; chunked request bodies are not supported.
    """

    def __init__(self, upstream: str, faults: Faults | None = None) -> None:
        split = urlsplit(upstream)
        if split.hostname != HOST or split.port is None:
            raise ValueError(f"upstream must be http://{HOST}:PORT, got {upstream!r}")
        self.upstream = upstream
        self._state = _State(faults or Faults())
        self._server = _QuietServer((HOST, 0), _handler(split.port, self._state))
        self.url = f"http://{HOST}:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"fault-proxy-{self.url}",
            daemon=True,
        )
        self._thread.start()

    @property
    def faults(self) -> Faults:
        return self._state.faults

    @faults.setter
    def faults(self, faults: Faults) -> None:
        self._state.faults = faults

    @property
    def injected(self) -> int:
        return self._state.injected

    @property
    def injected_by_status(self) -> dict[int, int]:
        """Injected failures per status (0 = dropped connections)."""
        return dict(self._state.by_status)

    @property
    def forwarded(self) -> int:
        return self._state.forwarded

    @property
    def requests(self) -> list[tuple[str, str, bytes]]:
        """Every request received: (method, path with query, the first 1 KB of its body)."""
        with self._state.lock:
            return list(self._state.log)

    def reset(self) -> None:
        with self._state.lock:
            self._state.seen.clear()
            self._state.chosen.clear()
            self._state.draws = None
            self._state.eligible = self._state.injected = self._state.forwarded = 0
            self._state.by_status.clear()

    def stop(self) -> None:
        """Stop serving and close the listening socket (idempotent)."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(10)
        self._server.server_close()


def _fault_for(state: _State, method: str, path: str) -> int | None:
    """The status to inject for this request (0 = drop), or None to forward it."""
    faults = state.faults
    with state.lock:
        for part, status in faults.deny:
            if part in path:
                state.injected += 1
                state.by_status[status] += 1
                return status
        key = f"{method} {path}"
        state.seen[key] += 1
        if state.seen[key] == 1 and (not faults.methods or method in faults.methods):
            state.eligible += 1
            draws = state.draws = state.draws or random.Random(faults.seed)
            # Both draws are made for every request, so the sequence does not depend on `every`.
            chance, pick = draws.random(), draws.choice(faults.statuses or (faults.status,))
            if (faults.every and state.eligible % faults.every == 0) or chance < faults.rate:
                state.chosen[key] = pick
        if key in state.chosen and state.seen[key] <= faults.attempts:
            state.injected += 1
            state.by_status[state.chosen[key]] += 1
            return state.chosen[key]
        state.forwarded += 1
        return None


def _handler(upstream_port: int, state: _State) -> type[BaseHTTPRequestHandler]:
    upstream_netloc = f"{HOST}:{upstream_port}".encode()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the storage clients expect
        timeout = 60  # an idle keep-alive connection frees its thread after this

        def log_message(self, format: str, *args: object) -> None:
            pass  # quiet: pytest shows the emulators' logs when something fails

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            with state.lock:
                state.log.append((self.command, self.path, (body or b"")[:1024]))
            status = _fault_for(state, self.command, self.path)
            if status == 0:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
            elif status is not None:
                self._reply(status, b'{"error": {"code": %d, "message": "injected"}}' % status)
            else:
                self._forward(body)

        def _reply(self, status: int, data: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":  # a HEAD response has headers only
                self.wfile.write(data)

        def _forward(self, body: bytes | None) -> None:
            upstream = http.client.HTTPConnection(HOST, upstream_port, timeout=60)
            try:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_HEADERS}
                upstream.request(self.command, self.path, body=body, headers=headers)
                response = upstream.getresponse()
                data = response.read()
            finally:
                upstream.close()
            data = self._name_proxy(data, response.getheader("Content-Type") or "")
            self.send_response(response.status)
            for name, value in response.getheaders():
                if name.lower() not in _HOP_HEADERS:
                    self.send_header(name, value)
            length = response.getheader("Content-Length") if self.command == "HEAD" else None
            self.send_header("Content-Length", length if length is not None else str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def _name_proxy(self, data: bytes, content_type: str) -> bytes:
            """JSON metadata names the proxy where it named the upstream (see FaultProxy)."""
            if "json" not in content_type or "alt=media" in self.path:
                return data  # object bytes are never touched
            host, port = self.connection.getsockname()[:2]
            return data.replace(upstream_netloc, f"{host}:{port}".encode())

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = _serve

    return Handler
