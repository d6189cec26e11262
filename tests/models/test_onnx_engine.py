"""The onnxruntime engine: RVM through `load` gives what a direct onnxruntime call gives; a
fixed-batch graph runs image by image; threads and providers follow one policy."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

import numpy as np
import onnx
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
    from matteflow.transforms.foreground import predicted_foreground
    from matteflow.transforms.inference import MatteModelHandler
    from matteflow.transforms.refine import RefineSettings, _RefineFn
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


# --- a tiny graph of our own: the engine's contract without the real files ----------------


def _tiny_graph(path: Path) -> str:
    """src N x 3 x H x W and a constant `gain` [1] -> pha = sigmoid(gain * mean over channels),
    fgr = 1 - src. Returns its sha256."""
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("ReduceMean", ["src"], ["m"], axes=[1], keepdims=1),
        helper.make_node("Mul", ["m", "gain"], ["g"]),
        helper.make_node("Sigmoid", ["g"], ["pha"]),
        helper.make_node("Sub", ["one", "src"], ["fgr"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [
            helper.make_tensor_value_info("src", TensorProto.FLOAT, ["n", 3, "h", "w"]),
            helper.make_tensor_value_info("gain", TensorProto.FLOAT, [1]),
        ],
        [
            helper.make_tensor_value_info("fgr", TensorProto.FLOAT, ["n", 3, "h", "w"]),
            helper.make_tensor_value_info("pha", TensorProto.FLOAT, ["n", 1, "h", "w"]),
        ],
        [helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def tiny_onnx(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    folder = tmp_path / "models"
    folder.mkdir()
    sha = _tiny_graph(folder / "tiny.onnx")
    monkeypatch.setenv("MATTEFLOW_MODEL_PATH", str(folder))
    spec = dataclasses.replace(
        get_spec("rvm-mobilenetv3"),
        name="tiny-onnx",
        input_size=32,
        file="tiny.onnx",
        sha256=sha,
        sources=(),
        constants=(("gain", (4.0,)),),
    )
    monkeypatch.setitem(registry._REGISTRY, spec.name, spec)
    return spec.name


def test_the_engine_feeds_constants_and_reads_the_named_outputs(tiny_onnx: str) -> None:
    model = load(tiny_onnx, "cpu", "auto", threads=1)
    assert isinstance(model.network, OnnxSession) and not model.network.one_at_a_time
    x = torch.rand(3, 3, 32, 32)
    alpha, colour = model.predict(x)
    expected = torch.sigmoid(4.0 * x.mean(dim=1, keepdim=True))
    torch.testing.assert_close(alpha, expected, rtol=0, atol=1e-6)
    assert colour is not None
    torch.testing.assert_close(colour, 1 - x, rtol=0, atol=1e-6)
    assert model.weights_sha256 == model.spec.sha256


def test_a_graph_without_the_named_output_is_refused(tiny_onnx: str) -> None:
    spec = dataclasses.replace(get_spec(tiny_onnx), output="alpha_out")
    with pytest.raises(ValueError, match=r"the graph has no input or output \['alpha_out'\]"):
        OnnxSession(
            Path(os.environ["MATTEFLOW_MODEL_PATH"]) / "tiny.onnx", spec, torch.device("cpu")
        )


def test_the_handler_runs_an_onnxruntime_model_like_a_torch_one(tiny_onnx: str) -> None:
    from matteflow.transforms.inference import MatteModelHandler
    from matteflow.transforms.types import DecodedImage, ImageTask, Matte

    rgb = np.zeros((11, 17, 3), np.uint8)
    image = DecodedImage(ImageTask("a", "mem://a.png", "a"), rgb, "PNG")
    handler = MatteModelHandler(tiny_onnx, max_batch_pixels=10_000, torch_threads=1)
    [matte] = handler.run_inference([image], handler.load_model())
    assert isinstance(matte, Matte)
    assert matte.alpha.shape == (11, 17)
    np.testing.assert_allclose(matte.alpha, 0.5, atol=1e-6)  # sigmoid(4 * 0)
    assert matte.model_foreground is not None
    np.testing.assert_allclose(matte.model_foreground, 1.0, atol=1e-6)  # 1 - black
    assert (matte.dtype, matte.licence_class) == ("float32", "copyleft")


def test_an_onnxruntime_allocation_failure_is_a_memory_error(
    tiny_onnx: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from onnxruntime.capi.onnxruntime_pybind11_state import RuntimeException

    from matteflow.transforms.failures import is_oom

    model = load(tiny_onnx, "cpu", "auto", threads=1)
    assert isinstance(model.network, OnnxSession)

    def exhausted(*args: object, **kwargs: object) -> None:
        raise RuntimeException("Failed to allocate memory for requested buffer of size 1024")

    monkeypatch.setattr(model.network.session, "run", exhausted)
    with pytest.raises(MemoryError, match="onnxruntime: Failed to allocate memory") as info:
        model(torch.rand(1, 3, 32, 32))
    assert is_oom(info.value)
