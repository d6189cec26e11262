"""The model registry: configs/models.toml entries as frozen specs, and `load`, the only way in.

`load(name, device, dtype)` builds the network, fills it with sha256-verified weights and
returns a `LoadedModel` that maps a normalised N x 3 x S x S batch to N x 1 x S x S alpha.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import tomllib
from dataclasses import dataclass, fields
from typing import Any, Literal

import torch
from safetensors.torch import load_file
from torch import nn

from matteflow.models.isnet import ISNet
from matteflow.models.weights import native_weights

__all__ = [
    "DTYPES",
    "LicenseError",
    "LoadedModel",
    "ModelSpec",
    "RegistryError",
    "build_network",
    "check",
    "get_spec",
    "load",
    "register",
    "resolve_dtype",
    "specs",
]

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


class RegistryError(ValueError):
    """Unknown model, malformed registry entry, duplicate registration or unusable device."""


class LicenseError(RegistryError):
    """The model's commercial use is not established and the run requires it."""


@dataclass(frozen=True)
class ModelSpec:
    """One registry entry; field meanings are documented at the top of configs/models.toml."""

    name: str
    arch: Literal["isnet"]
    width: int
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    output: Literal["alpha"]
    file: str
    format: Literal["onnx", "random"]
    sources: tuple[str, ...]
    weights_license: str
    distribution: str
    commercial_use: Literal["yes", "no", "unclear"]
    reference: str
    sha256: str = ""
    size: int = 0
    seed: int = 0

    @classmethod
    def from_toml(cls, name: str, table: dict[str, Any]) -> ModelSpec:
        """Parse one models.toml table; raises RegistryError naming the bad field."""
        known = {f.name for f in fields(cls)} - {"name"}
        unknown = set(table) - known
        if unknown:
            raise RegistryError(f"models.toml [{name}]: unknown keys {sorted(unknown)}")
        values = dict(table)
        for key in ("mean", "std", "sources"):
            if key in values:
                values[key] = tuple(values[key])
        try:
            spec = cls(name=name, **values)
        except TypeError as err:
            raise RegistryError(f"models.toml [{name}]: {err}") from None
        if spec.input_size % 32:
            raise RegistryError(f"models.toml [{name}].input_size: must be a multiple of 32")
        if spec.format == "onnx" and len(spec.sha256) != 64:
            raise RegistryError(f"models.toml [{name}].sha256: expected 64 hex digits")
        if spec.commercial_use not in ("yes", "no", "unclear"):
            raise RegistryError(f"models.toml [{name}].commercial_use: yes | no | unclear")
        return spec


_REGISTRY: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> None:
    """Add a spec; a second spec under the same name raises RegistryError."""
    if spec.name in _REGISTRY:
        raise RegistryError(f"model {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec


def specs() -> dict[str, ModelSpec]:
    """All registered specs by name (the packaged models.toml is read on first use)."""
    if not _REGISTRY:
        text = importlib.resources.files("matteflow.configs").joinpath("models.toml").read_text()
        for name, table in tomllib.loads(text).items():
            register(ModelSpec.from_toml(name, table))
    return dict(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    """The spec registered under name; raises RegistryError listing the known names."""
    known = specs()
    if name not in known:
        raise RegistryError(
            f"unknown model {name!r}; known models: {', '.join(sorted(known))}"
            " (see `matteflow models list`)"
        )
    return known[name]


def build_network(spec: ModelSpec) -> nn.Module:
    """The spec's architecture with default initialisation (seeded for format 'random')."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        return ISNet(width=spec.width)


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """A network ready for inference, with what produced it."""

    spec: ModelSpec
    network: nn.Module
    device: torch.device
    dtype: torch.dtype
    weights_sha256: str
    channels_last: bool

    @property
    def dtype_name(self) -> str:
        """The compute dtype as written to metrics ('float32', 'bfloat16', 'float16')."""
        return str(self.dtype).removeprefix("torch.")

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        """N x 3 x S x S normalised float32 on self.device -> N x 1 x S x S float32 alpha."""
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        autocast = torch.autocast(
            self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32
        )
        with torch.inference_mode(), autocast:
            return self.network(batch).float().clamp(0.0, 1.0)


def check(
    name: str,
    device: str,
    dtype: str,
    *,
    require_commercial_license: bool = False,
    device_here: bool = True,
) -> ModelSpec:
    """The spec of `name` once licence, dtype and device allow a load; raises otherwise.

    `device_here` = False checks the device's name but not its presence (a launcher whose
    workers, not itself, have the GPU). Raises RegistryError (unknown name, bad dtype or
    device, absent device) or LicenseError.
    """
    spec = get_spec(name)
    if require_commercial_license and spec.commercial_use != "yes":
        raise LicenseError(
            f"model {name!r}: commercial use is {spec.commercial_use!r} and the run sets"
            f" require_commercial_license = true. Weights licence: {spec.weights_license}."
            f" Distribution: {spec.distribution}. Use a model whose commercial use is"
            " established, or clear this one with its rights holders first."
        )
    if dtype != "auto" and dtype not in DTYPES:
        raise RegistryError(f"dtype {dtype!r}: expected auto or one of {', '.join(DTYPES)}")
    try:
        target = torch.device(device)
    except RuntimeError:
        raise RegistryError(f"device {device!r}: expected cpu, cuda or cuda:N") from None
    if device_here and target.type == "cuda" and not torch.cuda.is_available():
        raise RegistryError(f"device {device!r} requested but no CUDA device is available")
    return spec


def resolve_dtype(dtype: str, device: torch.device) -> str:
    """The dtype "auto" stands for on `device`: bfloat16 where the device computes it natively
    (CPUs with AVX-512 BF16 or AMX, CUDA GPUs from Ampere on), else float16 on CUDA and float32
    on CPU. Any other name is returned as it is."""
    if dtype != "auto":
        return dtype
    if device.type == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported(including_emulation=False) else "float16"
    return "bfloat16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "float32"


def load(
    name: str,
    device: str = "cpu",
    dtype: str = "float32",
    *,
    channels_last: bool = False,
    require_commercial_license: bool = False,
) -> LoadedModel:
    """Build model `name` with verified weights on `device`, computing in `dtype`.

    Weights stay float32; dtype bfloat16/float16 runs the forward pass under autocast, and
    "auto" picks one (`resolve_dtype`). Raises what `check` raises, and WeightsError when no
    verified weights can be had.
    """
    spec = check(name, device, dtype, require_commercial_license=require_commercial_license)
    target = torch.device(device)
    dtype = resolve_dtype(dtype, target)
    network = build_network(spec)
    if spec.format == "onnx":
        state = load_file(str(native_weights(spec)))
        network.load_state_dict(state, strict=True)
        sha = spec.sha256
    else:
        digest = hashlib.sha256()
        for key, tensor in sorted(network.state_dict().items()):
            digest.update(key.encode())
            digest.update(tensor.numpy().tobytes())
        sha = digest.hexdigest()
    network = network.eval().to(target)
    if channels_last:
        network = network.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return LoadedModel(spec, network, target, DTYPES[dtype], sha, channels_last)
