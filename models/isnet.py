"""IS-Net (Qin et al., "Highly Accurate Dichotomous Image Segmentation", ECCV 2022) for inference.

The network in the batch-norm-folded form of its ONNX export: every conv carries its own bias,
and there is no BatchNorm layer. The encoder/decoder is a U-Net of RSU ("residual U") blocks;
six side heads predict the matte at decreasing resolution, and head 1 is the output.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ISNet", "conv_layers"]


def _resize_to(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Bilinear resize (half-pixel centres) of x to like's spatial size."""
    if x.shape[-2:] == like.shape[-2:]:
        return x
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


class _ConvRelu(nn.Module):
    """3x3 conv (BN folded into its bias) + ReLU; padding equals dilation so size is kept."""

    def __init__(self, in_ch: int, out_ch: int, dilation: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 3, padding=dilation, dilation=dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv(x))


class _RSU(nn.Module):
    """Residual U-block of `depth` levels.

    With `dilated=False` (RSU7..RSU4) each level halves the resolution by max-pooling and the
    bottom level uses dilation 2. With `dilated=True` (RSU4F) the resolution is kept and the
    levels use dilations 1, 2, 4, ... instead. Output = decoded features + input projection.
    """

    def __init__(self, depth: int, in_ch: int, mid_ch: int, out_ch: int, dilated: bool) -> None:
        super().__init__()
        self.dilated = dilated
        dil = [2**i if dilated else 1 for i in range(depth - 1)]
        bottom = 2 ** (depth - 1) if dilated else 2
        self.conv_in = _ConvRelu(in_ch, out_ch)
        # Encoder levels 1..depth-1, then the bottom level; execution order = this order.
        self.enc = nn.ModuleList(
            [_ConvRelu(out_ch if i == 0 else mid_ch, mid_ch, dil[i]) for i in range(depth - 1)]
        )
        self.bottom = _ConvRelu(mid_ch, mid_ch, bottom)
        # Decoder levels depth-1..1 (deepest first), each fed [upsampled, skip].
        self.dec = nn.ModuleList(
            [
                _ConvRelu(2 * mid_ch, out_ch if i == 0 else mid_ch, dil[i])
                for i in reversed(range(depth - 1))
            ]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_in = self.conv_in(x)
        skips = []
        h = x_in
        for i, layer in enumerate(self.enc):
            if i > 0 and not self.dilated:
                h = F.max_pool2d(h, 2, stride=2, ceil_mode=True)
            h = layer(h)
            skips.append(h)
        h = self.bottom(h)
        for layer, skip in zip(self.dec, reversed(skips), strict=True):
            h = layer(torch.cat([_resize_to(h, skip), skip], dim=1))
        return h + x_in


# (depth, in, mid, out, dilated) per stage at width 1.0; encoder stages 1..6, decoder 5d..1d.
_ENCODER = [
    (7, 64, 32, 64, False),
    (6, 64, 32, 128, False),
    (5, 128, 64, 256, False),
    (4, 256, 128, 512, False),
    (4, 512, 256, 512, True),
    (4, 512, 256, 512, True),
]
_DECODER = [
    (4, 1024, 256, 512, True),
    (4, 1024, 128, 256, False),
    (5, 512, 64, 128, False),
    (6, 256, 32, 64, False),
    (7, 128, 16, 64, False),
]


class ISNet(nn.Module):
    """IS-Net general-use segmentation network.

    Input: N x 3 x S x S normalised RGB, S a multiple of 32. Output: N x 1 x S x S alpha in
    [0, 1] (the sigmoid of side head 1), or with `side_outputs=True` a list of all six side
    mattes (each upsampled to S x S), head 1 first. `width` divides every channel count, so
    `ISNet(width=8)` is a small network with the same structure and contract.
    """

    def __init__(self, width: int = 1) -> None:
        super().__init__()

        def ch(c: int) -> int:
            return max(1, c // width)

        self.conv_in = nn.Conv2d(3, ch(64), 3, stride=2, padding=1)
        self.encoder = nn.ModuleList(
            [_RSU(d, ch(i), ch(m), ch(o), f) for d, i, m, o, f in _ENCODER]
        )
        self.decoder = nn.ModuleList(
            [_RSU(d, ch(i), ch(m), ch(o), f) for d, i, m, o, f in _DECODER]
        )
        # Side heads 1..6 read decoder outputs 1d..5d and encoder stage 6.
        side_in = [ch(64), ch(64), ch(128), ch(256), ch(512), ch(512)]
        self.side = nn.ModuleList([nn.Conv2d(c, 1, 3, padding=1) for c in side_in])

    def forward(
        self, x: torch.Tensor, side_outputs: bool = False
    ) -> torch.Tensor | list[torch.Tensor]:
        h = self.conv_in(x)  # stride 2; the reference defines pool_in but never applies it
        feats = []
        for i, stage in enumerate(self.encoder):
            if i > 0:
                h = F.max_pool2d(h, 2, stride=2, ceil_mode=True)
            h = stage(h)
            feats.append(h)
        decoded = [feats[-1]]  # stage 6 output, deepest first
        for stage, skip in zip(self.decoder, reversed(feats[:-1]), strict=True):
            h = stage(torch.cat([_resize_to(h, skip), skip], dim=1))
            decoded.append(h)
        decoded.reverse()  # now 1d, 2d, 3d, 4d, 5d, stage 6
        heads = range(len(self.side)) if side_outputs else range(1)
        mattes = [torch.sigmoid(_resize_to(self.side[i](decoded[i]), x)) for i in heads]
        return mattes if side_outputs else mattes[0]


def conv_layers(model: nn.Module) -> list[nn.Conv2d]:
    """The model's convolutions in execution order (the order the ONNX export lists them)."""
    order: list[nn.Conv2d] = []
    hooks = [
        m.register_forward_pre_hook(lambda mod, _: order.append(mod))
        for m in model.modules()
        if isinstance(m, nn.Conv2d)
    ]
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, 64, 64), side_outputs=True)
    finally:
        for hook in hooks:
            hook.remove()
    return order
