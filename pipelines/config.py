"""Run configuration: TOML profiles (configs/*.toml) parsed into frozen dataclasses.

Defaults live only on the dataclasses; a profile states what differs. An unknown key or a
value of the wrong type raises one ConfigError naming the dotted path.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_origin, get_type_hints

from matteflow.models.registry import LICENCE_CLASSES
from matteflow.pipelines.options import BeamSettings
from matteflow.transforms.arrivals import StreamingSettings
from matteflow.transforms.decode import DecodeSettings
from matteflow.transforms.framing import FramingSettings, check_framing
from matteflow.transforms.matte import MatteSettings
from matteflow.transforms.refine import RefineSettings
from matteflow.transforms.resume import AFFECTS_OUTPUT
from matteflow.transforms.routing import RoutingSettings
from matteflow.transforms.settings import OutputSettings
from matteflow.transforms.sources import SourcePolicy

__all__ = [
    "BatchingSettings",
    "ConfigError",
    "ModelSettings",
    "RunConfig",
    "load_config",
]


class ConfigError(ValueError):
    """A profile key is unknown or has the wrong type."""


@dataclass(frozen=True)
class ModelSettings:
    """Which registry model runs, where and how."""

    name: str = "isnet-general-use"
    device: str = "cpu"  # "cpu", "cuda", "cuda:1"; a missing GPU fails in preflight
    # "auto" (bfloat16 where the CPU or GPU computes it natively, else float16 on CUDA and
    # float32 on CPU) | "float32" | "bfloat16" | "float16"; reduced precision is autocast;
    # "int8" (CPU): the model's ONNX graph statically quantised, on onnxruntime (README)
    dtype: str = field(default="auto", metadata=AFFECTS_OUTPUT)
    # int8's calibration images: a local folder of .jpg/.png photos like those the run will
    # see; "" = the bundled sample (examples/sample). The fingerprint takes their bytes.
    calibration: str = field(default="", metadata=AFFECTS_OUTPUT)
    # square side the model runs at (multiple of 32); 0 = the model's
    inference_size: int = field(default=0, metadata=AFFECTS_OUTPUT)
    channels_last: bool = True  # NHWC memory layout: faster convolutions on CPU and GPU
    # torch threads of every forward pass on a CPU (and of each onnxruntime session),
    # whichever worker runs it; results depend on it, so it never follows the number of
    # workers (models/threads.py)
    torch_threads: int = field(default=1, metadata=AFFECTS_OUTPUT)
    # Licence classes the run may use (permissive | copyleft | non-commercial | unclear);
    # empty = any. Preflight refuses any other model and names an allowed one.
    allow_licences: tuple[str, ...] = ()
    require_commercial_license: bool = False  # alias of allow_licences = ["permissive"]
    # also run each image mirrored and average (2x the model's time)
    flip_tta: bool = field(default=False, metadata=AFFECTS_OUTPUT)

    def __post_init__(self) -> None:
        unknown = set(self.allow_licences) - set(LICENCE_CLASSES)
        if unknown:
            raise ValueError(
                f"allow_licences: {sorted(unknown)} not among {', '.join(LICENCE_CLASSES)}"
            )
        if self.inference_size % 32:
            raise ValueError(
                f"inference_size: expected a multiple of 32, got {self.inference_size}"
            )

    @property
    def licences(self) -> tuple[str, ...]:
        """The licence classes allowed (empty: any): allow_licences, narrowed to permissive
        by require_commercial_license."""
        return ("permissive",) if self.require_commercial_license else self.allow_licences


@dataclass(frozen=True)
class BatchingSettings:
    """How RunInference groups images: by pixels, max(model input, full-res image) each."""

    max_pixels: int = 2 * 1024 * 1024


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs besides runner options. Fields marked AFFECTS_OUTPUT (here and
    in the tables) make the resume fingerprint (transforms/resume.py)."""

    manifest: str = ""
    output: str = ""
    force: bool = False  # redo rows whose outputs are current (see transforms/resume.py)
    max_failure_rate: float = 1.0  # share of failed rows above which the CLI exits 3
    model: ModelSettings = field(default_factory=ModelSettings)
    batching: BatchingSettings = field(default_factory=BatchingSettings)
    decode: DecodeSettings = field(default_factory=DecodeSettings)
    outputs: OutputSettings = field(default_factory=OutputSettings, metadata=AFFECTS_OUTPUT)
    framing: FramingSettings = field(default_factory=FramingSettings, metadata=AFFECTS_OUTPUT)
    matte: MatteSettings = field(default_factory=MatteSettings, metadata=AFFECTS_OUTPUT)
    refine: RefineSettings = field(default_factory=RefineSettings, metadata=AFFECTS_OUTPUT)
    # `--model auto` (and rows with model = auto): which models run and how they combine
    routing: RoutingSettings = field(default_factory=RoutingSettings, metadata=AFFECTS_OUTPUT)
    streaming: StreamingSettings = field(default_factory=StreamingSettings)
    beam: BeamSettings = field(default_factory=BeamSettings)  # runner options (pipelines/options)
    sources: SourcePolicy = field(default_factory=SourcePolicy)


# Integer settings where 0 has a meaning: a default worked out at run time, no zlib compression,
# no size limit. Every other integer must be positive.
_ZERO_MEANS_DEFAULT_OR_NONE = {"inference_size", "png_compress_level", "max_size"}


def _build(cls: type, table: dict[str, Any], path: str) -> Any:
    settable = {f.name for f in dataclasses.fields(cls) if f.init}  # not derived fields
    hints = {k: v for k, v in get_type_hints(cls).items() if k in settable}
    values: dict[str, Any] = {}
    for key, value in table.items():
        where = f"{path}.{key}" if path else key
        if key not in hints:
            raise ConfigError(f"{where}: unknown key (known: {', '.join(sorted(hints))})")
        expected = hints[key]
        if expected is float and type(value) is int:  # TOML `1` where a float is meant
            value = float(value)
        if expected is str and type(value) is int:  # a pixel length: margin = 40
            value = str(value)
        if get_origin(expected) is tuple:  # strings: sources.allow = ["gs://a/*"], [beam] args
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{where}: expected a list of strings, got {value!r}")
            values[key] = tuple(value)
        elif dataclasses.is_dataclass(expected):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: expected a table, got {value!r}")
            values[key] = _build(expected, value, where)  # type: ignore[arg-type]
        elif isinstance(value, bool) != (expected is bool) or not isinstance(value, expected):
            raise ConfigError(f"{where}: expected {expected.__name__}, got {value!r}")
        elif expected is int and value < (0 if key in _ZERO_MEANS_DEFAULT_OR_NONE else 1):
            raise ConfigError(f"{where}: expected a positive integer, got {value!r}")
        else:
            values[key] = value
    try:
        return cls(**values)
    except ValueError as err:  # a dataclass's own checks (__post_init__) name the field
        raise ConfigError(f"{path + '.' if path else ''}{err}") from None


def _set(table: dict[str, Any], setting: str) -> None:
    """Apply one "table.key=value" override to a parsed profile."""
    path, sep, text = setting.partition("=")
    keys = path.strip().split(".")
    if not sep or not all(keys):
        raise ConfigError(f"--set {setting!r}: expected TABLE.KEY=VALUE")
    try:
        value: Any = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        value = text  # a bare word: webp, #ffffff, gs://bucket/bg.jpg
    for key in keys[:-1]:
        inner = table.setdefault(key, {})
        if not isinstance(inner, dict):
            raise ConfigError(f"--set {setting!r}: {key} is not a table")
        table = inner
    table[keys[-1]] = value


def load_config(
    profile: str | None = None,
    *,
    manifest: str | None = None,
    output: str | None = None,
    model: str | None = None,
    force: bool = False,
    max_failure_rate: float | None = None,
    settings: list[str] | None = None,
    allow_sources: list[str] | None = None,
    allow_private_sources: bool = False,
) -> RunConfig:
    """Parse a profile file (default: the packaged configs/local.toml), then apply overrides.

    Overrides given (not None, force True) replace the profile's values; `model` is a name;
    each of `settings` is "table.key=value" (value as TOML, else a string), as from --set;
    `allow_sources` (--allow_source) replaces `sources.allow`.
    """
    if profile:
        try:
            text = Path(profile).read_text()
        except OSError as err:
            raise ConfigError(f"profile {profile}: {err.strerror}") from None
    else:
        text = importlib.resources.files("matteflow.configs").joinpath("local.toml").read_text()
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"profile {profile or 'local.toml'}: {err}") from None
    for setting in settings or []:
        _set(table, setting)
    cfg: RunConfig = _build(RunConfig, table, "")
    try:
        check_framing(cfg.framing)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if model:
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, name=model))
    sources = SourcePolicy(
        tuple(allow_sources) if allow_sources else cfg.sources.allow,
        allow_private_sources or cfg.sources.allow_private,
    )
    return dataclasses.replace(
        cfg,
        manifest=manifest or cfg.manifest,
        output=output or cfg.output,
        force=force or cfg.force,
        max_failure_rate=cfg.max_failure_rate if max_failure_rate is None else max_failure_rate,
        sources=sources,
    )
