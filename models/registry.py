"""The model registry: configs/models.toml entries (and the user's own models.toml) as frozen
specs, and `load`, the only way in.

`load(name, device, dtype)` builds the model on its engine (a native torch network picked by
`spec.arch` from models/architectures.py, or an onnxruntime session on the ONNX file itself),
fills it with sha256-verified weights and returns a `LoadedModel` that maps a normalised
N x 3 x S x S batch to N x 1 x S x S alpha (and, where the model gives it, foreground colour).
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import os
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal, NamedTuple

import torch
from safetensors.torch import load_file
from torch import nn

from matteflow.models.architectures import ArchitectureError, architectures, get_architecture
from matteflow.models.onnx_engine import OnnxSession, onnx_providers
from matteflow.models.quantize import int8_model
from matteflow.models.weights import native_weights, sha256_file, source_file, verified_sha256

__all__ = [
    "DTYPES",
    "ENGINES",
    "INT8",
    "LICENCE_CLASSES",
    "LicenseError",
    "LoadedModel",
    "ModelSpec",
    "Prediction",
    "RegistryError",
    "add_user_model",
    "build_network",
    "check",
    "check_licence",
    "config_dir",
    "get_spec",
    "load",
    "prepare",
    "register",
    "resolve_dtype",
    "specs",
    "strictest_licence",
    "user_registry",
]

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}
# int8: the published ONNX graph statically quantised on CPU (models/quantize.py), run by
# onnxruntime whatever the spec's engine.
INT8 = "int8"
ENGINES = ("torch", "onnxruntime")
# permissive: weights and every copy we fetch allow commercial use; copyleft: they do, under
# share-alike terms (GPL); non-commercial: they do not; unclear: no licence, or conflicting ones.
LICENCE_CLASSES = ("permissive", "copyleft", "non-commercial", "unclear")
_CHOICES: dict[str, tuple[str, ...]] = {
    "engine": ENGINES,
    "task": ("general", "human"),
    "format": ("onnx", "random"),
    "resize": ("bilinear", "lanczos"),
    "divide_by": ("255", "max"),
    "output_norm": ("none", "minmax"),
    "auto_dtype": ("reduced", "float32"),
    "licence_class": LICENCE_CLASSES,
}


class RegistryError(ValueError):
    """Unknown model, malformed registry entry, duplicate registration or unusable device."""


class LicenseError(RegistryError):
    """The model's licence class is not one the run allows."""


def _frozen(value: Any) -> Any:
    """Nested lists (a TOML array) as nested tuples, so a spec stays immutable."""
    return tuple(_frozen(v) for v in value) if isinstance(value, list) else value


@dataclass(frozen=True)
class ModelSpec:
    """One registry entry; field meanings are documented at the top of configs/models.toml."""

    name: str
    arch: str
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    file: str
    format: Literal["onnx", "random"]
    sources: tuple[str, ...]
    licence_class: Literal["permissive", "copyleft", "non-commercial", "unclear"]
    weights_license: str
    distribution: str
    reference: str
    engine: Literal["torch", "onnxruntime"] = "torch"
    task: Literal["general", "human"] = "general"
    width: int = 1
    resize: Literal["bilinear", "lanczos"] = "bilinear"
    divide_by: Literal["255", "max"] = "255"
    output: str = "alpha"
    output_norm: Literal["none", "minmax"] = "none"
    auto_dtype: Literal["reduced", "float32"] = "reduced"
    foreground: str = ""
    input: str = ""
    constants: tuple[tuple[str, Any], ...] = ()
    links: tuple[str, ...] = ()
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
        for key in ("mean", "std", "sources", "links"):
            if key in values:
                values[key] = tuple(values[key])
        if "constants" in values:
            values["constants"] = tuple(
                (k, _frozen(v)) for k, v in sorted(dict(values["constants"]).items())
            )
        try:
            spec = cls(name=name, **values)
        except TypeError as err:
            raise RegistryError(f"models.toml [{name}]: {err}") from None
        for key, allowed in _CHOICES.items():
            if getattr(spec, key) not in allowed:
                raise RegistryError(f"models.toml [{name}].{key}: {' | '.join(allowed)}")
        if spec.input_size % 32:
            raise RegistryError(f"models.toml [{name}].input_size: must be a multiple of 32")
        if spec.format == "onnx" and len(spec.sha256) != 64:
            raise RegistryError(f"models.toml [{name}].sha256: expected 64 hex digits")
        if spec.engine == "torch" and spec.arch not in architectures():
            raise RegistryError(
                f"models.toml [{name}].arch: {spec.arch!r} is no native architecture"
                f' ({", ".join(sorted(architectures()))}); engine = "onnxruntime" runs the'
                " ONNX file as it is"
            )
        if spec.engine == "torch" and (spec.foreground or spec.constants or spec.input):
            raise RegistryError(
                f"models.toml [{name}]: foreground, constants and input are onnxruntime settings"
            )
        if spec.engine == "onnxruntime" and spec.format != "onnx":
            raise RegistryError(f'models.toml [{name}].format: onnxruntime needs "onnx"')
        return spec


class Prediction(NamedTuple):
    """A model's answer for a batch: alpha N x 1 x S x S float32 in [0, 1], and foreground
    colour N x 3 x S x S float32 RGB in [0, 1] from models that predict it (else None)."""

    alpha: torch.Tensor
    foreground: torch.Tensor | None


def config_dir() -> Path:
    """The user's configuration directory: $MATTEFLOW_CONFIG_DIR or ~/.config/matteflow."""
    return Path(os.environ.get("MATTEFLOW_CONFIG_DIR") or Path.home() / ".config" / "matteflow")


def user_registry() -> Path:
    """The user's own models.toml (`matteflow models add` writes it), read after ours."""
    return config_dir() / "models.toml"


_REGISTRY: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> None:
    """Add a spec; a second spec under the same name raises RegistryError."""
    if spec.name in _REGISTRY:
        raise RegistryError(f"model {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec


def specs() -> dict[str, ModelSpec]:
    """All registered specs by name: the packaged models.toml, then the user's (read on first
    use); a user entry may not reuse a packaged name."""
    if not _REGISTRY:
        text = importlib.resources.files("matteflow.configs").joinpath("models.toml").read_text()
        user = user_registry()
        for where, body in (("models.toml", text), (str(user), _read_user(user))):
            try:
                tables = tomllib.loads(body)
            except tomllib.TOMLDecodeError as err:
                raise RegistryError(f"{where}: {err}") from None
            for name, table in tables.items():
                register(ModelSpec.from_toml(name, table))
    return dict(_REGISTRY)


def _read_user(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


def _toml_value(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return repr(value)


def add_user_model(
    name: str,
    onnx: str,
    *,
    sha256: str,
    input_size: int,
    licence_class: str,
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406),
    std: tuple[float, float, float] = (0.229, 0.224, 0.225),
    output: str = "alpha",
    output_norm: str = "none",
    task: str = "general",
    weights_license: str = "",
) -> Path:
    """Register an ONNX model of the user's (run by onnxruntime) and append it to the user's
    models.toml; returns that file. `onnx` is a local file (its sha256 is checked now) or a
    URI fetched on first use. Raises RegistryError for a taken name, a bad field or a file
    that does not match `sha256`."""
    if name in specs():
        raise RegistryError(f"model {name!r} is already registered")
    local = None if "://" in onnx else Path(onnx).expanduser().resolve()
    size = 0
    if local is not None:
        if not local.is_file():
            raise RegistryError(f"{local}: no such file")
        actual = sha256_file(local)
        if actual != sha256.lower():
            raise RegistryError(f"{local}: sha256 is {actual}, not {sha256} as given")
        size = local.stat().st_size
    source = str(local) if local is not None else onnx
    table: dict[str, Any] = {
        "engine": "onnxruntime",
        "arch": "onnx",
        "task": task,
        "input_size": input_size,
        "mean": list(mean),
        "std": list(std),
        "output": output,
        "output_norm": output_norm,
        "file": source.rstrip("/").rsplit("/", 1)[-1],
        "format": "onnx",
        "sha256": sha256.lower(),
        "size": size,
        "sources": [source],
        "licence_class": licence_class,
        "weights_license": weights_license or "not recorded (added by the user)",
        "distribution": f"added by the user from {source}",
        "reference": source,
    }
    spec = ModelSpec.from_toml(name, table)
    path = user_registry()
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"\n[{json.dumps(name)}]"] + [f"{k} = {_toml_value(v)}" for k, v in table.items()]
    with path.open("a") as f:
        f.write("\n".join(lines) + "\n")
    register(spec)
    return path


def get_spec(name: str) -> ModelSpec:
    """The spec registered under name; raises RegistryError listing the known names."""
    known = specs()
    if name not in known:
        raise RegistryError(
            f"unknown model {name!r}; known models: {', '.join(sorted(known))}"
            " (see `matteflow models list`)"
        )
    return known[name]


def build_network(
    spec: ModelSpec, weights: Path | None = None, *, channels_last: bool = False
) -> nn.Module:
    """The native network of `spec.arch`: with default initialisation (seeded by spec.seed),
    or, given a safetensors file, built on the meta device and given that file's tensors
    (strict: every parameter and buffer, nothing else), copied once out of the file's memory
    map (4-d ones into channels_last when asked) so that the mapping is let go."""
    try:
        arch = get_architecture(spec.arch)
    except ArchitectureError as err:
        raise RegistryError(f"model {spec.name!r}: {err}") from None
    if weights is None:
        return arch.build(spec.width, spec.seed)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    state = {
        key: tensor.clone(memory_format=layout if tensor.dim() == 4 else torch.contiguous_format)
        for key, tensor in load_file(str(weights)).items()
    }
    network = arch.skeleton(spec.width)
    network.load_state_dict(state, strict=True, assign=True)
    empty = [n for n, t in (*network.named_parameters(), *network.named_buffers()) if t.is_meta]
    if empty:  # a buffer outside the state dict would still be a shape without data
        raise RegistryError(f"model {spec.name!r}: no weights for {', '.join(empty)}")
    return network


def _min_max(alpha: torch.Tensor) -> torch.Tensor:
    """Each image's map stretched to [0, 1] (U²-Net's published post-processing)."""
    low = alpha.amin(dim=(1, 2, 3), keepdim=True)
    high = alpha.amax(dim=(1, 2, 3), keepdim=True)
    return (alpha - low) / (high - low).clamp_min(1e-8)


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """A model ready for inference, with what produced it: a torch network, or an
    onnxruntime session (spec.engine)."""

    spec: ModelSpec
    network: nn.Module | OnnxSession
    device: torch.device
    dtype: torch.dtype
    weights_sha256: str
    channels_last: bool

    @property
    def dtype_name(self) -> str:
        """The compute dtype as written to metrics ('float32', 'bfloat16', 'float16', 'int8')."""
        return str(self.dtype).removeprefix("torch.")

    def predict(self, batch: torch.Tensor) -> Prediction:
        """N x 3 x S x S normalised float32 on self.device -> alpha (and foreground colour)."""
        if isinstance(self.network, OnnxSession):
            alpha, foreground = self.network(batch)
        else:
            if self.channels_last:
                batch = batch.contiguous(memory_format=torch.channels_last)
            autocast = torch.autocast(
                self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32
            )
            with torch.inference_mode(), autocast:
                alpha, foreground = self.network(batch).float(), None
        if self.spec.output_norm == "minmax":
            alpha = _min_max(alpha)
        return Prediction(alpha.clamp(0.0, 1.0), foreground)

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        """N x 3 x S x S normalised float32 on self.device -> N x 1 x S x S float32 alpha."""
        return self.predict(batch).alpha


def _alternatives(spec: ModelSpec, allowed: tuple[str, ...]) -> list[str]:
    """Registered real models whose class is allowed, those for spec's task first."""
    fits = [s for s in specs().values() if s.licence_class in allowed and s.format != "random"]
    return [s.name for s in sorted(fits, key=lambda s: (s.task != spec.task, s.name))]


def strictest_licence(classes: Iterable[str]) -> str:
    """The most restrictive of some licence classes (LICENCE_CLASSES order; unknown last):
    the class of a matte several models made."""
    order = {c: i for i, c in enumerate(LICENCE_CLASSES)}
    return max(classes, key=lambda c: order.get(c, len(order)))


def check_licence(spec: ModelSpec, allow_licences: tuple[str, ...] = ()) -> None:
    """Raise LicenseError when `allow_licences` (empty = any) excludes spec's licence class;
    the message gives the facts and names an allowed alternative."""
    if not allow_licences or spec.licence_class in allow_licences:
        return
    others = _alternatives(spec, allow_licences)
    hint = (
        f" Use {others[0]!r} instead (--model {others[0]})."
        if others
        else " No registered model has an allowed class."
    )
    raise LicenseError(
        f"model {spec.name!r}: licence class {spec.licence_class!r}, and the run allows only"
        f" {', '.join(allow_licences)} (model.allow_licences; require_commercial_license ="
        f" true means permissive). Weights licence: {spec.weights_license}. Distribution:"
        f" {spec.distribution}.{hint}"
    )


def check(
    name: str,
    device: str,
    dtype: str,
    *,
    allow_licences: tuple[str, ...] = (),
    device_here: bool = True,
) -> ModelSpec:
    """The spec of `name` once licence, dtype and device allow a load; raises otherwise.

    `allow_licences` lists the licence classes the run accepts (empty: any). `device_here` =
    False checks the device's name but not its presence (a launcher whose workers, not itself,
    have the GPU). Raises RegistryError (unknown name, bad dtype or device, absent device) or
    LicenseError.
    """
    spec = get_spec(name)
    check_licence(spec, allow_licences)
    if dtype != "auto" and dtype not in (*DTYPES, INT8):
        raise RegistryError(
            f"dtype {dtype!r}: expected auto or one of {', '.join([*DTYPES, INT8])}"
        )
    if dtype == INT8 and (spec.format != "onnx" or not device.startswith("cpu")):
        raise RegistryError(
            f"model {name!r}, dtype int8: int8 runs on the CPU (device cpu) and quantises a"
            f" published ONNX graph; asked for device {device!r}, model format {spec.format!r}"
        )
    if spec.engine == "onnxruntime" and dtype not in ("auto", "float32", INT8):
        raise RegistryError(
            f"model {name!r} runs on onnxruntime in float32 only; dtype {dtype!r} asked"
        )
    try:
        target = torch.device(device)
    except RuntimeError:
        raise RegistryError(f"device {device!r}: expected cpu, cuda or cuda:N") from None
    if device_here and target.type == "cuda":
        if spec.engine == "torch" and not torch.cuda.is_available():
            raise RegistryError(f"device {device!r} requested but no CUDA device is available")
        if spec.engine == "onnxruntime":
            try:
                onnx_providers(target)
            except RuntimeError as err:
                raise RegistryError(f"model {name!r}: {err}") from None
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


def prepare(spec: ModelSpec, allow_fetch: bool = True) -> Path | None:
    """The verified file the spec's engine loads: native safetensors (converted on first use)
    for torch, the ONNX file itself for onnxruntime; None for a generated model. Fetches a
    missing file unless `allow_fetch` is False; raises WeightsError."""
    if spec.format == "random":
        return None
    if spec.engine == "torch":
        return native_weights(spec, allow_fetch=allow_fetch)
    return source_file(spec, allow_fetch=allow_fetch)


def _random_digest(network: nn.Module) -> str:
    digest = hashlib.sha256()
    for key, tensor in sorted(network.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def load(
    name: str,
    device: str = "cpu",
    dtype: str = "float32",
    *,
    channels_last: bool = False,
    allow_licences: tuple[str, ...] = (),
    threads: int = 0,
    calibration: Path | None = None,
) -> LoadedModel:
    """Build model `name` with verified weights on `device`, computing in `dtype`.

    Torch: weights stay float32; dtype bfloat16/float16 runs the forward pass under autocast,
    and "auto" picks one (`resolve_dtype`), or float32 for a spec whose `auto_dtype` says so
    (reduced precision measured to cost it accuracy). Onnxruntime: float32, `threads`
    intra-op threads per session (0: this machine's cores). "int8" (CPU): the published graph
    quantised with the images in `calibration` (default: the bundled sample), built once into
    the cache (`int8_model`), on onnxruntime. Raises what `check` raises, WeightsError when no
    verified weights can be had and QuantiseError when no int8 file can be built.
    """
    spec = check(name, device, dtype, allow_licences=allow_licences)
    target = torch.device(device)
    if dtype == INT8:
        path = int8_model(spec, calibration)
        session = OnnxSession(path, spec, target, threads)
        return LoadedModel(spec, session, target, torch.int8, verified_sha256(path), False)
    if spec.engine == "onnxruntime":
        path = prepare(spec)
        assert path is not None  # an onnxruntime spec has format "onnx"
        session = OnnxSession(path, spec, target, threads)
        return LoadedModel(spec, session, target, torch.float32, spec.sha256, False)
    dtype = "float32" if dtype == "auto" and spec.auto_dtype == "float32" else dtype
    dtype = resolve_dtype(dtype, target)
    weights = prepare(spec)
    network = build_network(spec, weights, channels_last=channels_last)
    sha = spec.sha256 if weights is not None else _random_digest(network)
    network = network.eval().to(target)
    if channels_last:
        network = network.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return LoadedModel(spec, network, target, DTYPES[dtype], sha, channels_last)
