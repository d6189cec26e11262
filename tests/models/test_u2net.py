"""The native U²-Net-p: structure in export order, and parity with onnxruntime on eval-dev."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from PIL import Image

from matteflow.models.isnet import ISNet
from matteflow.models.rsu import RSU, conv_layers
from matteflow.models.u2net import U2NetP
from tests.models.conftest import EVAL_IMAGES, MODELS_DIR

U2NETP_ONNX = MODELS_DIR / "u2netp.onnx"
# Photos, composites and a product shot from eval-dev; parity is checked on each.
PARITY_IMAGES = ["dev-cat-test-000.jpg", "dev-dimk-036.png", "dev-prod-021.jpg", "dev-dimk-247.png"]


def test_full_network_has_119_convs_in_export_order() -> None:
    # 6 encoder + 5 decoder RSU blocks (2 * depth convs each) + 6 side heads + the fusing
    # 1x1 conv: the export's 119 Conv nodes, sides then fuse last.
    net = U2NetP()
    convs = conv_layers(net)
    assert len(convs) == 119
    assert len({id(c) for c in convs}) == 119
    assert convs[-7:] == [*net.side, net.fuse]
    assert convs[-1].kernel_size == (1, 1)
    assert sum(p.numel() for p in net.parameters()) == sum(
        c.weight.numel() + c.bias.numel() for c in convs
    )


def test_u2netp_and_isnet_share_the_rsu_block() -> None:
    assert {type(m) for m in U2NetP().modules()} & {type(m) for m in ISNet(width=8).modules()} >= {
        RSU
    }


@pytest.mark.parametrize(("n", "size"), [(1, 64), (2, 96)])
def test_output_is_n_by_1_by_s_by_s_in_0_1(n: int, size: int) -> None:
    torch.manual_seed(0)
    net = U2NetP(width=4).eval()
    with torch.inference_mode():
        y = net(torch.rand(n, 3, size, size))
        sides = net(torch.rand(n, 3, size, size), side_outputs=True)
    assert isinstance(y, torch.Tensor) and y.shape == (n, 1, size, size)
    assert 0.0 <= float(y.min()) <= float(y.max()) <= 1.0
    assert isinstance(sides, list) and len(sides) == 7


@pytest.fixture(scope="module")
def u2netp_pair(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """(native u2netp fp32 on CPU, onnxruntime session of the same file)."""
    if not U2NETP_ONNX.is_file():
        pytest.skip(f"{U2NETP_ONNX} absent: the real model file is needed")
    from matteflow.models import load

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MATTEFLOW_MODEL_PATH", str(MODELS_DIR))
        mp.setenv("MATTEFLOW_CACHE_DIR", str(tmp_path_factory.mktemp("u2netp-cache")))
        native = load("u2netp", device="cpu", dtype="float32")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(U2NETP_ONNX), options, providers=["CPUExecutionProvider"])
    return native, session


@pytest.mark.integration
@pytest.mark.parametrize("name", PARITY_IMAGES)
def test_native_matches_onnxruntime_on_eval_dev(name: str, u2netp_pair) -> None:  # type: ignore[no-untyped-def]
    path = EVAL_IMAGES / name
    if not path.is_file():
        pytest.skip(f"{path} absent: the eval-dev images are needed")
    from matteflow.transforms.inference import preprocess

    native, session = u2netp_pair
    rgb = np.array(Image.open(path).convert("RGB"))
    x = preprocess(rgb, native.spec, torch.device("cpu"))[None]  # 1 x 3 x 320 x 320
    ours = native(x).numpy()
    (theirs,) = session.run(["1959"], {"input.1": x.numpy()})  # d0, the fused map
    theirs = (theirs - theirs.min()) / (theirs.max() - theirs.min())  # rembg's min-max
    assert ours.shape == theirs.shape == (1, 1, 320, 320)
    diff = np.abs(ours - theirs)
    assert float(diff.mean()) <= 2e-3, float(diff.mean())
    assert float(diff.max()) <= 0.05, float(diff.max())


def test_parity_images_exist_in_eval_dev() -> None:
    if not EVAL_IMAGES.is_dir():
        pytest.skip("eval-dev absent")
    assert all((EVAL_IMAGES / name).is_file() for name in PARITY_IMAGES)
