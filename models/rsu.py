"""The RSU ("residual U") block that IS-Net and U²-Net share, and the conv order of a network.

Both networks come from the same authors and are published as batch-norm-folded ONNX exports:
every conv carries its own bias, and there is no BatchNorm layer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["RSU", "conv_layers", "resize_to", "u_pass"]


def resize_to(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
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


class RSU(nn.Module):
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
            h = layer(torch.cat([resize_to(h, skip), skip], dim=1))
        return h + x_in


def u_pass(encoder: nn.ModuleList, decoder: nn.ModuleList, h: torch.Tensor) -> list[torch.Tensor]:
    """The U-shaped pass both IS-Net and U²-Net share: encoder stages with 2x max-pooling between
    them, then decoder stages each reading the upsampled deeper output beside its skip. Returns
    the decoder outputs 1d, 2d, ... then the deepest encoder stage's output."""
    feats = []
    for i, stage in enumerate(encoder):
        if i > 0:
            h = F.max_pool2d(h, 2, stride=2, ceil_mode=True)
        h = stage(h)
        feats.append(h)
    decoded = [feats[-1]]  # deepest first
    for stage, skip in zip(decoder, reversed(feats[:-1]), strict=True):
        h = stage(torch.cat([resize_to(h, skip), skip], dim=1))
        decoded.append(h)
    decoded.reverse()
    return decoded


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
