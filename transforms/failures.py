"""The error taxonomy: every per-row problem becomes a classified failure row, never a crash.

    MatteflowError (stage, code)
    ├── TransientError   retried with backoff first (throttling, 5xx, resets, timeouts)
    └── PermanentError   becomes a failure row at once
        ├── BadRow            manifest/<code>: e.g. missing_uri
        ├── NotFound          fetch/not_found
        ├── Forbidden         fetch/forbidden
        ├── DecodeError       decode/<code>: unsupported_format, truncated, too_many_pixels
        ├── ScoreError        score/<code>: ground truth unreadable or the wrong size
        └── InferenceError    segment/<code>

`stage` and `code` are the stable strings written to the metrics Parquet.
"""

from __future__ import annotations

import errno

__all__ = [
    "BadRow",
    "DecodeError",
    "Forbidden",
    "InferenceError",
    "MatteflowError",
    "NotFound",
    "PermanentError",
    "ScoreError",
    "TransientError",
    "classify",
]


class MatteflowError(Exception):
    """A per-row failure with a stable `stage` and `code`; the message names object and cause."""

    stage = "internal"
    code = "error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
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


def classify(err: BaseException, stage: str, uri: str) -> MatteflowError:
    """Turn any exception raised while handling `uri` in `stage` into a MatteflowError."""
    if isinstance(err, MatteflowError):
        return err
    text = f"{uri}: {type(err).__name__}: {err}"
    result: MatteflowError
    if isinstance(err, FileNotFoundError) or getattr(err, "errno", None) == errno.ENOENT:
        result = NotFound(f"{uri}: no such object")
    elif isinstance(err, PermissionError):
        result = Forbidden(f"{uri}: permission denied")
    elif isinstance(err, TimeoutError | ConnectionError):
        result = TransientError(text)
    else:
        result = PermanentError(text, code="unexpected")
    result.stage = stage
    return result
