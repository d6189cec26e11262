"""The architecture seam: registered networks by name, built seeded, duplicates refused."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
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
    spec = dataclasses.replace(get_spec("tiny-isnet"), arch="gone")
    with pytest.raises(RegistryError, match="'tiny-isnet': unknown architecture 'gone'"):
        build_network(spec)


@pytest.mark.parametrize("name", ["tiny-isnet", "u2netp"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_a_network_built_from_a_weights_file_computes_what_the_filled_one_does(
    name: str, channels_last: bool, tmp_path: Path
) -> None:
    spec = dataclasses.replace(get_spec(name), width=8, seed=3)
    initialised = build_network(spec).eval()  # the old way: random init, then weights over it
    state = {k: v + 0.01 for k, v in initialised.state_dict().items()}  # not the init's values
    path = tmp_path / "w.safetensors"
    save_file(state, str(path))
    initialised.load_state_dict(state, strict=True)
    built = build_network(spec, path, channels_last=channels_last).eval()
    tensors = [*built.parameters(), *built.buffers()]
    assert not any(t.is_meta for t in tensors)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    assert all(t.is_contiguous(memory_format=layout) for t in tensors if t.dim() == 4)
    for key, value in built.state_dict().items():
        assert torch.equal(value, state[key]), key
    if channels_last:
        initialised = initialised.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        assert torch.equal(built(x), initialised(x))


def test_a_weights_file_missing_a_tensor_is_refused(tmp_path: Path) -> None:
    spec = get_spec("tiny-isnet")
    state = build_network(spec).state_dict()
    path = tmp_path / "w.safetensors"
    save_file({k: v for k, v in state.items() if k != "conv_in.bias"}, str(path))
    with pytest.raises(RuntimeError, match=r"Missing key.*conv_in\.bias"):
        build_network(spec, path)
