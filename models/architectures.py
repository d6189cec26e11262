"""The architecture seam: each network module registers itself here under the name that
configs/models.toml's `arch` uses, with how to build it and how to import published weights.

Adding an architecture = one module that decorates its network class with
`@register_architecture("name")`, listed in _MODULES, plus a models.toml entry.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import torch
from torch import nn

__all__ = [
    "Architecture",
    "ArchitectureError",
    "WeightsImporter",
    "architectures",
    "get_architecture",
    "register_architecture",
]

# The modules that register architectures; imported on first use of the registry.
_MODULES = ("matteflow.models.isnet", "matteflow.models.u2net")

WeightsImporter = Callable[[Path, nn.Module], dict[str, torch.Tensor]]
_Network = TypeVar("_Network", bound=type[nn.Module])


class ArchitectureError(ValueError):
    """Unknown architecture, or a second registration under one name."""


def _by_conv_order(onnx_path: Path, network: nn.Module) -> dict[str, torch.Tensor]:
    from matteflow.models.convert import onnx_state_dict

    return onnx_state_dict(onnx_path, network)


@dataclass(frozen=True)
class Architecture:
    """A native network: `network(width=w)` builds it; `import_weights(onnx, net)` maps a
    published ONNX export onto `net`'s state dict (default: conv initializers by node order)."""

    name: str
    network: Callable[..., nn.Module]
    import_weights: WeightsImporter = _by_conv_order

    def build(self, width: int = 1, seed: int = 0) -> nn.Module:
        """The network with default initialisation, seeded (the global RNG is left alone)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.network(width=width)

    def skeleton(self, width: int = 1) -> nn.Module:
        """The network with its tensors on the meta device: no memory, no initialisation, to be
        filled by `load_state_dict(..., assign=True)` (the random init that loaded weights
        replace took 0.3-0.9 s for IS-Net here)."""
        with torch.device("meta"):
            return self.network(width=width)


_ARCHITECTURES: dict[str, Architecture] = {}


def register_architecture(
    name: str, import_weights: WeightsImporter = _by_conv_order
) -> Callable[[_Network], _Network]:
    """Class decorator: register the network class under `name` (a duplicate raises)."""

    def add(network: _Network) -> _Network:
        if name in _ARCHITECTURES:
            raise ArchitectureError(f"architecture {name!r} is already registered")
        _ARCHITECTURES[name] = Architecture(name, network, import_weights)
        return network

    return add


def architectures() -> dict[str, Architecture]:
    """Every registered architecture by name (the network modules are imported first)."""
    for module in _MODULES:
        importlib.import_module(module)
    return dict(_ARCHITECTURES)


def get_architecture(name: str) -> Architecture:
    """The architecture registered under `name`; raises ArchitectureError listing the known."""
    known = architectures()
    if name not in known:
        raise ArchitectureError(f"unknown architecture {name!r}; known: {', '.join(sorted(known))}")
    return known[name]
