"""IS-Net (Qin et al., "Highly Accurate Dichotomous Image Segmentation", ECCV 2022) for inference.

The network in the batch-norm-folded form of its ONNX export. The encoder/decoder is a U-Net
of RSU blocks (models/rsu.py); six side heads predict the matte at decreasing resolution, and
head 1 is the output.
"""

from __future__ import annotations

import torch
from torch import nn

from matteflow.models.architectures import register_architecture
from matteflow.models.rsu import RSU, conv_layers, resize_to, u_pass

__all__ = ["ISNet", "conv_layers"]


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


@register_architecture("isnet")
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
        self.encoder = nn.ModuleList([RSU(d, ch(i), ch(m), ch(o), f) for d, i, m, o, f in _ENCODER])
        self.decoder = nn.ModuleList([RSU(d, ch(i), ch(m), ch(o), f) for d, i, m, o, f in _DECODER])
        # Side heads 1..6 read decoder outputs 1d..5d and encoder stage 6.
        side_in = [ch(64), ch(64), ch(128), ch(256), ch(512), ch(512)]
        self.side = nn.ModuleList([nn.Conv2d(c, 1, 3, padding=1) for c in side_in])

    def forward(
        self, x: torch.Tensor, side_outputs: bool = False
    ) -> torch.Tensor | list[torch.Tensor]:
        h = self.conv_in(x)  # stride 2; the reference defines pool_in but never applies it
        decoded = u_pass(self.encoder, self.decoder, h)  # 1d, 2d, 3d, 4d, 5d, stage 6
        heads = range(len(self.side)) if side_outputs else range(1)
        mattes = [torch.sigmoid(resize_to(self.side[i](decoded[i]), x)) for i in heads]
        return mattes if side_outputs else mattes[0]
