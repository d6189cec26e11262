"""The model registry: names, models.toml parsing, licence gate, devices, the tiny model."""

from __future__ import annotations

import dataclasses
import importlib.resources
import tomllib
from typing import Any

import pytest
import torch

from matteflow.models import registry
from matteflow.models.registry import (
    LicenseError,
    ModelSpec,
    RegistryError,
    check,
    get_spec,
    load,
    register,
    resolve_dtype,
    specs,
)

_PACKAGED = importlib.resources.files("matteflow.configs").joinpath("models.toml")


def _tiny_table() -> dict[str, Any]:
    """The packaged tiny-isnet table, as models.toml spells it."""
    return dict(tomllib.loads(_PACKAGED.read_text())["tiny-isnet"])


@pytest.fixture
def scratch_registry(monkeypatch: pytest.MonkeyPatch) -> dict[str, ModelSpec]:
    """A copy of the registry that the test may add to; the real one is restored after."""
    specs()  # read the packaged models.toml first
    copy = dict(registry._REGISTRY)
    monkeypatch.setattr(registry, "_REGISTRY", copy)
    return copy


# --- names ---------------------------------------------------------------------------------


def test_packaged_registry_has_both_models() -> None:
    known = specs()
    assert {"isnet-general-use", "tiny-isnet"} <= set(known)
    isnet = known["isnet-general-use"]
    assert isnet.input_size == 1024
    assert isnet.mean == (0.5, 0.5, 0.5)
    assert isnet.std == (1.0, 1.0, 1.0)
    assert isnet.file == "isnet-general-use-fp16.onnx"
    assert len(isnet.sha256) == 64
    assert isinstance(isnet.sources, tuple)


def test_specs_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        get_spec("tiny-isnet").input_size = 32  # type: ignore[misc]


def test_unknown_model_names_the_known_ones() -> None:
    with pytest.raises(RegistryError, match="unknown model 'isnet-nope'") as info:
        get_spec("isnet-nope")
    message = str(info.value)
    assert "isnet-general-use" in message
    assert "tiny-isnet" in message
    assert "matteflow models list" in message


def test_load_of_unknown_model_raises_registry_error() -> None:
    with pytest.raises(RegistryError, match=r"known models: .*tiny-isnet"):
        load("isnet-nope")


def test_duplicate_registration_raises(scratch_registry: dict[str, ModelSpec]) -> None:
    with pytest.raises(RegistryError, match="'tiny-isnet' is already registered"):
        register(get_spec("tiny-isnet"))
    extra = dataclasses.replace(get_spec("tiny-isnet"), name="tiny-isnet-2")
    register(extra)
    assert get_spec("tiny-isnet-2") is extra
    with pytest.raises(RegistryError, match="'tiny-isnet-2' is already registered"):
        register(dataclasses.replace(extra, seed=1))
    assert get_spec("tiny-isnet-2") is extra  # the first registration stands


# --- models.toml parsing -------------------------------------------------------------------


def test_tiny_table_parses() -> None:
    assert ModelSpec.from_toml("tiny-isnet", _tiny_table()) == get_spec("tiny-isnet")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"colour": "red"}, r"\[tiny\]: unknown keys \['colour'\]"),
        ({"name": "other"}, r"\[tiny\]: unknown keys \['name'\]"),
        ({"input_size": None}, r"\[tiny\]: .*missing .*'input_size'"),
        ({"input_size": 100}, r"\[tiny\]\.input_size: must be a multiple of 32"),
        ({"format": "onnx", "sha256": "abc"}, r"\[tiny\]\.sha256: expected 64 hex digits"),
        ({"licence_class": "maybe"}, r"\[tiny\]\.licence_class: permissive \| copyleft \|"),
        ({"engine": "tf"}, r"\[tiny\]\.engine: torch \| onnxruntime"),
        ({"arch": "birefnet"}, r"\[tiny\]\.arch: 'birefnet' is no native architecture"),
        ({"foreground": "fgr"}, r"\[tiny\]: foreground, constants and input are onnxruntime"),
        ({"engine": "onnxruntime"}, r"\[tiny\]\.format: onnxruntime needs \"onnx\""),
    ],
    ids=[
        "unknown-key",
        "name-key",
        "missing-key",
        "input-size",
        "sha256",
        "licence-class",
        "engine",
        "arch",
        "torch-foreground",
        "ort-random",
    ],
)
def test_bad_toml_entry_raises(change: dict[str, Any], message: str) -> None:
    table = _tiny_table()
    for key, value in change.items():
        if value is None:
            del table[key]
        else:
            table[key] = value
    with pytest.raises(RegistryError, match=message):
        ModelSpec.from_toml("tiny", table)


def test_unknown_key_in_a_models_toml_stops_the_registry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The packaged file is read on first use; a typo there must fail loudly, not be dropped.
    text = _PACKAGED.read_text().replace("seed = 0", "seed = 0\nsead = 1")
    monkeypatch.setattr(registry, "_REGISTRY", {})

    class _Files:
        def joinpath(self, name: str) -> _Files:
            return self

        def read_text(self) -> str:
            return text

    monkeypatch.setattr(registry.importlib.resources, "files", lambda package: _Files())
    with pytest.raises(RegistryError, match=r"\[tiny-isnet\]: unknown keys \['sead'\]"):
        specs()


# --- licence gate --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["isnet-general-use", "rvm-mobilenetv3"])
def test_permissive_only_refuses_unclear_and_copyleft_naming_u2netp(name: str) -> None:
    spec = get_spec(name)
    with pytest.raises(LicenseError) as info:
        load(name, allow_licences=("permissive",))
    message = str(info.value)
    assert f"model {name!r}: licence class {spec.licence_class!r}" in message
    assert "allows only permissive" in message
    assert spec.distribution in message  # the facts are part of the reason
    assert "Use 'u2netp' instead (--model u2netp)" in message  # the allowed alternative


def test_isnet_refusal_gives_both_licence_facts() -> None:
    with pytest.raises(LicenseError, match=r"AGPL-3\.0") as info:
        check("isnet-general-use", "cpu", "auto", allow_licences=("permissive",))
    assert "xuebinqin/DIS" in str(info.value)


def test_permissive_only_accepts_u2netp() -> None:
    assert check("u2netp", "cpu", "auto", allow_licences=("permissive",)).name == "u2netp"


def test_an_alternative_for_the_same_task_comes_first() -> None:
    with pytest.raises(LicenseError, match=r"Use 'rvm-mobilenetv3' instead"):
        check("isnet-general-use", "cpu", "auto", allow_licences=("copyleft",))


def test_no_allowed_model_says_so() -> None:
    with pytest.raises(LicenseError, match="No registered model has an allowed class"):
        check("u2netp", "cpu", "auto", allow_licences=("non-commercial",))


def test_licence_error_is_a_registry_error() -> None:
    assert issubclass(LicenseError, RegistryError)


def test_the_packaged_zoo_has_its_licence_classes() -> None:
    classes = {name: get_spec(name).licence_class for name in specs()}
    assert classes == {
        "isnet-general-use": "unclear",
        "u2netp": "permissive",
        "rvm-mobilenetv3": "copyleft",
        "tiny-isnet": "permissive",
    }


# --- the tiny model ------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 3])
def test_tiny_isnet_maps_batch_to_alpha(n: int) -> None:
    model = load("tiny-isnet")
    size = model.spec.input_size
    y = model(torch.rand(n, 3, size, size) - 0.5)
    assert y.shape == (n, 1, size, size)
    assert y.dtype == torch.float32
    assert 0.0 <= float(y.min()) <= float(y.max()) <= 1.0
    assert model.device == torch.device("cpu")
    assert model.dtype_name == "float32"


def test_tiny_isnet_is_deterministic() -> None:
    first, second = load("tiny-isnet"), load("tiny-isnet")
    assert first.weights_sha256 == second.weights_sha256
    assert len(first.weights_sha256) == 64
    x = torch.rand(2, 3, 64, 64) - 0.5
    torch.testing.assert_close(first(x), second(x), rtol=0, atol=0)


def test_load_leaves_the_global_rng_alone() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    load("tiny-isnet")
    torch.testing.assert_close(torch.rand(3), expected, rtol=0, atol=0)


def test_bfloat16_runs_under_autocast_and_returns_float32() -> None:
    model = load("tiny-isnet", dtype="bfloat16", channels_last=True)
    assert model.dtype_name == "bfloat16"
    y = model(torch.rand(1, 3, 64, 64) - 0.5)
    assert y.dtype == torch.float32
    assert y.shape == (1, 1, 64, 64)


# --- devices and dtypes --------------------------------------------------------------------


def test_cuda_without_cuda_raises_registry_error() -> None:
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(RegistryError, match="device 'cuda' requested but no CUDA device"):
        load("tiny-isnet", device="cuda")
    with pytest.raises(RegistryError, match="device 'cuda:1' requested"):
        load("tiny-isnet", device="cuda:1")


def test_unknown_dtype_raises_registry_error() -> None:
    with pytest.raises(
        RegistryError,
        match="dtype 'int4': expected auto or one of float32, bfloat16, float16, int8",
    ):
        load("tiny-isnet", dtype="int4")


def test_auto_dtype_is_what_this_machine_computes_natively() -> None:
    cpu = torch.device("cpu")
    native = "bfloat16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "float32"
    assert resolve_dtype("auto", cpu) == native
    assert load("tiny-isnet", dtype="auto").dtype_name == native
    assert [resolve_dtype(d, cpu) for d in ("float32", "float16")] == ["float32", "float16"]


def test_a_launcher_checks_a_remote_device_by_name_only() -> None:
    assert check("tiny-isnet", "cuda:0", "auto", device_here=False).name == "tiny-isnet"
    with pytest.raises(RegistryError, match="device 'gpu': expected cpu, cuda or cuda:N"):
        check("tiny-isnet", "gpu", "auto", device_here=False)


def test_auto_means_float32_for_a_model_that_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = dataclasses.replace(get_spec("tiny-isnet"), name="tiny-fp32", auto_dtype="float32")
    monkeypatch.setitem(registry._REGISTRY, spec.name, spec)
    assert load("tiny-fp32", dtype="auto").dtype_name == "float32"
    assert load("tiny-fp32", dtype="bfloat16").dtype_name == "bfloat16"  # asked for: honoured
    assert get_spec("u2netp").auto_dtype == "float32"
    assert get_spec("isnet-general-use").auto_dtype == "reduced"
