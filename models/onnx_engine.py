"""The onnxruntime engine: runs a registered ONNX file as published, for any model whose spec
says `engine = "onnxruntime"`.

The spec names the image input (default: the graph's first), the constant extra inputs (RVM's
recurrent states and downsample_ratio), the alpha output ("alpha" = the first) and an
optional foreground-colour output. A graph with a fixed batch of 1 runs image by image.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnxruntime as ort
import torch

if TYPE_CHECKING:
    from matteflow.models.registry import ModelSpec

__all__ = ["OnnxSession", "onnx_providers", "session_threads"]


def session_threads(threads: int) -> int:
    """Intra-op threads of one onnxruntime session: `threads` when set, else this machine's
    cores. Fixed per session (never onnxruntime's own spinning pool size), so that a run's
    thread use is what its worker count and profile say, as for torch."""
    return threads if threads > 0 else os.cpu_count() or 1


def onnx_providers(device: torch.device) -> list[str]:
    """Execution providers for `device`: CUDA (then CPU for unsupported ops) or CPU.

    Raises RuntimeError when CUDA is asked and this onnxruntime build has no CUDA provider.
    """
    if device.type != "cuda":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise RuntimeError(
            f"device {device} requested but onnxruntime has no CUDAExecutionProvider"
            " (install onnxruntime-gpu of the same version instead of onnxruntime)"
        )
    return ["CUDAExecutionProvider", "CPUExecutionProvider"]


class OnnxSession:
    """One onnxruntime session of a spec's ONNX file, called like a network:
    N x 3 x S x S float32 (normalised per the spec) -> (alpha N x 1 x S x S, foreground
    N x 3 x S x S or None), both float32 on the input's device."""

    def __init__(self, path: Path, spec: ModelSpec, device: torch.device, threads: int = 0):
        options = ort.SessionOptions()
        options.intra_op_num_threads = session_threads(threads)
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3  # warnings about unused initializers are noise here
        provider_options: list[dict[str, str]] = []
        if device.type == "cuda":
            provider_options = [{"device_id": str(device.index or 0)}, {}]
        self.session = ort.InferenceSession(
            str(path),
            sess_options=options,
            providers=onnx_providers(device),
            provider_options=provider_options or None,
        )
        inputs = self.session.get_inputs()
        outputs = [o.name for o in self.session.get_outputs()]
        self.input = spec.input or inputs[0].name
        self.alpha = outputs[0] if spec.output == "alpha" else spec.output
        self.foreground = spec.foreground or None
        self.constants = {
            name: np.asarray(value, dtype=np.float32) for name, value in spec.constants
        }
        wanted = {self.alpha, *([self.foreground] if self.foreground else [])}
        missing = (wanted - set(outputs)) | (
            {self.input, *self.constants} - {i.name for i in inputs}
        )
        if missing:
            raise ValueError(f"{path}: the graph has no input or output {sorted(missing)}")
        batch_dim = next(i.shape[0] for i in inputs if i.name == self.input)
        self.one_at_a_time = batch_dim == 1  # a fixed batch of 1 in the export

    def _run(self, x: np.ndarray) -> list[np.ndarray]:
        names = [self.alpha, *([self.foreground] if self.foreground else [])]
        try:
            return self.session.run(names, {self.input: x, **self.constants})
        except Exception as err:
            # onnxruntime's allocation failures are no RuntimeError or MemoryError; say what they
            # are, so that the handler splits the batch and classifies a lone image as oom.
            if "failed to allocate memory" in str(err).lower():
                raise MemoryError(f"onnxruntime: {err}") from err
            raise

    def __call__(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = batch.detach().float().cpu().numpy()
        if self.one_at_a_time:
            runs = [self._run(x[i : i + 1]) for i in range(len(x))]
            results = [np.concatenate(parts) for parts in zip(*runs, strict=True)]
        else:
            results = self._run(x)
        alpha = torch.from_numpy(np.ascontiguousarray(results[0])).to(batch.device)
        foreground = None
        if self.foreground:
            foreground = torch.from_numpy(np.ascontiguousarray(results[1])).to(batch.device)
        return alpha.float(), foreground
