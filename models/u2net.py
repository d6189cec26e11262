"""U²-Net-p (Qin et al., "U²-Net: Going Deeper with Nested U-Structure for Salient Object
Detection", Pattern Recognition 2020), the 4.7 MB variant, for inference.

The same RSU blocks as IS-Net (models/rsu.py) in the batch-norm-folded form of the published
ONNX export; registered as architecture "u2netp", weights imported by conv order.
"""

from __future__ import annotations

import torch
from torch import nn

from matteflow.models.architectures import register_architecture
from matteflow.models.rsu import RSU, resize_to, u_pass

__all__ = ["U2NetP"]

# (depth, in, mid, out, dilated) per stage; encoder stages 1..6, decoder 5d..1d.
_ENCODER = [
    (7, 3, 16, 64, False),
    (6, 64, 16, 64, False),
    (5, 64, 16, 64, False),
    (4, 64, 16, 64, False),
    (4, 64, 16, 64, True),
    (4, 64, 16, 64, True),
]
_DECODER = [
    (4, 128, 16, 64, True),
    (4, 128, 16, 64, False),
    (5, 128, 16, 64, False),
    (6, 128, 16, 64, False),
    (7, 128, 16, 64, False),
]


@register_architecture("u2netp")
class U2NetP(nn.Module):
    """U²-Net-p salient-object network.

    Input: N x 3 x S x S normalised RGB. Output: N x 1 x S x S, the sigmoid of the fused map
    (a 1x1 conv over the six side maps), or with `side_outputs=True` the fused map then the
    six side maps. `width` divides every channel count (1 = the published network).
    """

    def __init__(self, width: int = 1) -> None:
        super().__init__()

        def ch(c: int) -> int:
            return c if c == 3 else max(1, c // width)

        self.encoder = nn.ModuleList([RSU(d, ch(i), ch(m), ch(o), f) for d, i, m, o, f in _ENCODER])
        self.decoder = nn.ModuleList([RSU(d, ch(i), ch(m), ch(o), f) for d, i, m, o, f in _DECODER])
        self.side = nn.ModuleList([nn.Conv2d(ch(64), 1, 3, padding=1) for _ in range(6)])
        self.fuse = nn.Conv2d(6, 1, 1)

    def forward(
        self, x: torch.Tensor, side_outputs: bool = False
    ) -> torch.Tensor | list[torch.Tensor]:
        decoded = u_pass(self.encoder, self.decoder, x)  # 1d, 2d, 3d, 4d, 5d, stage 6
        # The export runs side heads 1..6 in this order, then the fusing conv.
        sides = [resize_to(head(d), x) for head, d in zip(self.side, decoded, strict=True)]
        fused = self.fuse(torch.cat(sides, dim=1))
        mattes = [torch.sigmoid(m) for m in (fused, *sides)]
        return mattes if side_outputs else mattes[0]
