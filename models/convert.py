"""ONNX export -> native weights: maps a batch-norm-folded ONNX file's conv initializers onto
a native network (IS-Net, U²-Net-p: any whose convs all run in `conv_layers` order).

The export lists its Conv nodes in graph order, which is the order the native module runs its
convolutions; each node's weight and bias initializers are copied across with their shapes and
conv attributes checked. The result is written as safetensors (never a pickle).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from safetensors.torch import save_file
from torch import nn

from matteflow.models.architectures import get_architecture
from matteflow.models.rsu import conv_layers

__all__ = ["ConversionError", "convert_onnx", "onnx_state_dict"]


class ConversionError(ValueError):
    """The ONNX file does not have the structure of the target network."""


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def onnx_state_dict(onnx_path: Path, model: nn.Module) -> dict[str, torch.Tensor]:
    """Return `model`'s state dict (float32) filled from the ONNX file's conv initializers.

    Raises ConversionError naming the first conv whose count, shape, stride or dilation differ.
    """
    graph = onnx.load(str(onnx_path)).graph
    inits = {t.name: t for t in graph.initializer}
    nodes = [n for n in graph.node if n.op_type == "Conv"]
    convs = conv_layers(model)
    if len(nodes) != len(convs):
        raise ConversionError(
            f"{onnx_path}: {len(nodes)} Conv nodes, the native network has {len(convs)}"
        )
    names = {id(m): name for name, m in model.named_modules()}
    state: dict[str, torch.Tensor] = {}
    for node, conv in zip(nodes, convs, strict=True):
        attrs = _attrs(node)
        where = f"{onnx_path}: Conv node {node.name!r}"
        # Padding and groups change the result as much as stride and dilation do.
        found = {
            "strides": list(attrs.get("strides", [1, 1])),
            "dilations": list(attrs.get("dilations", [1, 1])),
            "pads": list(attrs.get("pads", [0, 0, 0, 0])),
            "group": attrs.get("group", 1),
            "auto_pad": attrs.get("auto_pad", b"NOTSET"),
        }
        needed = {
            "strides": list(conv.stride),
            "dilations": list(conv.dilation),
            "pads": [*conv.padding, *conv.padding],
            "group": conv.groups,
            "auto_pad": b"NOTSET",
        }
        if found != needed:
            raise ConversionError(
                f"{where}: conv attributes {found}, the native network needs {needed}"
            )
        if len(node.input) != 3:
            raise ConversionError(f"{where}: expected weight and bias inputs")
        prefix = names[id(conv)]
        for param, init_name in (("weight", node.input[1]), ("bias", node.input[2])):
            if init_name not in inits:
                raise ConversionError(f"{where}: initializer {init_name!r} missing")
            array = numpy_helper.to_array(inits[init_name]).astype(np.float32)
            expected = tuple(getattr(conv, param).shape)
            if array.shape != expected:
                raise ConversionError(
                    f"{where}: {param} shape {array.shape}, the native network needs {expected}"
                )
            state[f"{prefix}.{param}"] = torch.from_numpy(array)
    return state


def convert_onnx(
    onnx_path: Path,
    out_path: Path,
    metadata: dict[str, str] | None = None,
    arch: str = "isnet",
    width: int = 1,
) -> Path:
    """Import an ONNX export's weights into architecture `arch` and write them as safetensors
    at out_path (atomically). Raises ConversionError, or ArchitectureError for an unknown arch."""
    architecture = get_architecture(arch)
    state = architecture.import_weights(onnx_path, architecture.build(width))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.{os.getpid()}.tmp")
    save_file(state, str(tmp), metadata=metadata or {})
    tmp.replace(out_path)
    return out_path
