"""The Python API: `remove` (one image), `Remover` (one loaded model, many images) and
`RemoveBackground` (the job's steps as one Beam PTransform for your own pipelines).

Every image takes the job's path: the one reader (sources, size limit), decode (EXIF
orientation, ICC -> sRGB), the model handler, the source's own alpha, refine, and the job's
encoder, so a cutout here has the pixels of the job's `cutouts/{key}.png`.
"""

from __future__ import annotations

import base64
import dataclasses
import difflib
import hashlib
import io
import json
import os
import posixpath
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import apache_beam as beam
import imagecodecs
import numpy as np
from PIL import Image

from matteflow.models.registry import check
from matteflow.pipelines.config import RunConfig, load_config
from matteflow.pipelines.remove_background import model_handler, process, reader
from matteflow.transforms.coders import with_record_outputs
from matteflow.transforms.decode import decode
from matteflow.transforms.failures import InferenceError, MatteflowError, classify
from matteflow.transforms.layout import OutputLayout
from matteflow.transforms.manifest import ManifestRows, to_task
from matteflow.transforms.matte import apply_existing_alpha
from matteflow.transforms.metrics import MetricsRow
from matteflow.transforms.refine import refine_matte
from matteflow.transforms.settings import KINDS, OutputSettings, with_overrides
from matteflow.transforms.storage import content_type
from matteflow.transforms.types import Failed, ImageTask, Matte, Written
from matteflow.transforms.write import render

__all__ = ["RemoveBackground", "Remover", "Source", "api_config", "cutout_bytes", "remove"]

_NOWHERE = OutputLayout("memory:")  # render's file names when nothing is written

# A path or URI (local, gs://, s3://, http(s)://), encoded image bytes, a PIL image, or an
# H x W, H x W x 3 or H x W x 4 uint8/uint16 array (sRGB).
Source = str | os.PathLike[str] | bytes | Image.Image | np.ndarray


def _toml(value: object) -> str:
    """A Python value as the TOML text of a --set override."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | list | tuple):
        return json.dumps(list(value) if isinstance(value, tuple) else value)
    raise TypeError(f"setting value {value!r}: expected a bool, number, string or list")


def _dotted(name: str) -> str:
    """`name` as TABLE.KEY: as given when dotted, else the one profile table that has it."""
    if "." in name:
        return name
    tables = {
        f.name: {g.name for g in dataclasses.fields(getattr(RunConfig(), f.name))}
        for f in dataclasses.fields(RunConfig)
        if dataclasses.is_dataclass(getattr(RunConfig(), f.name))
    }
    owners = [table for table, keys in tables.items() if name in keys]
    if len(owners) == 1:
        return f"{owners[0]}.{name}"
    if owners:
        choices = ", ".join(f"'{t}.{name}'" for t in owners)
        raise TypeError(f"setting {name!r} is in several tables; pass one of {choices}")
    known = sorted({key for keys in tables.values() for key in keys})
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else " (see README, Profiles)"
    raise TypeError(f"unknown setting {name!r}{hint}")


def api_config(
    model: str | None = None, profile: str | None = None, **settings: object
) -> RunConfig:
    """The run config for the API: a profile (default: the packaged local one), the model, and
    settings as keywords, each a profile key (`refine="guided"`, `cutout_format="webp"`) or a
    dotted TABLE.KEY (`**{"decode.max_pixels": 50_000_000}`). Raises TypeError for an unknown
    or ambiguous key and ConfigError for a bad value."""
    overrides = [f"{_dotted(name)}={_toml(value)}" for name, value in settings.items()]
    return load_config(profile, model=model, settings=overrides)


def _encoded(src: Source) -> tuple[str, bytes]:
    """(a name for messages, the bytes to decode) of a source that is not a path."""
    if isinstance(src, bytes):
        return "<bytes>", src
    if isinstance(src, Image.Image):
        buf = io.BytesIO()
        # The image's own profile and EXIF travel with it, so decode converts and turns it.
        extra = {"icc_profile": src.info.get("icc_profile"), "exif": src.getexif()}
        fmt = "PNG" if src.mode in ("1", "L", "LA", "P", "RGB", "RGBA", "I;16") else "TIFF"
        src.save(buf, fmt, **{k: v for k, v in extra.items() if v})
        return "<PIL image>", buf.getvalue()
    if isinstance(src, np.ndarray):
        channels = 1 if src.ndim == 2 else src.shape[2] if src.ndim == 3 else 0
        if src.dtype not in (np.uint8, np.uint16) or channels not in (1, 3, 4):
            raise TypeError(
                f"array of {src.dtype} with shape {src.shape}: expected H x W, H x W x 3 or"
                " H x W x 4 of uint8 or uint16 (sRGB)"
            )
        return "<array>", bytes(imagecodecs.png_encode(np.ascontiguousarray(src)))
    raise TypeError(f"{type(src).__name__}: expected a path, URI, bytes, PIL image or array")


def _only(outputs: OutputSettings, kind: str) -> OutputSettings:
    """The settings with one output kind selected."""
    flags: dict[str, Any] = {k: k == kind for k in KINDS}
    return dataclasses.replace(outputs, **flags)


class Remover:
    """One model, loaded once, for many images (thread-safe: one image at a time runs the model).

    `model`, `profile` and `settings` as for `remove`. Raises RegistryError or WeightsError when
    the model cannot load, ConfigError/TypeError for bad settings.
    """

    def __init__(
        self, model: str | None = None, *, profile: str | None = None, **settings: object
    ) -> None:
        self._load(api_config(model, profile, **settings))

    @classmethod
    def from_config(cls, cfg: RunConfig) -> Remover:
        """A remover with a run's whole config (as the CLI's --dry-run times the model)."""
        remover = cls.__new__(cls)
        remover._load(cfg)
        return remover

    def _load(self, cfg: RunConfig) -> None:
        self.config = cfg
        m = self.config.model
        check(m.name, m.device, m.dtype, allow_licences=m.licences)
        # The job's handler as a local run makes it: the same dtype and thread rule, so the
        # same numbers as the job's outputs.
        self._handler = model_handler(self.config)
        self._model = self._handler.load_model()
        self._reader = reader(cfg)
        self._lock = threading.Lock()

    @property
    def model(self) -> str:
        """The registry name of the loaded model."""
        name: str = self.config.model.name
        return name

    def _read(self, src: Source) -> tuple[str, bytes]:
        if isinstance(src, str | os.PathLike):
            uri = os.fspath(src)
            return uri, self._reader.read(uri)  # the run's source policy and size limit
        return _encoded(src)

    def matte(self, src: Source, *, key: str = "image") -> Matte:
        """The refined matte of one image (full resolution, sRGB colour); raises the job's
        classified MatteflowError (its `stage` and `code` are a metrics row's)."""
        uri, data = self._read(src)  # a source of the wrong type raises TypeError
        stage = "decode"
        try:
            task = ImageTask(key, uri, key)
            image = decode(task, data, self.config.decode)
            image.source_sha256 = hashlib.sha256(data).hexdigest()
            stage = "segment"
            with self._lock:
                (result,) = self._handler.run_inference([image], self._model)
            if isinstance(result, Failed):  # the model failed on this image alone
                raise InferenceError(result.message, code=result.code)
            alpha = apply_existing_alpha(
                result.alpha, image.source_alpha, self.config.matte.existing_alpha
            )
            stage = "refine"
            return refine_matte(dataclasses.replace(result, alpha=alpha), self.config.refine)
        except MatteflowError:
            raise
        except Exception as err:  # the unforeseen get classified, as in the job's DoFns
            raise classify(err, stage, uri) from err

    def render(
        self,
        src: Source,
        kind: str = "cutout",
        *,
        composite_format: str | None = None,
        **row_settings: str,
    ) -> bytes:
        """One output file of the image, encoded as the job writes it: `kind` is one of KINDS
        (cutout, mask, composite, color, psd, xcf); `row_settings` are a manifest row's
        (cutout_format, background, framing, canvas); `composite_format` jpeg | png (default:
        the profile's)."""
        outputs = self.config.outputs
        return self._render(
            src,
            kind,
            row_settings,
            outputs.keep_16_bit,
            composite_format or outputs.composite_format,
        )

    def remove(self, src: Source, **row_settings: str) -> Image.Image:
        """The RGBA cutout (8 bits a channel) of one image; `row_settings` as for `render`."""
        settings = {**row_settings, "cutout_format": "png"}
        png = self._render(src, "cutout", settings, False, self.config.outputs.composite_format)
        image = Image.open(io.BytesIO(png))
        image.load()
        return image

    def _render(
        self,
        src: Source,
        kind: str,
        row_settings: Mapping[str, str],
        keep_16_bit: bool,
        composite_format: str,
    ) -> bytes:
        if kind not in KINDS:
            raise ValueError(f"kind {kind!r}: expected one of {', '.join(KINDS)}")
        outputs, framing = with_overrides(self.config.outputs, self.config.framing, row_settings)
        only = dataclasses.replace(
            _only(outputs, kind), keep_16_bit=keep_16_bit, composite_format=composite_format
        )
        files = render(self.matte(src), only, framing, _NOWHERE, self._reader).files
        data: bytes = files[f"{kind}_uri"][1]
        return data


def cutout_bytes(row: MetricsRow) -> bytes:
    """The encoded cutout a RemoveBackground without output carries in the row's cutout_uri
    (a data: URI)."""
    uri = dict(row.uris).get("cutout_uri") or ""
    if not uri.startswith("data:"):
        raise ValueError(f"{row.id}: cutout_uri {uri!r} is not a data: URI")
    return base64.b64decode(uri.partition(",")[2])


def remove(
    src: Source, *, model: str | None = None, profile: str | None = None, **settings: object
) -> Image.Image:
    """The RGBA cutout of one image, through the job's decode, model, refine and encoder.

    `src`: a path or URI, encoded bytes, a PIL image or a uint8/uint16 array. `model`: a
    registry name (default: the profile's). `profile`: a TOML profile. `settings`: profile keys
    as keywords (`refine="guided"`, `framing="crop"`...). Loads the model on each call: for
    many images, use `Remover`. Raises the job's classified MatteflowError for a bad image.
    """
    return Remover(model, profile=profile, **settings).remove(src)


class _ToTaskFn(beam.DoFn):
    """A URI or a manifest row (dict) -> ImageTask; a row that cannot be one -> "failures"."""

    def __init__(self, cfg: RunConfig) -> None:
        self._sources = cfg.sources

    def process(self, item: str | Mapping[str, Any]) -> Iterator[Any]:
        record = {"uri": item} if isinstance(item, str) else dict(item)
        uri = str(record.get("uri") or "")
        try:
            # The row's folder is its own: a bare URI's id is its file name, no extension.
            yield to_task(record, "", posixpath.dirname(uri) + "/", self._sources)
        except MatteflowError as err:
            task = ImageTask(str(record.get("id") or uri), uri, str(record.get("output_key") or ""))
            yield beam.pvalue.TaggedOutput("failures", Failed.from_error(task, err))


class _RenderFn(beam.DoFn):
    """Matte -> Written with nothing written: its `cutout_uri` is a data: URI holding the
    encoded cutout."""

    def __init__(self, cfg: RunConfig) -> None:
        self._cfg = cfg
        self._reader = reader(cfg)

    def process(self, matte: Matte) -> Iterator[Any]:
        task = matte.image.task
        try:
            outputs, framing = with_overrides(
                self._cfg.outputs, self._cfg.framing, dict(task.settings)
            )
            only = _only(outputs, "cutout")
            files, width, height = render(matte, only, framing, _NOWHERE, self._reader)
        except Exception as err:
            failure = classify(err, "write", task.source_uri)
            yield beam.pvalue.TaggedOutput("failures", Failed.from_error(task, failure))
            return
        data = files["cutout_uri"][1]
        uri = f"data:{content_type(f'x.{only.extension}')};base64,{base64.b64encode(data).decode()}"
        yield Written(matte, {"cutout_uri": uri}, len(data), width, height)


class _Render(beam.PTransform[beam.pvalue.PCollection[Matte], beam.pvalue.DoOutputsTuple]):
    """Matte -> Written carrying the encoded cutout; failures -> "failures"."""

    def __init__(self, cfg: RunConfig) -> None:
        super().__init__()
        self._cfg = cfg

    def expand(self, mattes: beam.pvalue.PCollection[Matte]) -> beam.pvalue.DoOutputsTuple:
        render_fn = with_record_outputs(beam.ParDo(_RenderFn(self._cfg)), Written, failures=Failed)
        outputs: beam.pvalue.DoOutputsTuple = mattes | "Render" >> render_fn
        return outputs


class RemoveBackground(
    beam.PTransform[beam.pvalue.PCollection[Any], beam.pvalue.PCollection[MetricsRow]]
):
    """PCollection of URIs (str) or manifest rows (dicts: `uri`, optional `id`, `output_key`,
    `ground_truth_uri` and the row settings) -> PCollection of MetricsRow, one per input (the
    job's metrics row, README "Metrics schema"), status ok | skipped | failed.

    With `output` (a local folder, gs:// or s3:// prefix) the outputs are written as the job
    writes them, with resume: rows whose outputs are current come back `skipped`. Without it,
    nothing is written and each ok row's `cutout_uri` is a data: URI holding the encoded cutout
    (`cutout_bytes(row)` gives the bytes).
    `model`, `profile` and `settings` as for `remove`. Ids are not checked for uniqueness
    across the collection: give each row its own `id` or `output_key`.
    """

    def __init__(
        self,
        output: str | None = None,
        *,
        model: str | None = None,
        profile: str | None = None,
        **settings: object,
    ) -> None:
        super().__init__()
        cfg = api_config(model, profile, **settings)
        self._cfg = dataclasses.replace(cfg, output=output or "")

    def expand(self, items: beam.pvalue.PCollection[Any]) -> beam.pvalue.PCollection[MetricsRow]:
        cfg = self._cfg
        tasks = items | "ToTasks" >> beam.ParDo(_ToTaskFn(cfg)).with_outputs("failures", main="ok")
        write = None if cfg.output else _Render(cfg)  # None: the job's WriteOutputs
        manifest = ManifestRows(tasks.ok, tasks.failures)
        rows: beam.pvalue.PCollection[MetricsRow] = process(
            manifest, cfg, items.pipeline.options, write
        ).rows
        return rows
