"""The error taxonomy: every per-row problem becomes a classified failure row, never a crash.

    MatteflowError (stage, code)
    ├── TransientError   retried with backoff first (throttling, 5xx, resets, timeouts)
    └── PermanentError   becomes a failure row at once
        ├── BadRow            manifest/<code>: e.g. missing_uri
        ├── NotFound          fetch/not_found
        ├── Forbidden         fetch/forbidden
        ├── DecodeError       decode/<code>: unsupported_format, truncated, too_many_pixels
        ├── ScoreError        score/<code>: ground truth unreadable or the wrong size
        ├── InferenceError    segment/<code>: model_error, oom
        └── RefineError       refine/<code>: e.g. shape_mismatch

`stage` and `code` are the stable strings written to the metrics Parquet. Messages pass through
`redact`: they name the object and the cause, never credentials, signed-URL tokens or bytes.
"""

from __future__ import annotations

import errno
import re

__all__ = [
    "BadRow",
    "DecodeError",
    "Forbidden",
    "InferenceError",
    "MatteflowError",
    "NotFound",
    "PermanentError",
    "RefineError",
    "ScoreError",
    "TransientError",
    "classify",
    "inference_failure",
    "is_oom",
    "redact",
]

# A URL, from which user info (credentials) and the query string or fragment (signed-URL tokens
# live there) are dropped; trailing punctuation stays.
_URL = re.compile(
    r"([A-Za-z][A-Za-z0-9+.-]*://)"  # scheme
    r"(?:[^\s/?#@]*@)?"  # user info: dropped
    r"([^\s?#'\"]*)"  # host and path: kept
    r"(?:[?#][^\s'\"]*?(?=[:;,.)]*(?:[\s'\"]|$)))?"  # query or fragment: dropped
)
# A Python bytes literal, as Pillow and friends quote file headers in their errors.
_BYTES = re.compile(r"""\bb(['"])(?:\\.|(?!\1).)*\1""")
_MAX_MESSAGE = 1000


def redact(text: str) -> str:
    """text with every URL's credentials, query string and fragment removed, bytes literals
    elided and at most 1000 characters: fit for metrics and logs."""
    text = _BYTES.sub("b'…'", _URL.sub(r"\1\2", text))
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 1] + "…"


class MatteflowError(Exception):
    """A per-row failure with a stable `stage` and `code`; the message names object and cause."""

    stage = "internal"
    code = "error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(redact(message))
        if code is not None:
            self.code = code


class TransientError(MatteflowError):
    """Worth retrying: the same request may succeed later."""

    code = "transient"


class PermanentError(MatteflowError):
    """Retrying will not help."""


class BadRow(PermanentError):
    """The manifest row itself cannot be processed."""

    stage, code = "manifest", "bad_row"


class NotFound(PermanentError):
    """The object does not exist."""

    stage, code = "fetch", "not_found"


class Forbidden(PermanentError):
    """The object exists but we may not read it."""

    stage, code = "fetch", "forbidden"


class DecodeError(PermanentError):
    """The bytes are not an image we can decode."""

    stage, code = "decode", "unsupported_format"


class ScoreError(PermanentError):
    """The row's ground truth cannot be used."""

    stage, code = "score", "bad_ground_truth"


class InferenceError(PermanentError):
    """The model failed on this element even when run alone."""

    stage, code = "segment", "model_error"


class RefineError(PermanentError):
    """The matte cannot be refined (e.g. its alpha does not fit its image)."""

    stage, code = "refine", "refine_error"


_TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}
# Connection-level errors of requests, urllib3, botocore and http.client, matched by class name
# so this module imports none of them; all are worth a retry.
_TRANSIENT_NAMES = (
    "ConnectionError",
    "Timeout",
    "ProtocolError",
    "IncompleteRead",
    "ChunkedEncodingError",
    "ConnectionClosedError",
)


def _transient_type(err: BaseException) -> bool:
    names = [cls.__name__ for cls in type(err).__mro__]
    return isinstance(err, TimeoutError | ConnectionError) or any(
        marker in name for name in names for marker in _TRANSIENT_NAMES
    )


def _status(err: BaseException) -> int | None:
    """The HTTP status a storage client attached to err (google-api-core, botocore, Beam S3)."""
    for attr in ("code", "status_code", "status"):
        value = getattr(err, attr, None)
        if isinstance(value, int) and 100 <= value < 600:
            return value
    response = getattr(err, "response", None)  # botocore.exceptions.ClientError
    if isinstance(response, dict):
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return status if isinstance(status, int) else None
    return None


def _root(err: BaseException) -> BaseException:
    """The underlying error of Beam's BeamIOError wrappers (one per path)."""
    details = getattr(err, "exception_details", None)
    if isinstance(details, dict) and details:
        inner = next(iter(details.values()))
        if isinstance(inner, BaseException):
            return _root(inner)
    return err


def classify(err: BaseException, stage: str, uri: str) -> MatteflowError:
    """Turn any exception raised while handling `uri` in `stage` into a MatteflowError.

    404 / missing file -> NotFound, 401/403 / permission -> Forbidden, 408/429/5xx, timeouts
    and dropped connections -> TransientError, out of memory -> PermanentError "oom",
    anything else -> PermanentError "unexpected".
    """
    if isinstance(err, MatteflowError):
        return err
    err = _root(err)
    status = _status(err)
    text = f"{uri}: {type(err).__name__}: {err}"
    result: MatteflowError
    missing = isinstance(err, FileNotFoundError) or getattr(err, "errno", 0) == errno.ENOENT
    if missing or status == 404:
        result = NotFound(f"{uri}: no such object")
    elif isinstance(err, PermissionError) or status in (401, 403):
        result = Forbidden(f"{uri}: access denied ({status or 'permission'})")
    elif status in _TRANSIENT_STATUS or (status is None and _transient_type(err)):
        result = TransientError(text)
    elif is_oom(err):
        result = PermanentError(text, code="oom")
    else:
        result = PermanentError(text, code="unexpected")
    result.stage = stage
    return result


# torch.OutOfMemoryError (CUDA, MPS) by class name, so this module does not import torch; the
# CPU allocator raises a plain RuntimeError that says so.
_OOM_TEXT = ("out of memory", "can't allocate memory")


def is_oom(err: BaseException) -> bool:
    """Whether err says the device or host ran out of memory."""
    if isinstance(err, MemoryError) or any(
        cls.__name__ == "OutOfMemoryError" for cls in type(err).__mro__
    ):
        return True
    text = str(err).lower()
    return isinstance(err, RuntimeError) and any(marker in text for marker in _OOM_TEXT)


def inference_failure(err: BaseException, uri: str) -> InferenceError:
    """The failure of one element that the model could not process even alone:
    segment/oom when it ran out of memory, else segment/model_error."""
    return InferenceError(
        f"{uri}: {type(err).__name__}: {err}", code="oom" if is_oom(err) else None
    )
