"""Encode cost per megapixel of every output format, on one photo-like RGBA image.

A benchmark, not a test. The image is examples/sample/coffee.jpg upscaled to --megapixels with
a soft-edged elliptical alpha (16-bit variants use the same pixels scaled to 16 bits). Each
format is encoded --repeats times in this process; the table gives the median seconds per
megapixel, the ratio to 8-bit PNG at level 1 (the default cutout, measured in the same run),
and the file size per megapixel.

    .venv/bin/python bench/formats.py --out out/bench/formats.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from matteflow.transforms.colour import SRGB_ICC
from matteflow.transforms.encode import Metadata, encode, provenance_xmp
from matteflow.transforms.psd import encode_psd
from matteflow.transforms.write import composite

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO / "examples" / "sample" / "coffee.jpg"


def _image(megapixels: float) -> tuple[np.ndarray, np.ndarray]:
    """(H x W x 3 uint8 photo, H x W float32 soft ellipse alpha) of about `megapixels`."""
    with Image.open(SOURCE) as img:
        ratio = img.width / img.height
        height = round((megapixels * 1e6 / ratio) ** 0.5)
        width = round(height * ratio)
        rgb = np.asarray(img.convert("RGB").resize((width, height), Image.Resampling.BICUBIC))
    y, x = np.ogrid[:height, :width]
    r = np.hypot((x - width / 2) / (0.35 * width), (y - height / 2) / (0.4 * height))
    alpha = np.clip((1.0 - r) * 20.0, 0.0, 1.0).astype(np.float32)
    return rgb, alpha


def main() -> None:
    """Time every format and print (and optionally save) the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megapixels", type=float, default=12.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()
    rgb, alpha = _image(args.megapixels)
    alpha8 = np.rint(alpha * 255).astype(np.uint8)
    rgba8 = np.dstack([rgb, alpha8])
    rgba16 = rgba8.astype(np.uint16) * 257
    meta = Metadata(SRGB_ICC, b"", provenance_xmp({"model": "bench"}))
    white = np.array([255.0, 255.0, 255.0])
    cases: dict[str, Callable[[], bytes]] = {
        "png 8-bit level 1 (default cutout)": lambda: encode(rgba8, "png", meta),
        "png 8-bit level 6": lambda: encode(rgba8, "png", meta, compress_level=6),
        "png 16-bit level 1": lambda: encode(rgba16, "png", meta),
        "png mask 8-bit": lambda: encode(alpha8, "png", meta),
        "webp lossless": lambda: encode(rgba8, "webp", meta),
        "webp lossy q90": lambda: encode(rgba8, "webp", meta, lossless=False),
        "tiff 8-bit deflate": lambda: encode(rgba8, "tiff", meta),
        "tiff 16-bit deflate": lambda: encode(rgba16, "tiff", meta),
        "avif q90": lambda: encode(rgba8, "avif", meta),
        "jpeg composite q90 (incl. compositing)": lambda: encode(
            composite(rgb, alpha, white), "jpeg", meta
        ),
        "psd layered": lambda: encode_psd(rgb, alpha8, SRGB_ICC),
    }
    megapixels = rgb.shape[0] * rgb.shape[1] / 1e6
    print(f"{rgb.shape[1]}x{rgb.shape[0]} ({megapixels:.1f} MP), median of {args.repeats}")
    results = []
    for name, run in cases.items():
        times, size = [], 0
        for _ in range(args.repeats):
            start = time.perf_counter()
            size = len(run())
            times.append(time.perf_counter() - start)
        results.append(
            {
                "format": name,
                "s_per_mp": statistics.median(times) / megapixels,
                "mb_per_mp": size / 2**20 / megapixels,
            }
        )
    base = results[0]["s_per_mp"]
    print(f"{'format':42} {'s/MP':>7} {'x png-1':>8} {'MB/MP':>7}")
    for r in results:
        r["ratio_to_png_level_1"] = r["s_per_mp"] / base
        print(
            f"{r['format']:42} {r['s_per_mp']:7.3f} {r['ratio_to_png_level_1']:8.2f}"
            f" {r['mb_per_mp']:7.2f}"
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        payload = {"megapixels": megapixels, "repeats": args.repeats, "results": results}
        args.out.write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
