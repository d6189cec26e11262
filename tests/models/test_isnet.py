"""The native IS-Net: shapes and value range for any batch and size, side outputs, conv count."""

from __future__ import annotations

import pytest
import torch

from matteflow.models.isnet import ISNet, conv_layers


@pytest.fixture(scope="module")
def small_net() -> ISNet:
    """The same structure at 1/8 width, seeded so failures reproduce."""
    torch.manual_seed(0)
    return ISNet(width=8).eval()


@pytest.mark.parametrize(
    ("n", "size"),
    [(1, 32), (2, 64), (3, 96), (1, 160)],  # 96 and 160: pooling with ceil_mode on odd sides
)
def test_output_is_n_by_1_by_s_by_s_alpha(small_net: ISNet, n: int, size: int) -> None:
    x = torch.rand(n, 3, size, size) - 0.5
    with torch.inference_mode():
        y = small_net(x)
    assert isinstance(y, torch.Tensor)
    assert y.shape == (n, 1, size, size)
    assert y.dtype == torch.float32
    assert torch.isfinite(y).all()
    assert y.min() >= 0.0
    assert y.max() <= 1.0


def test_batch_items_are_independent(small_net: ISNet) -> None:
    x = torch.rand(3, 3, 64, 64) - 0.5
    with torch.inference_mode():
        batched = small_net(x)
        single = small_net(x[1:2])
    torch.testing.assert_close(batched[1:2], single, rtol=0, atol=1e-5)


def test_side_outputs_are_six_full_size_mattes(small_net: ISNet) -> None:
    x = torch.rand(2, 3, 64, 64) - 0.5
    with torch.inference_mode():
        sides = small_net(x, side_outputs=True)
        main = small_net(x)
    assert isinstance(sides, list)
    assert len(sides) == 6
    for side in sides:
        assert side.shape == (2, 1, 64, 64)
        assert side.min() >= 0.0
        assert side.max() <= 1.0
    torch.testing.assert_close(sides[0], main, rtol=0, atol=0)  # head 1 is the output


def test_full_network_has_119_convs_in_export_order() -> None:
    # 1 input conv + 2*depth convs per RSU block (60 encoder, 52 decoder) + 6 side heads; the
    # ONNX export has 119 Conv nodes (238 initializers: weight and bias each).
    net = ISNet()
    convs = conv_layers(net)
    assert len(convs) == 119
    assert len({id(c) for c in convs}) == 119  # each conv runs once
    assert convs[0] is net.conv_in
    assert convs[-6:] == list(net.side)
    assert sum(p.numel() for p in net.parameters()) == sum(
        c.weight.numel() + c.bias.numel() for c in convs
    )


def test_width_keeps_the_structure() -> None:
    assert len(conv_layers(ISNet(width=8))) == 119


def test_conv_layers_leaves_no_hooks(small_net: ISNet) -> None:
    conv_layers(small_net)
    for module in small_net.modules():
        assert not module._forward_pre_hooks
