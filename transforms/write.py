"""WriteOutputs: Matte -> files under the output prefix and its resume state -> Written.

Per row (the run's OutputSettings and FramingSettings, changed by the row's allowed settings):

    {output}/cutouts/{key}.{png|webp|tif|avif}   RGBA cutout
    {output}/masks/{key}.png                     grey alpha
    {output}/composites/{key}.{jpg|png}          the subject (and its shadow) over a background
    {output}/colors/{key}.{ext}                  opaque colour (+ the mask: a colour/matte pair)
    {output}/psd/{key}.psd                       layered: original, and cutout with its mask
    {output}/xcf/{key}.xcf                       the same layers for GIMP (xcf.py)

One table, OUTPUT_KINDS, says for each kind its setting (the OutputSettings flag of its name),
folder, format, metrics column and renderer: a new kind is one entry there (and its flag).

Colour is the decontaminated foreground when Refine made one (the PSD's "Original" layer keeps
the source's). Every file is framed alike, carries the sRGB profile, the source's EXIF (see
encode.py) and the provenance XMP, and is written under a hidden temporary name beside its final
name and renamed into place, so no reader ever sees a partial file at a final name.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import NamedTuple

import apache_beam as beam
import numpy as np
from PIL import Image

from matteflow.transforms.coders import with_record_outputs
from matteflow.transforms.colour import SRGB_ICC
from matteflow.transforms.decode import DecodeSettings, decode
from matteflow.transforms.encode import (
    FORMATS,
    Metadata,
    encode,
    output_exif,
    provenance_xmp,
    to_uint8,
)
from matteflow.transforms.failures import classify
from matteflow.transforms.framing import FramingSettings, frame
from matteflow.transforms.layout import OutputLayout
from matteflow.transforms.manifest import check_key
from matteflow.transforms.psd import encode_psd
from matteflow.transforms.reader import Reader
from matteflow.transforms.resume import Resume, plain_settings
from matteflow.transforms.settings import KINDS, OutputSettings, background_colour, with_overrides
from matteflow.transforms.shadow import cast_shadow, shade
from matteflow.transforms.storage import delete, write_atomic
from matteflow.transforms.types import Clock, Failed, ImageTask, Matte, Written, elapsed_ms
from matteflow.transforms.xcf import encode_xcf

__all__ = [
    "OUTPUT_KINDS",
    "OutputKind",
    "Rendered",
    "WriteOutputs",
    "composite",
    "quantise_alpha",
    "render",
]

_LOG = logging.getLogger(__name__)


def quantise_alpha(alpha: np.ndarray, dtype: type[np.unsignedinteger]) -> np.ndarray:
    """H x W float alpha in [0, 1] -> uint8 or uint16 (rounded)."""
    scaled = np.clip(alpha, 0.0, 1.0)  # a fresh array, in alpha's own float precision
    scaled *= float(np.iinfo(dtype).max)
    quantised: np.ndarray = np.rint(scaled, out=scaled).astype(dtype)
    return quantised


def composite(rgb: np.ndarray, alpha: np.ndarray, background: np.ndarray) -> np.ndarray:
    """The subject over `background` (H x W x 3, or one colour), in sRGB values as browsers
    composite a cutout; same dtype as `rgb`."""
    a = alpha[..., None].astype(np.float32)
    out = rgb.astype(np.float32) * a + np.asarray(background, np.float32) * (1.0 - a)
    over: np.ndarray = np.rint(out).astype(rgb.dtype)
    return over


@lru_cache(maxsize=4)
def _background_image(uri: str, reader: Reader) -> Image.Image:
    """A background image, read once per worker process (sRGB, upright), under the run's
    source policy and size limits."""
    limits = DecodeSettings(max_pixels=reader.max_pixels, max_bytes=reader.max_bytes)
    image = decode(ImageTask(uri, uri, uri), reader.read(uri), limits)
    return Image.fromarray(image.rgb)


def _background(spec: str, height: int, width: int, dtype: np.dtype, reader: Reader) -> np.ndarray:
    """The background colour, or the background image scaled to cover H x W and centred."""
    colour = background_colour(spec)
    scale = 257 if dtype == np.uint16 else 1
    if colour is not None:
        return np.asarray(colour, np.float32) * scale
    img = _background_image(spec, reader)
    ratio = max(width / img.width, height / img.height)
    size = (max(width, round(img.width * ratio)), max(height, round(img.height * ratio)))
    left, top = (size[0] - width) // 2, (size[1] - height) // 2
    box = (left, top, left + width, top + height)
    covered = img.resize(size, Image.Resampling.LANCZOS).crop(box)
    return np.asarray(covered, np.float32) * scale


@dataclass(frozen=True)
class _Canvas:
    """What every renderer of one row draws from: framed colour and alpha, the settings, and
    the encoder with the row's metadata."""

    matte: Matte
    outputs: OutputSettings
    framing: FramingSettings
    original: np.ndarray  # the source's colour (16 or 8 bits, per keep_16_bit), unframed
    rgb: np.ndarray  # framed colour: decontaminated when Refine made it
    alpha: np.ndarray  # framed float alpha
    alpha_px: np.ndarray  # framed alpha, quantised to rgb's dtype
    meta: Metadata  # sRGB profile, EXIF and provenance XMP
    reader: Reader

    def encode(self, pixels: np.ndarray, fmt: str, metadata: Metadata | None = None) -> bytes:
        """pixels in `fmt` with the run's encoder settings (and the row's metadata)."""
        data: bytes = encode(
            pixels,
            fmt,
            self.meta if metadata is None else metadata,
            quality=self.outputs.quality,
            lossless=self.outputs.lossless,
            compress_level=self.outputs.png_compress_level,
        )
        return data

    @cached_property
    def shadow(self) -> np.ndarray | None:
        """The shadow's opacity on the framed canvas (shadow.py); None without one. Made once,
        for the kinds that show it: composites, PSD and XCF."""
        o = self.outputs
        if o.shadow == "none":
            return None
        offset = (o.shadow_offset_x, o.shadow_offset_y)
        shadow: np.ndarray = cast_shadow(
            self.alpha, o.shadow, opacity=o.shadow_opacity, blur=o.shadow_blur, offset=offset
        )
        return shadow


def _cutout(c: _Canvas) -> bytes:
    rgba = np.empty((*c.alpha_px.shape, 4), c.alpha_px.dtype)
    rgba[..., :3], rgba[..., 3] = c.rgb, c.alpha_px
    # Fully transparent pixels carry no colour: what was behind the subject stays out of the
    # file (colors/ keeps every pixel's colour), and the file is smaller and faster to encode.
    # Each pixel's four samples as one unsigned integer: zeroed by one multiply.
    pixels = rgba.view(f"u{4 * rgba.itemsize}")[..., 0]
    pixels *= c.alpha_px != 0
    return c.encode(rgba, c.outputs.cutout_format)


def _mask(c: _Canvas) -> bytes:
    # grey: an RGB profile does not apply, EXIF describes the photo
    return c.encode(c.alpha_px, "png", Metadata(xmp=c.meta.xmp))


def _composite(c: _Canvas) -> bytes:
    height, width = c.rgb.shape[:2]
    background = _background(c.outputs.background, height, width, c.rgb.dtype, c.reader)
    background = background if c.shadow is None else shade(background, c.shadow)
    return c.encode(composite(c.rgb, c.alpha, background), c.outputs.composite_format)


def _color(c: _Canvas) -> bytes:
    return c.encode(c.rgb, c.outputs.cutout_format)


def _layered(c: _Canvas, encoder: Callable[..., bytes]) -> bytes:
    # the original layer as shot; the cutout layer with its clean colour; the shadow between
    clean = c.matte.foreground is not None
    framed_original = frame(c.original, c.matte.alpha, c.framing)[0] if clean else c.rgb
    return encoder(
        to_uint8(framed_original),
        quantise_alpha(c.alpha, np.uint8),
        SRGB_ICC,
        cutout=to_uint8(c.rgb),
        shadow=None if c.shadow is None else quantise_alpha(c.shadow, np.uint8),
    )


def _psd(c: _Canvas) -> bytes:
    return _layered(c, encode_psd)


def _xcf(c: _Canvas) -> bytes:
    return _layered(c, encode_xcf)


class OutputKind(NamedTuple):
    """One kind of output file: written when the OutputSettings flag `name` is set."""

    name: str  # the OutputSettings flag, a ROW_SETTINGS `outputs` value
    folder: str  # under the output prefix
    extension: Callable[[OutputSettings], str]  # file extension, from the settings
    render: Callable[[_Canvas], bytes]  # the encoded file

    @property
    def column(self) -> str:
        """The metrics column that gets the written file's URI."""
        return f"{self.name}_uri"


OUTPUT_KINDS = (
    OutputKind("cutout", "cutouts", lambda o: o.extension, _cutout),
    OutputKind("mask", "masks", lambda o: "png", _mask),
    OutputKind("composite", "composites", lambda o: FORMATS[o.composite_format], _composite),
    OutputKind("color", "colors", lambda o: o.extension, _color),
    OutputKind("psd", "psd", lambda o: "psd", _psd),
    OutputKind("xcf", "xcf", lambda o: "xcf", _xcf),
)
assert tuple(k.name for k in OUTPUT_KINDS) == KINDS  # one kind per OutputSettings flag


class Rendered(NamedTuple):
    """The encoded outputs of one row and the size they were framed to."""

    files: dict[str, tuple[str, bytes]]  # metrics column -> (uri, encoded bytes)
    width: int
    height: int


def render(
    matte: Matte,
    outputs: OutputSettings,
    framing: FramingSettings,
    layout: OutputLayout,
    reader: Reader | None = None,
) -> Rendered:
    """Every output the settings select, encoded, with their (framed) size; background
    images are read by `reader` (default: the default policy and limits)."""
    image = matte.image
    original = image.rgb16 if image.rgb16 is not None else image.rgb
    clean = matte.foreground is not None  # decontaminated colour from Refine
    colour = original if matte.foreground is None else matte.foreground
    if not outputs.keep_16_bit:
        original = to_uint8(original)
        colour = to_uint8(colour) if clean else original
    rgb, alpha = frame(colour, matte.alpha, framing)
    settings = {"outputs": plain_settings(outputs), "framing": plain_settings(framing)}
    xmp = provenance_xmp(
        {
            "model": matte.model,
            "modelSha256": matte.model_sha256,
            "licenceClass": matte.licence_class,
            "sourceSha256": image.source_sha256,
            "settings": json.dumps(settings, sort_keys=True),
        }
    )
    exif = output_exif(
        image.exif, strip_gps=outputs.strip_gps, strip_metadata=outputs.strip_metadata
    )
    canvas = _Canvas(
        matte,
        outputs,
        framing,
        original,
        rgb,
        alpha,
        quantise_alpha(alpha, rgb.dtype.type),
        Metadata(icc=SRGB_ICC, exif=exif, xmp=xmp),
        reader or Reader(),
    )
    key = image.task.output_key
    files = {
        kind.column: (layout.file(kind.folder, key, kind.extension(outputs)), kind.render(canvas))
        for kind in OUTPUT_KINDS
        if getattr(outputs, kind.name)
    }
    return Rendered(files, rgb.shape[1], rgb.shape[0])


def _remove(uris: list[str]) -> None:
    """Delete what a failed row wrote (best effort: a leftover is redone by the next run, as
    the row has no state record)."""
    for uri in uris:
        try:
            delete(uri)
        except Exception as err:
            _LOG.warning("%s: could not remove the output of a failed row: %s", uri, err)


class _WriteFn(beam.DoFn):
    def __init__(
        self,
        output: str,
        outputs: OutputSettings,
        framing: FramingSettings,
        resume: Resume,
        reader: Reader | None = None,
        clock: Clock = time.perf_counter,
    ) -> None:
        self._layout = OutputLayout(output)
        self._outputs = outputs
        self._framing = framing
        self._resume = resume
        self._reader = reader or Reader()
        self._clock = clock

    def process(self, matte: Matte) -> Iterator[Written | beam.pvalue.TaggedOutput[str, Failed]]:
        task = matte.image.task
        written_uris: list[str] = []
        try:
            check_key(task.output_key)  # keys are checked when read; never write outside
            start = self._clock()
            outputs, framing = with_overrides(self._outputs, self._framing, dict(task.settings))
            files, width, height = render(matte, outputs, framing, self._layout, self._reader)
            encoded = self._clock()
            for uri, data in files.values():
                write_atomic(uri, data, kms_key=outputs.kms_key)
                written_uris.append(uri)
            uris = {column: uri for column, (uri, _) in files.items()}
            self._resume.record(task.output_key, matte.image.source_sha256, uris, task.settings)
            written = self._clock()
        except Exception as err:  # classified errors pass through; the unforeseen get classified
            where = f"{self._layout.output} (key {task.output_key})"
            failure = classify(err, "write", where)
            _remove(written_uris)  # a failed row leaves no outputs behind
            yield beam.pvalue.TaggedOutput("failures", Failed.from_error(task, failure))
            return
        timings = matte.timings.add(
            encode_ms=elapsed_ms(start, encoded), write_ms=elapsed_ms(encoded, written)
        )
        yield Written(
            dataclasses.replace(matte, timings=timings),
            uris,
            sum(len(data) for _, data in files.values()),
            width,
            height,
        )


class WriteOutputs(beam.PTransform[beam.pvalue.PCollection[Matte], beam.pvalue.DoOutputsTuple]):
    """Matte -> the selected output files and the row's resume state -> Written; failures ->
    "failures". Background images are read by `reader`."""

    def __init__(
        self,
        output: str,
        outputs: OutputSettings,
        framing: FramingSettings,
        resume: Resume,
        reader: Reader | None = None,
    ) -> None:
        super().__init__()
        self._output = output
        self._outputs = outputs
        self._framing = framing
        self._resume = resume
        self._reader = reader

    def expand(self, mattes: beam.pvalue.PCollection[Matte]) -> beam.pvalue.DoOutputsTuple:
        fn = _WriteFn(self._output, self._outputs, self._framing, self._resume, self._reader)
        write = with_record_outputs(beam.ParDo(fn), Written, failures=Failed)
        outputs: beam.pvalue.DoOutputsTuple = mattes | "Write" >> write
        return outputs
