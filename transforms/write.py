"""WriteOutputs: Matte -> files under the output prefix, its resume state, then an `ok` row.

Per row (the run's OutputSettings and FramingSettings, changed by the row's allowed settings):

    {output}/cutouts/{key}.{png|webp|tif|avif}   RGBA cutout
    {output}/masks/{key}.png                     grey alpha
    {output}/composites/{key}.{jpg|png}          the subject over a colour or an image
    {output}/colors/{key}.{ext}                  opaque colour (+ the mask: a colour/matte pair)
    {output}/psd/{key}.psd                       layered: original, and cutout with its mask

Colour is the decontaminated foreground when Refine made one (the PSD's "Original" layer keeps
the source's). Every file is framed alike, carries the sRGB profile, the source's EXIF (see
encode.py) and the provenance XMP, and is written under a hidden temporary name beside its final
name and renamed into place, so no reader ever sees a partial file at a final name.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from functools import lru_cache
from typing import NamedTuple

import apache_beam as beam
import numpy as np
from PIL import Image

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
from matteflow.transforms.manifest import check_key
from matteflow.transforms.metrics import ok_row
from matteflow.transforms.psd import encode_psd
from matteflow.transforms.resume import Resume, plain_settings
from matteflow.transforms.settings import OutputSettings, background_colour, with_overrides
from matteflow.transforms.storage import delete, read_bytes, write_atomic
from matteflow.transforms.types import Failed, ImageTask, Matte

__all__ = ["Rendered", "WriteOutputs", "composite", "quantise_alpha", "render"]

_LOG = logging.getLogger(__name__)


def quantise_alpha(alpha: np.ndarray, dtype: type[np.unsignedinteger]) -> np.ndarray:
    """H x W float alpha in [0, 1] -> uint8 or uint16 (rounded)."""
    top = float(np.iinfo(dtype).max)
    return np.rint(np.clip(alpha, 0.0, 1.0) * top).astype(dtype)


def composite(rgb: np.ndarray, alpha: np.ndarray, background: np.ndarray) -> np.ndarray:
    """The subject over `background` (H x W x 3, or one colour), in sRGB values as browsers
    composite a cutout; same dtype as `rgb`."""
    a = alpha[..., None].astype(np.float32)
    out = rgb.astype(np.float32) * a + np.asarray(background, np.float32) * (1.0 - a)
    return np.rint(out).astype(rgb.dtype)


@lru_cache(maxsize=4)
def _background_image(uri: str) -> Image.Image:
    """A background image, read once per worker process (sRGB, upright)."""
    image = decode(ImageTask(uri, uri, uri), read_bytes(uri), DecodeSettings())
    return Image.fromarray(image.rgb)


def _background(spec: str, height: int, width: int, dtype: np.dtype) -> np.ndarray:
    """The background colour, or the background image scaled to cover H x W and centred."""
    colour = background_colour(spec)
    scale = 257 if dtype == np.uint16 else 1
    if colour is not None:
        return np.asarray(colour, np.float32) * scale
    img = _background_image(spec)
    ratio = max(width / img.width, height / img.height)
    size = (max(width, round(img.width * ratio)), max(height, round(img.height * ratio)))
    left, top = (size[0] - width) // 2, (size[1] - height) // 2
    box = (left, top, left + width, top + height)
    covered = img.resize(size, Image.Resampling.LANCZOS).crop(box)
    return np.asarray(covered, np.float32) * scale


class Rendered(NamedTuple):
    """The encoded outputs of one row and the size they were framed to."""

    files: dict[str, tuple[str, bytes]]  # metrics column -> (uri, encoded bytes)
    width: int
    height: int


def render(
    matte: Matte, outputs: OutputSettings, framing: FramingSettings, output: str
) -> Rendered:
    """Every output the settings select, encoded, with their (framed) size."""
    image = matte.image
    original = image.rgb16 if image.rgb16 is not None else image.rgb
    clean = matte.foreground is not None  # decontaminated colour from Refine
    colour = matte.foreground if clean else original
    if not outputs.keep_16_bit:
        original = to_uint8(original)
        colour = to_uint8(colour) if clean else original
    rgb, alpha = frame(colour, matte.alpha, framing)
    alpha_px = quantise_alpha(alpha, rgb.dtype.type)
    settings = {"outputs": plain_settings(outputs), "framing": plain_settings(framing)}
    xmp = provenance_xmp(
        {
            "model": matte.model,
            "modelSha256": matte.model_sha256,
            "sourceSha256": image.source_sha256,
            "settings": json.dumps(settings, sort_keys=True),
        }
    )
    exif = output_exif(
        image.exif, strip_gps=outputs.strip_gps, strip_metadata=outputs.strip_metadata
    )
    meta = Metadata(icc=SRGB_ICC, exif=exif, xmp=xmp)

    def encoded(pixels: np.ndarray, fmt: str, metadata: Metadata = meta) -> bytes:
        return encode(
            pixels,
            fmt,
            metadata,
            quality=outputs.quality,
            lossless=outputs.lossless,
            compress_level=outputs.png_compress_level,
        )

    key, prefix, ext = image.task.output_key, output.rstrip("/"), outputs.extension
    files: dict[str, tuple[str, bytes]] = {}
    if outputs.cutout:
        rgba = np.dstack([rgb, alpha_px])
        files["cutout_uri"] = (
            f"{prefix}/cutouts/{key}.{ext}",
            encoded(rgba, outputs.cutout_format),
        )
    if outputs.mask:  # grey: an RGB profile does not apply, EXIF describes the photo
        files["mask_uri"] = (
            f"{prefix}/masks/{key}.png",
            encoded(alpha_px, "png", Metadata(xmp=xmp)),
        )
    if outputs.composite:
        background = _background(outputs.background, rgb.shape[0], rgb.shape[1], rgb.dtype)
        fmt = outputs.composite_format
        uri = f"{prefix}/composites/{key}.{FORMATS[fmt]}"
        files["composite_uri"] = (uri, encoded(composite(rgb, alpha, background), fmt))
    if outputs.color:
        files["color_uri"] = (f"{prefix}/colors/{key}.{ext}", encoded(rgb, outputs.cutout_format))
    if outputs.psd:  # the original layer as shot; the cutout layer with its clean colour
        framed_original = frame(original, matte.alpha, framing)[0] if clean else rgb
        data = encode_psd(
            to_uint8(framed_original),
            quantise_alpha(alpha, np.uint8),
            SRGB_ICC,
            cutout=to_uint8(rgb),
        )
        files["psd_uri"] = (f"{prefix}/psd/{key}.psd", data)
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
        self, output: str, outputs: OutputSettings, framing: FramingSettings, resume: Resume
    ) -> None:
        self._output = output.rstrip("/")
        self._outputs = outputs
        self._framing = framing
        self._resume = resume

    def process(self, matte: Matte) -> Iterator[dict[str, object] | beam.pvalue.TaggedOutput]:
        task = matte.image.task
        written_uris: list[str] = []
        try:
            check_key(task.output_key)  # keys are checked when read; never write outside
            start = time.perf_counter()
            outputs, framing = with_overrides(self._outputs, self._framing, dict(task.settings))
            files, width, height = render(matte, outputs, framing, self._output)
            encoded = time.perf_counter()
            for uri, data in files.values():
                write_atomic(uri, data, kms_key=outputs.kms_key)
                written_uris.append(uri)
            uris = {column: uri for column, (uri, _) in files.items()}
            self._resume.record(task.output_key, matte.image.source_sha256, uris, task.settings)
            written = time.perf_counter()
        except Exception as err:  # classified errors pass through; the unforeseen get classified
            failure = classify(err, "write", f"{self._output} (key {task.output_key})")
            _remove(written_uris)  # a failed row leaves no outputs behind
            yield beam.pvalue.TaggedOutput("failures", Failed.from_error(task, failure))
            return
        timings = {
            **matte.timings_ms,
            "encode_ms": (encoded - start) * 1e3,
            "write_ms": (written - encoded) * 1e3,
        }
        output_bytes = sum(len(data) for _, data in files.values())
        yield ok_row(matte, uris, output_bytes, timings, (width, height))


class WriteOutputs(beam.PTransform):
    """Matte -> the selected output files, then an `ok` metrics row; failures -> "failures"."""

    def __init__(
        self, output: str, outputs: OutputSettings, framing: FramingSettings, resume: Resume
    ) -> None:
        super().__init__()
        self._output = output
        self._outputs = outputs
        self._framing = framing
        self._resume = resume

    def expand(self, mattes: beam.PCollection) -> beam.pvalue.DoOutputsTuple:
        fn = _WriteFn(self._output, self._outputs, self._framing, self._resume)
        return mattes | "Write" >> beam.ParDo(fn).with_outputs("failures", main="ok")
