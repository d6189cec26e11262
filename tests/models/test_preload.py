"""models/preload.py: a model loaded ahead of need is taken once, by a load with the same
arguments; anything else loads as usual."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import torch

from matteflow.models import preload, registry
from matteflow.models.registry import LoadedModel, RegistryError


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """(dtype, thread name) of every registry.load, which still runs as it is."""
    seen: list[tuple[str, str]] = []
    real = registry.load

    def spy(name: str, device: str = "cpu", dtype: str = "float32", **kw: Any) -> LoadedModel:
        seen.append((dtype, threading.current_thread().name))
        return real(name, device, dtype, **kw)

    monkeypatch.setattr(registry, "load", spy)
    return seen


def _settle() -> None:
    """Wait for preloads nobody took (their loads still finish)."""
    for thread in threading.enumerate():
        if thread.name.startswith("matteflow-preload-"):
            thread.join()


def test_a_load_takes_the_preloaded_model_once(loads: list[tuple[str, str]]) -> None:
    forget = preload.preload("tiny-isnet", threads=1)
    first = preload.load("tiny-isnet", threads=1)
    second = preload.load("tiny-isnet", threads=1)
    forget()  # taken already: nothing to let go
    assert first is not second
    assert [thread for _, thread in loads] == ["matteflow-preload-tiny-isnet", "MainThread"]
    x = torch.rand(1, 3, 64, 64)
    assert torch.equal(first(x), second(x))  # the same weights, the same outputs


def test_other_arguments_load_anew_and_a_forgotten_preload_is_not_taken(
    loads: list[tuple[str, str]],
) -> None:
    forget = preload.preload("tiny-isnet", dtype="float32")
    assert preload.load("tiny-isnet", dtype="bfloat16").dtype == torch.bfloat16
    forget()
    assert preload.load("tiny-isnet", dtype="float32").dtype == torch.float32
    _settle()
    assert sorted(loads) == [
        ("bfloat16", "MainThread"),
        ("float32", "MainThread"),
        ("float32", "matteflow-preload-tiny-isnet"),
    ]


def test_a_failed_preload_raises_in_the_load_that_takes_it() -> None:
    preload.preload("no-such-model")
    with pytest.raises(RegistryError, match="unknown model 'no-such-model'"):
        preload.load("no-such-model")
