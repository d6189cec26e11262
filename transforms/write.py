"""WriteOutputs: Matte -> files under the output prefix, its resume state, then an `ok` row.

`{output}/cutouts/{key}.png` (RGBA, 8-bit) and `{output}/masks/{key}.png` (8-bit grey alpha).
Every file is written under a hidden temporary name beside its final name and renamed into
place, so no reader ever sees a partial file at a final name.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from dataclasses import dataclass

import apache_beam as beam
import numpy as np
from PIL import Image

from matteflow.transforms.failures import classify
from matteflow.transforms.manifest import check_key
from matteflow.transforms.metrics import ok_row
from matteflow.transforms.resume import Resume
from matteflow.transforms.storage import write_atomic
from matteflow.transforms.types import Failed, Matte

__all__ = ["OutputSettings", "WriteOutputs", "alpha_to_uint8", "encode_png"]


@dataclass(frozen=True)
class OutputSettings:
    """Which files to write and how to encode them."""

    cutout: bool = True
    mask: bool = True
    png_compress_level: int = 1  # zlib level; 1 is several times faster than 6, files ~15% bigger


def alpha_to_uint8(alpha: np.ndarray) -> np.ndarray:
    """H x W float alpha in [0, 1] -> uint8 (rounded)."""
    return np.rint(np.clip(alpha, 0.0, 1.0) * 255.0).astype(np.uint8)


def encode_png(pixels: np.ndarray, compress_level: int) -> bytes:
    """H x W (grey) or H x W x 4 (RGBA) uint8 -> PNG bytes."""
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


class _WriteFn(beam.DoFn):
    def __init__(self, output: str, settings: OutputSettings, resume: Resume) -> None:
        self._output = output.rstrip("/")
        self._settings = settings
        self._resume = resume

    def _files(self, matte: Matte) -> dict[str, tuple[str, bytes]]:
        """{metrics column: (uri, encoded bytes)} for each enabled output."""
        level = self._settings.png_compress_level
        alpha8 = alpha_to_uint8(matte.alpha)
        key = matte.image.task.output_key
        files = {}
        if self._settings.cutout:
            rgba = np.dstack([matte.image.rgb, alpha8])
            files["cutout_uri"] = (f"{self._output}/cutouts/{key}.png", encode_png(rgba, level))
        if self._settings.mask:
            files["mask_uri"] = (f"{self._output}/masks/{key}.png", encode_png(alpha8, level))
        return files

    def process(self, matte: Matte) -> Iterator[dict[str, object] | beam.pvalue.TaggedOutput]:
        task = matte.image.task
        try:
            check_key(task.output_key)  # keys are checked when read; never write outside
            start = time.perf_counter()
            files = self._files(matte)
            encoded = time.perf_counter()
            for uri, data in files.values():
                write_atomic(uri, data)
            uris = {column: uri for column, (uri, _) in files.items()}
            self._resume.record(task.output_key, matte.image.source_sha256, uris)
            written = time.perf_counter()
        except Exception as err:  # classified errors pass through; the unforeseen get classified
            failure = classify(err, "write", f"{self._output} (key {task.output_key})")
            yield beam.pvalue.TaggedOutput("failures", Failed.from_error(task, failure))
            return
        timings = {
            **matte.timings_ms,
            "encode_ms": (encoded - start) * 1e3,
            "write_ms": (written - encoded) * 1e3,
        }
        yield ok_row(matte, uris, sum(len(data) for _, data in files.values()), timings)


class WriteOutputs(beam.PTransform):
    """Matte -> cutout and mask files, then an `ok` metrics row; failures -> tag "failures"."""

    def __init__(self, output: str, settings: OutputSettings, resume: Resume) -> None:
        super().__init__()
        self._output = output
        self._settings = settings
        self._resume = resume

    def expand(self, mattes: beam.PCollection) -> beam.pvalue.DoOutputsTuple:
        fn = _WriteFn(self._output, self._settings, self._resume)
        return mattes | "Write" >> beam.ParDo(fn).with_outputs("failures", main="ok")
