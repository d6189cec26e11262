"""The architecture seam: registered networks by name, built seeded, duplicates refused."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from matteflow.models import architectures
from matteflow.models.architectures import (
    ArchitectureError,
    get_architecture,
    register_architecture,
)
from matteflow.models.isnet import ISNet
from matteflow.models.registry import RegistryError, build_network, get_spec
from matteflow.models.u2net import U2NetP


def test_the_native_architectures_are_registered_by_their_modules() -> None:
    assert get_architecture("isnet").network is ISNet
    assert get_architecture("u2netp").network is U2NetP


def test_build_network_picks_by_spec_arch() -> None:
    assert isinstance(build_network(get_spec("u2netp")), U2NetP)
    assert isinstance(build_network(get_spec("tiny-isnet")), ISNet)


def test_build_is_seeded_and_leaves_the_global_rng_alone() -> None:
    torch.manual_seed(7)
    expected = torch.rand(2)
    torch.manual_seed(7)
    a = get_architecture("u2netp").build(width=4, seed=1)
    b = get_architecture("u2netp").build(width=4, seed=1)
    torch.testing.assert_close(torch.rand(2), expected, rtol=0, atol=0)
    for key, value in a.state_dict().items():
        torch.testing.assert_close(value, b.state_dict()[key], rtol=0, atol=0)


def test_a_second_registration_under_one_name_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(architectures, "_ARCHITECTURES", dict(architectures.architectures()))

    class Other(nn.Module):
        def __init__(self, width: int = 1) -> None:
            super().__init__()

    with pytest.raises(ArchitectureError, match="'isnet' is already registered"):
        register_architecture("isnet")(Other)
    register_architecture("other")(Other)
    assert get_architecture("other").network is Other


def test_unknown_architecture_lists_the_known() -> None:
    with pytest.raises(ArchitectureError, match="unknown architecture 'nope'; known: isnet"):
        get_architecture("nope")


def test_a_spec_whose_arch_vanished_raises_a_registry_error() -> None:
    import dataclasses

    spec = dataclasses.replace(get_spec("tiny-isnet"), arch="gone")
    with pytest.raises(RegistryError, match="'tiny-isnet': unknown architecture 'gone'"):
        build_network(spec)
