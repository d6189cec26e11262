"""The error taxonomy: stable stage/code strings, out-of-memory classification, and messages
that never carry credentials, signed-URL tokens or bytes."""

from __future__ import annotations

import pytest
import torch

from matteflow.transforms import failures
from matteflow.transforms.failures import (
    BadRow,
    DecodeError,
    Forbidden,
    InferenceError,
    NotFound,
    PermanentError,
    TransientError,
    classify,
    inference_failure,
    is_oom,
    redact,
)
from matteflow.transforms.metrics import metrics_row
from matteflow.transforms.types import Failed, ImageTask

SIGNED = "https://cdn.example.com/p/a.jpg?X-Amz-Signature=deadbeef&X-Amz-Credential=AKIA123"


def test_all_names_exist() -> None:
    assert all(hasattr(failures, name) for name in failures.__all__)


@pytest.mark.parametrize(
    ("cls", "stage", "code", "transient"),
    [
        (BadRow, "manifest", "bad_row", False),
        (NotFound, "fetch", "not_found", False),
        (Forbidden, "fetch", "forbidden", False),
        (DecodeError, "decode", "unsupported_format", False),
        (InferenceError, "segment", "model_error", False),
        (TransientError, "internal", "transient", True),
    ],
)
def test_classes_carry_stable_stage_and_code(
    cls: type[failures.MatteflowError], stage: str, code: str, transient: bool
) -> None:
    err = cls("x")
    assert (err.stage, err.code) == (stage, code)
    assert isinstance(err, TransientError) is transient
    assert isinstance(err, PermanentError) is not transient


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"{SIGNED}: HTTP 403", "https://cdn.example.com/p/a.jpg: HTTP 403"),
        ("https://user:secret@h.example/x.png#frag", "https://h.example/x.png"),
        (
            "GET 'http://h/x?token=1', then (http://h/y?t=2).",
            "GET 'http://h/x', then (http://h/y).",
        ),
        ("gs://bucket/a b.png: no such object", "gs://bucket/a b.png: no such object"),
        ("/local/what?.png: ok", "/local/what?.png: ok"),  # not a URL: untouched
        (
            "not a TIFF file (header b'II*\\x00\\'x' not valid)",
            "not a TIFF file (header b'…' not valid)",
        ),
    ],
)
def test_redact_drops_credentials_tokens_and_bytes(text: str, expected: str) -> None:
    assert redact(text) == expected
    assert redact(expected) == expected


def test_redact_caps_the_length() -> None:
    assert len(redact("x" * 5000)) == 1000


def test_every_error_message_is_redacted() -> None:
    err = classify(ConnectionResetError("reset"), "fetch", SIGNED)
    assert isinstance(err, TransientError)
    assert "Signature" not in str(err) and "AKIA" not in str(err)
    assert str(err).startswith("https://cdn.example.com/p/a.jpg: ConnectionResetError")


def test_failed_metrics_rows_carry_no_tokens() -> None:
    task = ImageTask("a", SIGNED, "a", ground_truth_uri=SIGNED + "&gt=1")
    row = metrics_row(Failed(task, "fetch", "forbidden", f"{SIGNED}: denied")).record()
    text = " ".join(str(v) for v in row.values())
    assert "Signature" not in text and "AKIA" not in text
    assert row["source_uri"] == row["ground_truth_uri"] == "https://cdn.example.com/p/a.jpg"


def _cpu_oom() -> RuntimeError:
    """What torch's CPU allocator raises for an allocation it cannot make."""
    try:
        torch.empty(1 << 50, dtype=torch.uint8)
    except RuntimeError as err:
        return err
    pytest.skip("the allocation succeeded")


@pytest.mark.parametrize(
    "err",
    [
        pytest.param(
            torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"), id="cuda"
        ),
        pytest.param(MemoryError(), id="memory_error"),
        pytest.param("cpu", id="cpu_allocator"),
    ],
)
def test_out_of_memory_is_segment_oom(err: BaseException | str) -> None:
    error = _cpu_oom() if err == "cpu" else err
    assert isinstance(error, BaseException) and is_oom(error)
    failure = inference_failure(error, "s3://b/k.png?sig=1")
    assert (failure.stage, failure.code) == ("segment", "oom")
    assert isinstance(failure, PermanentError) and str(failure).startswith("s3://b/k.png: ")


@pytest.mark.parametrize("err", [ValueError("bad shape"), RuntimeError("size mismatch")])
def test_other_model_errors_are_segment_model_error(err: Exception) -> None:
    assert not is_oom(err)
    failure = inference_failure(err, "a.png")
    assert (failure.stage, failure.code) == ("segment", "model_error")


@pytest.mark.parametrize("stage", ["decode", "refine", "write"])
def test_out_of_memory_in_any_stage_is_oom(stage: str) -> None:
    failure = classify(MemoryError(), stage, "gs://b/huge.tif")
    assert (failure.stage, failure.code) == (stage, "oom")
    assert isinstance(failure, PermanentError)
