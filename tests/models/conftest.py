"""Fixtures for the model tests: paths into ../shared, an isolated weights environment."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import EVAL_DEV
from tests.conftest import SHARED_MODELS as MODELS_DIR

ONNX_NAME = "isnet-general-use-fp16.onnx"
ONNX_PATH = MODELS_DIR / ONNX_NAME
EVAL_IMAGES = EVAL_DEV / "images"

_WEIGHT_VARS = ("MATTEFLOW_MODEL_PATH", "MATTEFLOW_CACHE_DIR", "MATTEFLOW_MODEL_MIRRORS")


@pytest.fixture(autouse=True)
def isolated_weights(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No model path, no mirrors, an empty per-test cache: tests never touch ~/.cache.

    npm runs offline, so a test that reaches a spec's real npm source by mistake fails fast
    instead of downloading 88 MB.
    """
    for var in _WEIGHT_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("npm_config_offline", "true")
    cache = tmp_path / "cache"
    monkeypatch.setenv("MATTEFLOW_CACHE_DIR", str(cache))
    return cache


@pytest.fixture
def no_fetch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if anything tries to download (mirrors, sources or npm)."""
    from matteflow.models import weights

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(weights, "fetch_file", refuse)
    monkeypatch.setattr(weights, "_download", refuse)
    monkeypatch.setattr(weights, "_npm_resource", refuse)


@pytest.fixture(scope="session")
def onnx_path() -> Path:
    """The real IS-Net ONNX file in ../shared/models (skips when that folder is absent)."""
    if not ONNX_PATH.is_file():
        pytest.skip(f"{ONNX_PATH} absent: the real model file is needed")
    return ONNX_PATH


@pytest.fixture(scope="session")
def eval_images() -> Path:
    """../shared/data/eval-dev/images (skips when absent)."""
    if not EVAL_IMAGES.is_dir():
        pytest.skip(f"{EVAL_IMAGES} absent: the eval-dev images are needed")
    return EVAL_IMAGES


@pytest.fixture(scope="module")
def native_isnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """`isnet-general-use` loaded once per module, fp32 on CPU, from ../shared/models."""
    if not ONNX_PATH.is_file():
        pytest.skip(f"{ONNX_PATH} absent: the real model file is needed")
    from matteflow.models import load

    with pytest.MonkeyPatch.context() as mp:
        for var in _WEIGHT_VARS:
            mp.delenv(var, raising=False)
        mp.setenv("MATTEFLOW_MODEL_PATH", str(MODELS_DIR))
        mp.setenv("MATTEFLOW_CACHE_DIR", str(tmp_path_factory.mktemp("native-cache")))
        yield load("isnet-general-use", device="cpu", dtype="float32")
