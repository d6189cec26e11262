"""A model's input: an sRGB image resized and normalised as its spec says (N x 3 x S x S).

Below both the Segment stage (transforms/inference.py), which feeds every batch through it,
and the int8 calibration (models/quantize.py), which must see the same tensors the model will.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

if TYPE_CHECKING:
    from matteflow.models.registry import ModelSpec

__all__ = ["preprocess"]


def preprocess(
    rgb: np.ndarray, spec: ModelSpec, device: torch.device, size: int = 0
) -> torch.Tensor:
    """H x W x 3 uint8 -> 3 x S x S float32 normalised per the spec (resize on `device`).

    S is `size`, or the spec's input size when 0. With `spec.resize` "bilinear" the uint8
    pixels travel to the device (from pinned memory, without blocking, on CUDA) and are
    resized and normalised there; a side over twice S is first shrunk by an integer box filter
    (Pillow's reduce), which bounds memory on very large images and keeps the bilinear step
    from aliasing. With "lanczos", Pillow resizes on the CPU. RGB is then scaled to [0, 1] by
    255 or by the resized image's own maximum (`spec.divide_by`).
    """
    size = size or spec.input_size
    if spec.resize == "lanczos":
        rgb = np.array(Image.fromarray(rgb).resize((size, size), Image.Resampling.LANCZOS))
    else:
        factors = tuple(max(1, side // (2 * size)) for side in (rgb.shape[1], rgb.shape[0]))
        if factors != (1, 1):
            rgb = np.array(Image.fromarray(rgb).reduce(factors))
    x = torch.from_numpy(np.ascontiguousarray(rgb))
    if device.type == "cuda":
        x = x.pin_memory()
    x = x.to(device, non_blocking=True)
    x = x.permute(2, 0, 1).unsqueeze(0).float().div_(255.0)
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    if spec.divide_by == "max":
        x = x / x.max().clamp_min(1e-6)
    mean = torch.tensor(spec.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, device=device).view(1, 3, 1, 1)
    return ((x - mean) / std)[0]
