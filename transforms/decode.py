"""FetchAndDecode: ImageTask -> DecodedImage (bytes via Beam FileSystems, Pillow, EXIF, sRGB).

A row whose outputs are already current (see resume.py) is not decoded: it leaves as a
`skipped` metrics row. Failures leave on the "failures" tag as `Failed` records; no element
kills the bundle.
"""

from __future__ import annotations

import hashlib
import io
import time
import warnings
from collections.abc import Iterator

import apache_beam as beam
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from matteflow.transforms.colour import to_srgb_rgb
from matteflow.transforms.failures import DecodeError, classify
from matteflow.transforms.metrics import skipped_row
from matteflow.transforms.resume import Resume
from matteflow.transforms.storage import read_bytes
from matteflow.transforms.types import DecodedImage, Failed, ImageTask

__all__ = ["FetchAndDecode", "decode"]

_ORIENTATION_TAG = 0x0112
# Leading bytes of formats whose files, when Pillow cannot identify them, were cut short.
_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a")


def decode(task: ImageTask, data: bytes, max_pixels: int) -> DecodedImage:
    """Decode image bytes to sRGB RGB uint8 with EXIF orientation applied.

    Raises DecodeError: unsupported_format, truncated, too_many_pixels (over max_pixels).
    """
    uri = task.source_uri
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img: Image.Image = Image.open(io.BytesIO(data))
            fmt = img.format or "unknown"
            if img.width * img.height > max_pixels:
                raise DecodeError(
                    f"{uri}: {img.width}x{img.height} is over the {max_pixels}-pixel limit",
                    code="too_many_pixels",
                )
            img.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise DecodeError(f"{uri}: {err}", code="too_many_pixels") from None
    except UnidentifiedImageError:
        if data.startswith(_SIGNATURES):
            raise DecodeError(f"{uri}: image ends before its data", code="truncated") from None
        raise DecodeError(f"{uri}: not an image format Pillow can read") from None
    except (OSError, SyntaxError, ValueError) as err:
        # Pillow says "image file is truncated" mid-scan but "Truncated File Read" mid-header.
        text = str(err).lower()
        code = "truncated" if "truncated" in text or "broken" in text else "corrupt"
        raise DecodeError(f"{uri}: {err}", code=code) from None
    orientation = int(img.getexif().get(_ORIENTATION_TAG, 1) or 1)
    if not 1 <= orientation <= 8:  # exif_transpose ignores invalid tags; record what was applied
        orientation = 1
    img = ImageOps.exif_transpose(img)
    rgb, description, notes = to_srgb_rgb(img)
    return DecodedImage(
        task=task,
        rgb=np.array(rgb, dtype=np.uint8),  # a writable array torch can share
        source_format=fmt,
        orientation=orientation,
        icc_description=description,
        warnings=notes,
    )


class _DecodeFn(beam.DoFn):
    def __init__(self, max_pixels: int, resume: Resume) -> None:
        self._max_pixels = max_pixels
        self._resume = resume

    def setup(self) -> None:
        # Our own pixel limit applies; Pillow's global bomb check would fire first otherwise.
        Image.MAX_IMAGE_PIXELS = None

    def process(self, task: ImageTask) -> Iterator[DecodedImage | beam.pvalue.TaggedOutput]:
        start = time.perf_counter()
        try:
            data = read_bytes(task.source_uri)
            fetched = time.perf_counter()
            source_sha256 = hashlib.sha256(data).hexdigest()
            done = self._resume.current(task.output_key, source_sha256)
            if done is not None:
                yield beam.pvalue.TaggedOutput("skipped", skipped_row(task, done, source_sha256))
                return
            image = decode(task, data, self._max_pixels)
        except Exception as err:  # classified errors pass through; the unforeseen get classified
            failure = classify(err, "decode", task.source_uri)
            yield beam.pvalue.TaggedOutput("failures", Failed.from_error(task, failure))
            return
        image.source_sha256 = source_sha256
        image.timings_ms["fetch_ms"] = (fetched - start) * 1e3
        image.timings_ms["decode_ms"] = (time.perf_counter() - fetched) * 1e3
        yield image


class FetchAndDecode(beam.PTransform):
    """ImageTask -> DecodedImage (sRGB, EXIF applied); rows whose outputs are current ->
    tag "skipped" (metrics rows); failures -> tag "failures"."""

    def __init__(self, max_pixels: int, resume: Resume) -> None:
        super().__init__()
        self._max_pixels = max_pixels
        self._resume = resume

    def expand(self, tasks: beam.PCollection) -> beam.pvalue.DoOutputsTuple:
        fn = _DecodeFn(self._max_pixels, self._resume)
        return tasks | "Decode" >> beam.ParDo(fn).with_outputs("skipped", "failures", main="ok")
