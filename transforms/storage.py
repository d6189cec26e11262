"""Object access for every stage: whole-object reads and atomic writes through Beam FileSystems
(local paths, gs://, s3://), reads of http(s) sources, with URI checks and retries of transient
errors.

Transient errors (throttling, 5xx, resets, timeouts) are retried with exponential backoff and
full jitter; what stays broken, and every permanent error, is raised classified.
"""

from __future__ import annotations

import http.client
import mimetypes
import os
import posixpath
import random
import re
import socket
import stat
import threading
import time
import uuid
from collections.abc import Callable
from typing import BinaryIO, TypeVar
from urllib.error import HTTPError
from urllib.parse import urlsplit

from apache_beam.io.aws import s3io
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import Metrics
from apache_beam.options.pipeline_options import PipelineOptions, S3Options

from matteflow.transforms.failures import BadRow, PermanentError, TransientError, classify
from matteflow.transforms.sources import public_address

__all__ = [
    "RetryPolicy",
    "check_deadline",
    "check_uri",
    "content_type",
    "exists",
    "read_bytes",
    "write_atomic",
]

T = TypeVar("T")
_BUCKET_URI = re.compile(r"^(gs|s3)://[^/]+/[^/].*$")
_HTTP_URI = re.compile(r"^https?://[^/?#]+")
_HTTP_TIMEOUT_S = 60
_CHUNK = 1 << 20  # bytes per read, between which a row's deadline is checked
_retries = Metrics.counter("matteflow.storage", "retries")


class RetryPolicy:
    """Exponential backoff with full jitter: attempt n waits U(0, base * 2**n), capped."""

    def __init__(
        self,
        attempts: int = 6,
        base_s: float = 0.2,
        cap_s: float = 10.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.attempts, self.base_s, self.cap_s, self._sleep = attempts, base_s, cap_s, sleep

    def call(self, fn: Callable[[], T], stage: str, uri: str) -> T:
        """fn() retried while it fails transiently; raises the classified last error."""
        attempt = 0
        while True:
            try:
                return fn()
            except Exception as err:
                error = classify(err, stage, uri)
                attempt += 1
                if not isinstance(error, TransientError) or attempt == self.attempts:
                    raise error from err
                _retries.inc()
                self._sleep(random.uniform(0, min(self.cap_s, self.base_s * 2 ** (attempt - 1))))


DEFAULT_RETRY = RetryPolicy()


def check_uri(uri: str, stage: str) -> None:
    """Raise a permanent, classified error for an empty, malformed or unsupported URI."""
    if not uri:
        raise BadRow("row has an empty uri", code="missing_uri")
    scheme = uri.split("://", 1)[0] if "://" in uri else ""
    error: PermanentError | None = None
    if scheme in ("gs", "s3") and not _BUCKET_URI.match(uri):
        error = PermanentError(f"{uri}: malformed {scheme}:// URI (need bucket and object)")
        error.code = "malformed_uri"
    elif scheme in ("http", "https") and not _HTTP_URI.match(uri):
        error = PermanentError(f"{uri}: malformed {scheme}:// URI (need a host)")
        error.code = "malformed_uri"
    elif scheme and scheme not in ("http", "https"):
        try:
            FileSystems.get_filesystem(uri)
        except ValueError:
            error = PermanentError(f"{uri}: unsupported scheme {scheme!r}")
            error.code = "unsupported_scheme"
    if error is not None:
        error.stage = stage
        raise error


def check_deadline(deadline: float, uri: str, stage: str) -> None:
    """Raise PermanentError `stage`/timeout when time.monotonic() is past `deadline` (0: none),
    the per-row limit of `decode.row_timeout_s`."""
    if deadline and time.monotonic() > deadline:
        error = PermanentError(
            f"{uri}: the row's deadline passed while reading or decoding it"
            " (decode.row_timeout_s); a slow or huge source"
        )
        error.stage, error.code = stage, "timeout"
        raise error


def _check_regular_file(uri: str) -> None:
    """Refuse a local path that is not a regular file: a FIFO or a device never ends (or
    blocks the open itself), a folder is no image (issue 17, item 3). A missing path passes:
    the open reports it as not_found."""
    try:
        mode = os.stat(uri).st_mode
    except OSError:
        return
    if not stat.S_ISREG(mode):
        error = PermanentError(
            f"{uri}: not a regular file (a folder, FIFO, socket or device); give an image file"
        )
        error.stage, error.code = "fetch", "not_a_file"
        raise error


def _read_limited(
    read: Callable[[int], bytes], uri: str, limit: int | None, deadline: float
) -> bytes:
    """Bytes from `read(n)` until it returns b"" or `limit` bytes are had, checking the
    deadline between reads."""
    chunks: list[bytes] = []
    total = 0
    while limit is None or total < limit:
        check_deadline(deadline, uri, "fetch")
        chunk = read(_CHUNK if limit is None else min(_CHUNK, limit - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


# Content types of what matteflow writes, so bucket-hosted outputs and the eval report open
# in a browser instead of downloading; anything else is asked of `mimetypes`.
_CONTENT_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".webp": "image/webp",
    ".tif": "image/tiff",
    ".avif": "image/avif",
    ".psd": "image/vnd.adobe.photoshop",
    ".html": "text/html; charset=utf-8",
    ".json": "application/json",
    ".csv": "text/csv; charset=utf-8",
    ".parquet": "application/vnd.apache.parquet",
}


def content_type(uri: str) -> str:
    """The MIME type an object written at uri gets (by its extension)."""
    ext = posixpath.splitext(uri)[1].lower()
    return _CONTENT_TYPES.get(ext) or mimetypes.guess_type(uri)[0] or "application/octet-stream"


class _BeamStore:
    """Objects through Beam FileSystems (local paths, gs://, and whatever else is installed)."""

    def open(self, uri: str) -> BinaryIO:
        return FileSystems.open(uri)

    def create(self, uri: str, mime_type: str) -> BinaryIO:
        return FileSystems.create(uri, mime_type=mime_type)

    def rename(self, src: str, dst: str) -> None:
        FileSystems.rename([src], [dst])

    def exists(self, uri: str) -> bool:
        return bool(FileSystems.exists(uri))

    def delete(self, uri: str) -> None:
        FileSystems.delete([uri])


class _S3Store:
    """s3:// through Beam's S3IO with one client per thread.

    Beam's S3FileSystem builds a new boto3 client for every call (about 0.13 s of CPU here,
    some ten calls per image); its client keeps download state, so it is reused per thread only.
    """

    def __init__(self, options: PipelineOptions) -> None:
        self._io = s3io.S3IO(options=options)

    def open(self, uri: str) -> BinaryIO:
        return self._io.open(uri, "rb")  # type: ignore[no-any-return]

    def create(self, uri: str, mime_type: str) -> BinaryIO:
        return self._io.open(uri, "wb", mime_type=mime_type)  # type: ignore[no-any-return]

    def rename(self, src: str, dst: str) -> None:
        self._io.rename(src, dst)

    def exists(self, uri: str) -> bool:
        return bool(self._io.exists(uri))

    def delete(self, uri: str) -> None:
        self._io.delete(uri)


_BEAM = _BeamStore()
_per_thread = threading.local()


def _store(uri: str) -> _BeamStore | _S3Store:
    if not uri.startswith("s3://"):
        return _BEAM
    options = FileSystems.get_filesystem(uri)._options  # type: ignore[attr-defined]  # --s3_*
    s3 = options.view_as(S3Options)
    key = (
        s3.s3_endpoint_url,
        s3.s3_access_key_id,
        s3.s3_secret_access_key,
        s3.s3_session_token,
        s3.s3_region_name,
        s3.s3_api_version,
        s3.s3_verify,
        s3.s3_disable_ssl,
    )
    stores: dict[tuple[object, ...], _S3Store] = _per_thread.__dict__.setdefault("s3", {})
    if key not in stores:
        stores[key] = _S3Store(options)
    return stores[key]


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """HTTP to `host`, connecting to the address that was checked (no second DNS lookup that
    could answer differently)."""

    def __init__(self, host: str, port: int, address: str) -> None:
        super().__init__(host, port, timeout=_HTTP_TIMEOUT_S)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS as _PinnedHTTPConnection; the certificate is checked against `host`."""

    def __init__(self, host: str, port: int, address: str) -> None:
        super().__init__(host, port, timeout=_HTTP_TIMEOUT_S)
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


def _http_get(uri: str, allow_private: bool, limit: int | None, deadline: float = 0.0) -> bytes:
    """The body of a GET of uri from a public address (or any, with allow_private), at most
    `limit` bytes (None: all), read by what arrives (read1) so that a server sending a byte
    now and then still meets the deadline (0: none).

    Redirects are not followed (their target was never checked): fetch/redirect. Other
    statuses raise HTTPError, which `classify` sorts (404, 403, 5xx, ...).
    """
    parts = urlsplit(uri)
    host, https = parts.hostname or "", parts.scheme == "https"
    port = parts.port or (443 if https else 80)
    address = public_address(uri, host, port, allow_private)
    connection = (_PinnedHTTPSConnection if https else _PinnedHTTPConnection)(host, port, address)
    try:
        path = parts.path or "/"
        connection.request("GET", f"{path}?{parts.query}" if parts.query else path)
        response = connection.getresponse()
        try:
            body = _read_limited(response.read1, uri, limit, deadline)
        finally:
            response.close()
    finally:
        connection.close()
    if 300 <= response.status < 400:
        error = PermanentError(f"{uri}: redirected ({response.status}); give the final URL")
        error.stage, error.code = "fetch", "redirect"
        raise error
    if response.status != 200:
        raise HTTPError(uri, response.status, response.reason, response.headers, None)
    return body


def read_bytes(
    uri: str,
    retry: RetryPolicy = DEFAULT_RETRY,
    *,
    allow_private: bool = False,
    max_bytes: int = 0,
    deadline: float = 0.0,
) -> bytes:
    """All bytes of the object at uri; errors classified at stage fetch. An object over
    max_bytes (0: no limit) fails as fetch/too_large after reading max_bytes + 1 bytes; a
    read still going at `deadline` (a time.monotonic() value; 0: none) fails as
    fetch/timeout; a local path that is not a regular file fails as fetch/not_a_file.

    http(s) URIs are read only from public addresses unless allow_private (see sources.py);
    which URIs may be read at all is for the caller to check (`sources.check_source`).
    """
    check_uri(uri, "fetch")
    limit = max_bytes + 1 if max_bytes else None

    def read() -> bytes:
        if uri.startswith(("http://", "https://")):
            data = _http_get(uri, allow_private, limit, deadline)
        else:
            if "://" not in uri:
                _check_regular_file(uri)
            with _store(uri).open(uri) as f:
                data = _read_limited(f.read, uri, limit, deadline)
        if max_bytes and len(data) > max_bytes:
            error = PermanentError(f"{uri}: larger than the {max_bytes}-byte limit")
            error.stage, error.code = "fetch", "too_large"
            raise error
        return data

    return retry.call(read, "fetch", uri)


def exists(uri: str, retry: RetryPolicy = DEFAULT_RETRY) -> bool:
    """Whether an object exists at uri."""
    return retry.call(lambda: _store(uri).exists(uri), "fetch", uri)


def write_atomic(uri: str, data: bytes, retry: RetryPolicy = DEFAULT_RETRY) -> None:
    """Write data to uri via a hidden temporary sibling and a rename; errors at stage write.

    Readers never see a partial object at uri: locally the rename is atomic; in buckets the
    rename is a server-side copy of a complete object, then the temporary is deleted.
    """
    folder, name = posixpath.split(uri)
    store = _store(uri)

    def write() -> None:
        tmp = posixpath.join(folder, f".{name}.{uuid.uuid4().hex}.tmp")
        try:
            with store.create(tmp, content_type(uri)) as f:  # the rename keeps the type
                f.write(data)
            store.rename(tmp, uri)
        except BaseException:
            if store.exists(tmp):
                store.delete(tmp)
            raise

    retry.call(write, "write", uri)
