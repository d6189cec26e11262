"""The records that flow through the pipeline: ImageTask -> DecodedImage -> Matte -> Written,
and the row outcomes besides it (Skipped, Failed), with their typed Timings.

Plain picklable dataclasses with no Beam inside, shared by every stage (below all of them). The
full-resolution pixels travel with the element through the fused stage; only the model-sized
tensor is batched for inference.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

__all__ = [
    "Clock",
    "DecodedImage",
    "Failed",
    "ImageTask",
    "Matte",
    "Scores",
    "Skipped",
    "Timings",
    "Written",
    "elapsed_ms",
]

if TYPE_CHECKING:
    from matteflow.transforms.failures import MatteflowError

# Seconds from an arbitrary start (time.perf_counter): stages take one, so tests can pass a
# clock of their own and assert exact timings.
Clock = Callable[[], float]


def elapsed_ms(start: float, end: float) -> float:
    """Milliseconds between two readings of a Clock."""
    return (end - start) * 1e3


@dataclass(frozen=True)
class Timings:
    """Each stage's time for one image, in milliseconds (None: the stage did not run for it).
    The fields are the metrics columns of the same names."""

    fetch_ms: float | None = None
    decode_ms: float | None = None
    infer_ms: float | None = None
    refine_ms: float | None = None
    score_ms: float | None = None
    encode_ms: float | None = None
    write_ms: float | None = None

    def add(self, **stages: float) -> Timings:
        """These timings with the given stages' times set."""
        return dataclasses.replace(self, **stages)

    @property
    def total_ms(self) -> float:
        """The sum of the stages that ran."""
        return float(sum(v for v in dataclasses.astuple(self) if v is not None))


@dataclass(frozen=True)
class Scores:
    """An alpha scored against ground truth (quality.py defines each); the fields are the
    metrics columns of the same names."""

    iou: float
    mae: float
    edge_mae: float
    sad: float
    mse: float
    gradient_error: float
    boundary_f: float


@dataclass(frozen=True)
class ImageTask:
    """One manifest row: what to read and under which key to write."""

    id: str
    source_uri: str
    output_key: str
    ground_truth_uri: str | None = None
    metadata: tuple[tuple[str, str], ...] = ()  # other manifest columns, carried to metrics
    settings: tuple[tuple[str, str], ...] = ()  # the row's allowed settings (settings.py)


@dataclass
class DecodedImage:
    """A task with its pixels: `rgb` is H x W x 3 uint8 sRGB, EXIF orientation applied."""

    task: ImageTask
    rgb: np.ndarray
    source_format: str
    rgb16: np.ndarray | None = None  # H x W x 3 uint16 sRGB of a 16-bit source
    source_alpha: np.ndarray | None = None  # H x W uint8/uint16 alpha of a transparent source
    bit_depth: int = 8  # bits per sample of the source
    frames: int = 1  # frames in the source; only the first is processed
    orientation: int = 1  # the EXIF orientation tag that was applied (1 = none)
    icc_description: str = ""  # the embedded profile converted from, "" when untagged
    exif: bytes = b""  # the source's EXIF block, orientation reset to 1 ("" when none)
    warnings: tuple[str, ...] = ()  # classified, non-fatal notes (e.g. "decode/corrupt_icc")
    source_sha256: str = ""  # of the source bytes: the resume fingerprint and the audit trail
    timings: Timings = field(default_factory=Timings)

    @property
    def height(self) -> int:
        """Rows of the full-resolution image."""
        return int(self.rgb.shape[0])

    @property
    def width(self) -> int:
        """Columns of the full-resolution image."""
        return int(self.rgb.shape[1])


@dataclass
class Matte:
    """A decoded image plus its alpha: H x W float32 in [0, 1] at full resolution."""

    image: DecodedImage
    alpha: np.ndarray
    model: str
    model_sha256: str
    device: str
    dtype: str
    batch_size: int
    timings: Timings = field(default_factory=Timings)  # every stage so far
    scores: Scores | None = None  # against the row's ground truth, when it has one
    uncertainty: float = 0.0  # ambiguous share of the subject in the model's output (refine.py)
    needs_review: bool = False  # uncertainty at or above the run's review threshold
    foreground: np.ndarray | None = None  # decontaminated colour, same shape/dtype as the source
    licence_class: str = ""  # of the model that made the alpha (models.toml licence_class)
    # S x S x 3 float32 in [0, 1] at the model's resolution: foreground colour the model itself
    # predicted (RVM's fgr); Refine upsamples it where it is needed
    model_foreground: np.ndarray | None = None


@dataclass(frozen=True)
class Failed:
    """A row that stopped at `stage` with a stable `code`; becomes a failed metrics row."""

    task: ImageTask
    stage: str
    code: str
    message: str

    @classmethod
    def from_error(cls, task: ImageTask, err: MatteflowError) -> Failed:
        """The failure record for `task` from a classified error."""
        return cls(task, err.stage, err.code, str(err))


@dataclass(frozen=True)
class Written:
    """A matte whose outputs are written: kind's metrics column -> URI, their total size and
    the (framed) size of the written images."""

    matte: Matte
    uris: dict[str, str]
    output_bytes: int
    width: int
    height: int


@dataclass(frozen=True)
class Skipped:
    """A row whose outputs were current (see resume.py): nothing was redone."""

    task: ImageTask
    outputs: dict[str, str]  # the recorded outputs, by metrics column
    source_sha256: str
