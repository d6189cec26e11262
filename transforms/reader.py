"""The one way a run reads what a manifest names: images, ground truth and background images.

A `Reader` is built once from the run's source policy and size limits (`decode.max_bytes`,
`decode.max_pixels`) and applies all of them to every read, whichever stage reads. Below every
stage: it imports only storage, sources and failures.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageOps

from matteflow.transforms.failures import DecodeError, ScoreError
from matteflow.transforms.sources import DEFAULT_POLICY, SourcePolicy, check_source
from matteflow.transforms.storage import read_bytes

__all__ = ["DEFAULT_MAX_BYTES", "DEFAULT_MAX_PIXELS", "Reader", "load_alpha", "open_image"]

DEFAULT_MAX_PIXELS = 100_000_000  # larger images fail as decode/too_many_pixels
DEFAULT_MAX_BYTES = 1 << 30  # larger files fail as fetch/too_large; holds any image of max_pixels


def open_image(data: bytes, uri: str, max_pixels: int) -> Image.Image:
    """The image in `data`, opened but not loaded, refused before its pixels are decoded when
    it declares more than `max_pixels` (DecodeError decode/too_many_pixels).

    Pillow's own decompression-bomb check stays on, process-wide: only its warning (images over
    Image.MAX_IMAGE_PIXELS, below twice that) is silenced here, because `max_pixels` decides.
    Images over twice Image.MAX_IMAGE_PIXELS (about 179 MP) are refused by Pillow whatever
    `max_pixels` says. Other errors are Pillow's (UnidentifiedImageError, OSError, ...).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img: Image.Image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as err:
        raise DecodeError(f"{uri}: {err}", code="too_many_pixels") from None
    if img.width * img.height > max_pixels:
        raise DecodeError(
            f"{uri}: {img.width}x{img.height} is over the {max_pixels}-pixel limit",
            code="too_many_pixels",
        )
    return img


def load_alpha(data: bytes, uri: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Alpha bytes (a grey matte, or an image's alpha channel) -> H x W float32 in [0, 1],
    EXIF orientation applied. Raises ScoreError (score/bad_ground_truth) when they do not
    decode, DecodeError (too_many_pixels) over `max_pixels`."""
    try:
        img = ImageOps.exif_transpose(open_image(data, uri, max_pixels))
        if img.mode in ("I;16", "I;16B", "I;16L", "I"):
            return np.asarray(img, dtype=np.float32) / 65535.0
        band = img.getchannel("A") if "A" in img.getbands() else img.convert("L")
        return np.asarray(band, dtype=np.float32) / 255.0
    except (OSError, ValueError, SyntaxError) as err:
        raise ScoreError(f"{uri}: cannot decode ground truth: {err}") from None


@dataclass(frozen=True)
class Reader:
    """Reads sources under the run's policy and limits (picklable, hashable: one per run)."""

    policy: SourcePolicy = field(default=DEFAULT_POLICY)
    max_bytes: int = DEFAULT_MAX_BYTES  # 0: no limit
    max_pixels: int = DEFAULT_MAX_PIXELS

    def read(self, uri: str, deadline: float = 0.0) -> bytes:
        """All bytes of the source at uri: BadRow (manifest/source_not_allowed) outside the
        policy, fetch/too_large over max_bytes, fetch/private_address for an http(s) host on a
        private address (unless the policy allows it), fetch/not_a_file for a local FIFO,
        device or folder, fetch/timeout past `deadline` (time.monotonic(); 0: none); other
        errors classified at fetch."""
        check_source(uri, self.policy)
        data: bytes = read_bytes(
            uri,
            allow_private=self.policy.allow_private,
            max_bytes=self.max_bytes,
            deadline=deadline,
        )
        return data

    def alpha(self, uri: str) -> np.ndarray:
        """The alpha matte at uri (ground truth, a prediction) as `load_alpha` gives it."""
        return load_alpha(self.read(uri), uri, self.max_pixels)

    def shaped_alpha(self, uri: str, height: int, width: int) -> np.ndarray:
        """`alpha(uri)`, which must be H x W: ScoreError (score/size_mismatch) otherwise."""
        alpha = self.alpha(uri)
        if alpha.shape != (height, width):
            raise ScoreError(
                f"{uri}: ground truth is {alpha.shape[1]}x{alpha.shape[0]},"
                f" the image is {width}x{height}",
                code="size_mismatch",
            )
        return alpha
