"""The onnxruntime engine: RVM through `load` gives what a direct onnxruntime call gives; a
fixed-batch graph runs image by image; threads and providers follow one policy."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import onnxruntime as ort
import pytest
import torch
from PIL import Image

from matteflow.models import registry
from matteflow.models.onnx_engine import OnnxSession, onnx_providers, session_threads
from matteflow.models.registry import RegistryError, check, get_spec, load
from tests.models.conftest import EVAL_IMAGES, MODELS_DIR

RVM_ONNX = MODELS_DIR / "rvm-mobilenetv3-fp32.onnx"
U2NETP_ONNX = MODELS_DIR / "u2netp.onnx"
PORTRAITS = ["dev-dimk-247.png", "dev-dimk-036.png"]  # a person, and a dog (RVM finds little)


@pytest.fixture
def real_model_path(monkeypatch: pytest.MonkeyPatch) -> None:
    if not RVM_ONNX.is_file() or not U2NETP_ONNX.is_file():
        pytest.skip(f"{MODELS_DIR} lacks the real model files")
    monkeypatch.setenv("MATTEFLOW_MODEL_PATH", str(MODELS_DIR))


def _image(name: str) -> np.ndarray:
    path = EVAL_IMAGES / name
    if not path.is_file():
        pytest.skip(f"{path} absent: the eval-dev images are needed")
    return np.array(Image.open(path).convert("RGB"))


@pytest.mark.integration
@pytest.mark.usefixtures("real_model_path")
def test_rvm_through_the_engine_equals_a_direct_onnxruntime_call() -> None:
    from matteflow.transforms.inference import preprocess

    model = load("rvm-mobilenetv3", "cpu", "auto", threads=1)
    assert model.spec.engine == "onnxruntime" and model.dtype_name == "float32"
    x = torch.stack(
        [preprocess(_image(n), model.spec, model.device) for n in PORTRAITS]
    )  # 2 x 3 x 1024 x 1024, RGB in [0, 1]
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    alpha, colour = model.predict(x)

    session = ort.InferenceSession(str(RVM_ONNX), providers=["CPUExecutionProvider"])
    zero = np.zeros((1, 1, 1, 1), np.float32)
    feeds = {f"r{i}i": zero for i in range(1, 5)}
    feeds["downsample_ratio"] = np.array([0.5], np.float32)
    for i in range(len(PORTRAITS)):
        fgr, pha = session.run(["fgr", "pha"], {"src": x[i : i + 1].numpy(), **feeds})
        np.testing.assert_allclose(alpha[i : i + 1].numpy(), pha, rtol=0, atol=1e-5)
        assert colour is not None
        np.testing.assert_allclose(colour[i : i + 1].numpy(), fgr, rtol=0, atol=1e-5)
    assert float(alpha[0].mean()) > 0.1  # the person is found


@pytest.mark.integration
@pytest.mark.usefixtures("real_model_path")
def test_a_fixed_batch_graph_runs_image_by_image(monkeypatch: pytest.MonkeyPatch) -> None:
    # u2netp's export has a batch of exactly 1: as an onnxruntime model it still takes batches.
    spec = dataclasses.replace(get_spec("u2netp"), name="u2netp-ort", engine="onnxruntime")
    monkeypatch.setitem(registry._REGISTRY, spec.name, spec)
    model = load("u2netp-ort", "cpu", "float32", threads=1)
    assert isinstance(model.network, OnnxSession) and model.network.one_at_a_time
    x = torch.rand(3, 3, 320, 320)
    batched = model(x)
    single = model(x[1:2])
    torch.testing.assert_close(batched[1:2], single, rtol=0, atol=1e-6)
    native = load("u2netp", "cpu", "float32")
    torch.testing.assert_close(batched, native(x), rtol=0, atol=2e-4)  # the two engines agree


def test_session_threads_are_fixed_per_session() -> None:
    assert session_threads(3) == 3
    assert session_threads(0) == (os.cpu_count() or 1)


def test_cpu_provider_and_a_clear_cuda_refusal() -> None:
    assert onnx_providers(torch.device("cpu")) == ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    with pytest.raises(RuntimeError, match="install onnxruntime-gpu"):
        onnx_providers(torch.device("cuda"))
    with pytest.raises(RegistryError, match="'rvm-mobilenetv3': device cuda requested"):
        check("rvm-mobilenetv3", "cuda", "auto")


def test_onnxruntime_models_compute_in_float32_only() -> None:
    with pytest.raises(RegistryError, match="float32 only; dtype 'bfloat16' asked"):
        check("rvm-mobilenetv3", "cpu", "bfloat16")


@pytest.mark.integration
@pytest.mark.usefixtures("real_model_path")
def test_rvm_colour_reaches_the_cutout_colours_through_the_handler() -> None:
    from matteflow.transforms.inference import MatteModelHandler
    from matteflow.transforms.refine import RefineSettings, _RefineFn, predicted_foreground
    from matteflow.transforms.types import DecodedImage, ImageTask, Matte

    rgb = _image(PORTRAITS[0])
    image = DecodedImage(ImageTask("p", "mem://p.png", "p"), rgb, "PNG")
    handler = MatteModelHandler("rvm-mobilenetv3", max_batch_pixels=1, torch_threads=1)
    [matte] = handler.run_inference([image], handler.load_model())
    assert isinstance(matte, Matte) and matte.licence_class == "copyleft"
    assert matte.model_foreground is not None and matte.model_foreground.shape == (1024, 1024, 3)
    [refined] = _RefineFn(RefineSettings(refine="none")).process(matte)
    assert isinstance(refined, Matte) and refined.foreground is not None
    expected = predicted_foreground(rgb, matte.alpha, matte.model_foreground)
    assert np.array_equal(refined.foreground, expected)
    assert not np.array_equal(refined.foreground, rgb)  # the edge band took the model's colour
