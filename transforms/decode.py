"""FetchAndDecode: ImageTask -> DecodedImage (bytes via the run's Reader, Pillow, EXIF, sRGB).

Formats: whatever Pillow reads (JPEG, PNG, WebP, TIFF, BMP, GIF, AVIF, ...) plus HEIC/HEIF
through pillow-heif; animated files give their first frame. 16-bit RGB PNG and TIFF, which
Pillow truncates, are read with imagecodecs and tifffile and keep 16 bits through colour
conversion (`DecodedImage.rgb16`). A source alpha channel travels as `source_alpha`. Camera
RAW files are rendered by LibRaw to 16-bit sRGB (raw.py).

A row whose outputs are already current (see resume.py) is not decoded: it leaves as a
`Skipped` record (a `skipped` metrics row). Failures leave on the "failures" tag as `Failed`
records; no element kills the bundle.
"""

from __future__ import annotations

import hashlib
import io
import struct
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field

import apache_beam as beam
import imagecodecs
import numpy as np
import pillow_heif
import tifffile
from PIL import ExifTags, Image, UnidentifiedImageError

from matteflow.transforms.coders import with_record_outputs
from matteflow.transforms.colour import INTENTS, SIXTEEN_BIT_GREY, to_srgb_rgb, wide_to_srgb
from matteflow.transforms.encode import to_uint8
from matteflow.transforms.failures import DecodeError, classify
from matteflow.transforms.raw import RAW_WHITE_BALANCES, is_raw, render_raw
from matteflow.transforms.reader import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, Reader, open_image
from matteflow.transforms.resume import AFFECTS_OUTPUT, Resume
from matteflow.transforms.storage import check_deadline
from matteflow.transforms.types import Clock, DecodedImage, Failed, ImageTask, Skipped, elapsed_ms

__all__ = ["MAX_EXIF_BYTES", "DecodeSettings", "FetchAndDecode", "decode", "orient"]

pillow_heif.register_heif_opener()

_ORIENTATION_TAG = 0x0112
# First-directory EXIF tags worth keeping: description, make, model, resolution, software, date,
# artist, copyright; and the Exif and GPS sub-directories.
_EXIF_KEPT = (0x010E, 0x010F, 0x0110, 0x011A, 0x011B, 0x0128, 0x0131, 0x0132, 0x013B, 0x8298)
_EXIF_DIRECTORIES = (ExifTags.IFD.Exif, ExifTags.IFD.GPSInfo)
# Leading bytes of formats whose files, when Pillow cannot identify them, were cut short, unless
# their header declares a zero width or height: where that header keeps the two (offset, struct
# format). A JPEG's frame header has no fixed place.
_HEADERS: tuple[tuple[bytes, int, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", 16, ">II"),
    (b"GIF87a", 6, "<HH"),
    (b"GIF89a", 6, "<HH"),
    (b"\xff\xd8\xff", 0, ""),
)
# The most EXIF an output carries: one JPEG APP1 segment holds 65,527 bytes of it, and this
# leaves room for the Software tag that encode adds. Larger blocks lose their largest entries
# (a maker note, a user comment, a thumbnail-sized blob) until they fit: warning
# decode/exif_too_large. A 5 MB EXIF would otherwise grow every output by 5 MB and make a JPEG
# composite fail.
MAX_EXIF_BYTES = 60_000
_PNG_BIT_DEPTH = 24  # offset of the bit depth in a PNG (signature, IHDR length/type, W, H)
_TIFF_BITS_PER_SAMPLE = 258


@dataclass(frozen=True)
class DecodeSettings:
    """Limits and colour handling applied while decoding."""

    max_pixels: int = DEFAULT_MAX_PIXELS  # larger images fail as decode/too_many_pixels
    # larger files fail as fetch/too_large, read no further; 1 GiB holds any image of max_pixels
    max_bytes: int = DEFAULT_MAX_BYTES
    # ICC rendering intent: perceptual | relative | saturation | absolute
    intent: str = field(default="perceptual", metadata=AFFECTS_OUTPUT)
    # camera RAW: camera | auto | daylight (see raw.py)
    raw_white_balance: str = field(default="camera", metadata=AFFECTS_OUTPUT)
    # camera RAW: stops brighter than LibRaw's rendering, -2..+3
    raw_exposure: float = field(default=0.0, metadata=AFFECTS_OUTPUT)
    # seconds one row may spend fetching and decoding its source (a byte-a-minute server, a
    # huge EXIF block); past it the row fails as fetch/timeout or decode/timeout
    row_timeout_s: float = 300.0

    def __post_init__(self) -> None:
        if self.intent not in INTENTS:
            raise ValueError(f"intent: expected one of {', '.join(INTENTS)}, got {self.intent!r}")
        if self.raw_white_balance not in RAW_WHITE_BALANCES:
            raise ValueError(
                f"raw_white_balance: expected one of {', '.join(RAW_WHITE_BALANCES)},"
                f" got {self.raw_white_balance!r}"
            )
        if not -2.0 <= self.raw_exposure <= 3.0:  # LibRaw's exp_shift range, 0.25x..8x
            raise ValueError(f"raw_exposure: expected -2..3 stops, got {self.raw_exposure}")
        if not self.row_timeout_s > 0:
            raise ValueError(f"row_timeout_s: expected a positive number, got {self.row_timeout_s}")


def orient(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """Turn H x W (x C) pixels stored with EXIF `orientation` (1-8) upright."""
    turned = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.swapaxes(0, 1),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
        8: lambda a: np.rot90(a, 1),
    }
    return np.ascontiguousarray(turned[orientation](pixels)) if orientation in turned else pixels


def _open(
    uri: str, data: bytes, max_pixels: int
) -> tuple[Image.Image, bytes, int, tuple[str, ...]]:
    """(the first frame, loaded; its EXIF block; the orientation to apply; warnings).

    Raises DecodeError (empty, unsupported_format, truncated, corrupt, too_many_pixels).
    """
    if not data:
        raise DecodeError(f"{uri}: empty file (0 bytes)", code="empty")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            img = open_image(data, uri, max_pixels)
            if img.format == "PNG":  # its getexif() loads the pixels; their errors count here
                img.load()
            exif, orientation, notes = _exif(img)  # before load(): see _exif
            img.load()
    except UnidentifiedImageError:
        for signature, offset, sizes in _HEADERS:
            if not data.startswith(signature):
                continue
            complete = sizes and len(data) >= offset + struct.calcsize(sizes)
            if complete and 0 in struct.unpack_from(sizes, data, offset):
                raise DecodeError(f"{uri}: header declares a zero size", code="corrupt") from None
            raise DecodeError(f"{uri}: image ends before its data", code="truncated") from None
        raise DecodeError(f"{uri}: not an image format Pillow can read") from None
    except (OSError, SyntaxError, ValueError) as err:
        # Pillow says "image file is truncated" mid-scan, "Truncated File Read" mid-header and
        # "Broken PNG file" past the end, but "broken data stream" for corrupt data.
        text = str(err).lower()
        cut = "truncated" in text or "broken png" in text or _riff_cut_short(data)
        raise DecodeError(f"{uri}: {err}", code="truncated" if cut else "corrupt") from None
    for warning in caught:  # Pillow warns, rather than raises, on a malformed EXIF block
        if "exif" in str(warning.message).lower():
            notes = ("decode/corrupt_exif",)
        else:
            warnings.warn_explicit(
                warning.message, warning.category, warning.filename, warning.lineno
            )
    return img, exif, orientation, notes


def _riff_cut_short(data: bytes) -> bool:
    """Whether a RIFF file (WebP) is shorter than the length its header declares."""
    return data[:4] == b"RIFF" and len(data) < 8 + int.from_bytes(data[4:8], "little")


def _exif(img: Image.Image | Image.Exif) -> tuple[bytes, int, tuple[str, ...]]:
    """(the EXIF block outputs keep, the orientation to apply, warnings) of an image, or of an
    EXIF block already parsed.

    The block keeps the descriptive first-directory tags and the Exif and GPS directories, not
    a TIFF's own structure (strips, samples, its ICC profile). The orientation tag is removed
    from the image before it loads, so Pillow (which turns TIFFs itself) never turns pixels;
    `orient` does, for every reader alike.
    """
    try:
        source = img if isinstance(img, Image.Exif) else img.getexif()
        orientation = int(source.get(_ORIENTATION_TAG, 1) or 1)
        source.pop(_ORIENTATION_TAG, None)
        kept = Image.Exif()
        for tag in _EXIF_KEPT:
            if tag in source:
                kept[tag] = source[tag]
        for tag in _EXIF_DIRECTORIES:
            if tag in source:
                kept[tag] = source.get_ifd(tag)
        if len(kept):
            kept[_ORIENTATION_TAG] = 1
        block, notes = _capped(kept)
    except Exception:  # Pillow raises many kinds on a malformed EXIF block
        return b"", 1, ("decode/corrupt_exif",)
    return block, orientation if 1 <= orientation <= 8 else 1, notes


def _capped(exif: Image.Exif) -> tuple[bytes, tuple[str, ...]]:
    """exif's bytes ("" when empty), its largest entries dropped until it fits MAX_EXIF_BYTES."""
    block = exif.tobytes() if len(exif) else b""
    if len(block) <= MAX_EXIF_BYTES:
        return block, ()
    entries: list[tuple[int, dict[int, object], int]] = []  # (size, directory, tag)
    directories: list[dict[int, object]] = [exif]  # type: ignore[list-item]
    directories += [exif[tag] for tag in _EXIF_DIRECTORIES if isinstance(exif.get(tag), dict)]
    for directory in directories:
        for tag, value in directory.items():
            if isinstance(value, bytes | str | tuple):
                entries.append((len(value), directory, tag))
    for _, directory, tag in sorted(entries, key=lambda e: -e[0]):
        del directory[tag]
        block = exif.tobytes()
        if len(block) <= MAX_EXIF_BYTES:
            return block, ("decode/exif_too_large",)
    return b"", ("decode/exif_too_large",)


def _bits(img: Image.Image, data: bytes) -> int:
    """Bits per sample of the source (Pillow reports 16-bit RGB as 8-bit modes)."""
    if img.mode in SIXTEEN_BIT_GREY:
        return 16
    if img.format == "PNG" and len(data) > _PNG_BIT_DEPTH:
        return int(data[_PNG_BIT_DEPTH])
    if img.format == "TIFF":
        bits = img.tag_v2.get(_TIFF_BITS_PER_SAMPLE, 8)  # type: ignore[attr-defined]
        return int(max(bits) if isinstance(bits, tuple) else bits)
    return 8


def _wide_pixels(img: Image.Image, data: bytes) -> np.ndarray | None:
    """H x W x C uint16 samples (grey, grey+alpha, RGB, RGBA) of a 16-bit source, else None."""
    if _bits(img, data) != 16:
        return None
    if img.mode in SIXTEEN_BIT_GREY:
        return np.asarray(img).astype(np.uint16)[..., None]
    if img.format == "PNG" and img.mode in ("RGB", "RGBA", "LA"):
        pixels = imagecodecs.png_decode(data)
    elif img.format == "TIFF" and img.mode in ("RGB", "RGBA", "LA"):
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            page = tif.pages[0]
            pixels = page.asarray()
            if page.axes.startswith("S"):  # planar configuration: samples first
                pixels = np.moveaxis(pixels, 0, -1)
    else:  # 16-bit CMYK and other rarities: Pillow's 8 bits
        return None
    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint16:
        return None
    return pixels if pixels.ndim == 3 else pixels[..., None]


def _alpha(img: Image.Image) -> np.ndarray | None:
    """H x W uint8 alpha of an image with transparency, None when it is opaque."""
    if "A" not in img.getbands() and "transparency" not in img.info:
        return None
    alpha = np.asarray(img.convert("RGBA").getchannel("A"))
    return None if alpha.min() == 255 else alpha


def decode(task: ImageTask, data: bytes, settings: DecodeSettings) -> DecodedImage:
    """Decode image bytes to upright sRGB pixels (8-bit, and 16-bit for 16-bit sources).

    Raises DecodeError: empty, unsupported_format, truncated, corrupt, too_many_pixels.
    """
    if data and is_raw(task.source_uri, data):
        return _decode_raw(task, data, settings)
    img, exif, orientation, notes = _open(task.source_uri, data, settings.max_pixels)
    frames = int(getattr(img, "n_frames", 1))
    icc = img.info.get("icc_profile") or None
    wide = _wide_pixels(img, data)
    rgb16: np.ndarray | None = None
    if wide is not None:
        colour_channels = 1 if wide.shape[2] <= 2 else 3
        rgb16, description, colour_notes = wide_to_srgb(
            wide[..., :colour_channels], icc, settings.intent
        )
        alpha = wide[..., colour_channels] if wide.shape[2] in (2, 4) else None
        if alpha is not None and alpha.min() == 65535:
            alpha = None
        rgb = to_uint8(rgb16)
    else:
        alpha = _alpha(img)
        converted, description, colour_notes = to_srgb_rgb(img, settings.intent)
        rgb = np.array(converted, dtype=np.uint8)  # a writable array torch can share
    if frames > 1:
        notes += ("decode/first_frame_only",)
    return DecodedImage(
        task=task,
        rgb=orient(rgb, orientation),
        rgb16=None if rgb16 is None else orient(rgb16, orientation),
        source_alpha=None if alpha is None else orient(alpha, orientation),
        source_format=img.format or "unknown",
        bit_depth=16 if wide is not None else 8,
        frames=frames,
        orientation=orientation,
        icc_description=description,
        exif=exif,
        warnings=notes + colour_notes,
    )


def _decode_raw(task: ImageTask, data: bytes, settings: DecodeSettings) -> DecodedImage:
    """A camera RAW rendered by LibRaw (raw.py): 16-bit sRGB, upright; the model gets 8 bits."""
    raw = render_raw(
        task.source_uri,
        data,
        white_balance=settings.raw_white_balance,
        exposure=settings.raw_exposure,
        max_pixels=settings.max_pixels,
    )
    rgb16 = orient(raw.rgb16, raw.orientation)
    exif, _, notes = _raw_exif(data)
    return DecodedImage(
        task=task,
        rgb=to_uint8(rgb16),
        rgb16=rgb16,
        source_format="RAW",
        bit_depth=16,
        orientation=raw.orientation,
        exif=exif,
        warnings=notes,
    )


def _raw_exif(data: bytes) -> tuple[bytes, int, tuple[str, ...]]:
    """`_exif` of a TIFF-shaped RAW (DNG, NEF, CR2, ARW, ...), whose first directory is laid
    out as EXIF is; nothing for the others (CR3, RAF, ...)."""
    if data[:4] not in (b"II*\0", b"MM\0*"):
        return b"", 1, ()
    source = Image.Exif()
    try:
        source.load(data)
    except Exception:  # Pillow raises many kinds on a malformed directory
        return b"", 1, ("decode/corrupt_exif",)
    return _exif(source)


class _DecodeFn(beam.DoFn):
    def __init__(
        self,
        settings: DecodeSettings,
        resume: Resume,
        reader: Reader | None = None,
        clock: Clock = time.perf_counter,
    ) -> None:
        self._settings = settings
        self._resume = resume
        self._reader = reader or _reader(settings)
        self._clock = clock

    def process(
        self, task: ImageTask
    ) -> Iterator[DecodedImage | beam.pvalue.TaggedOutput[str, Skipped | Failed]]:
        start = self._clock()
        deadline = time.monotonic() + self._settings.row_timeout_s  # wall time, not the clock
        try:
            data = self._reader.read(task.source_uri, deadline=deadline)
            fetched = self._clock()
            source_sha256 = hashlib.sha256(data).hexdigest()
            done = self._resume.current(task.output_key, source_sha256, task.settings)
            if done is not None:
                yield beam.pvalue.TaggedOutput("skipped", Skipped(task, done, source_sha256))
                return
            image = decode(task, data, self._settings)
            # Pillow cannot be interrupted: a decode that ran past the deadline fails after it
            check_deadline(deadline, task.source_uri, "decode")
        except Exception as err:  # classified errors pass through; the unforeseen get classified
            failure = classify(err, "decode", task.source_uri)
            yield beam.pvalue.TaggedOutput("failures", Failed.from_error(task, failure))
            return
        image.source_sha256 = source_sha256
        image.timings = image.timings.add(
            fetch_ms=elapsed_ms(start, fetched), decode_ms=elapsed_ms(fetched, self._clock())
        )
        yield image


def _reader(settings: DecodeSettings) -> Reader:
    """The default policy's Reader with the settings' size limits."""
    return Reader(max_bytes=settings.max_bytes, max_pixels=settings.max_pixels)


class FetchAndDecode(
    beam.PTransform[beam.pvalue.PCollection[ImageTask], beam.pvalue.DoOutputsTuple]
):
    """ImageTask -> DecodedImage (sRGB, EXIF applied); rows whose outputs are current ->
    tag "skipped" (Skipped records); failures -> tag "failures". Sources are read by `reader`
    (the run's source policy and size limits; default: the default policy, `settings`' limits).
    """

    def __init__(
        self,
        settings: DecodeSettings,
        resume: Resume,
        reader: Reader | None = None,
        clock: Clock = time.perf_counter,
    ) -> None:
        super().__init__()
        self._settings = settings
        self._resume = resume
        self._reader = reader or _reader(settings)
        self._clock = clock

    def expand(self, tasks: beam.pvalue.PCollection[ImageTask]) -> beam.pvalue.DoOutputsTuple:
        fn = _DecodeFn(self._settings, self._resume, self._reader, self._clock)
        decode = with_record_outputs(beam.ParDo(fn), DecodedImage, skipped=Skipped, failures=Failed)
        outputs: beam.pvalue.DoOutputsTuple = tasks | "Decode" >> decode
        return outputs
