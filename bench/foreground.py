"""Foreground colour (decontamination) by working size: error against a known foreground, and cost.

A benchmark, not a test. For each labelled image with a true alpha matte (manifest `gt_kind`
alpha), a composite with a KNOWN foreground is made: F = the image itself, B = another image of
the set, I = a F + (1 - a) B at `--upscale` times the native size (Lanczos; alpha bilinear),
rounded to 8 bits. `decontaminate(I, a, side)` then estimates F back for each `--sides` working
size (0: the full image). Printed per side: the mean error a |F_est - F| over the edge band, in
8-bit levels (what a cutout over any new background shows: a composite differs by exactly
a (F_est - F)), beside the raw image's (no decontamination), and seconds per megapixel.

    .venv/bin/python bench/foreground.py --data ../shared/data/eval-dev --upscale 1
    .venv/bin/python bench/foreground.py --data ../shared/data/eval-dev --upscale 3 --first 19
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np
from PIL import Image

from matteflow.transforms.foreground import decontaminate


def _composite(
    data: Path, row: dict[str, str], other: dict[str, str], upscale: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image uint8, alpha float32, true foreground float32 in [0, 1]) at `upscale`x."""
    with Image.open(data / row["image"]) as img, Image.open(data / row["alpha"]) as matte:
        size = (round(img.width * upscale), round(img.height * upscale))
        fg = np.asarray(img.convert("RGB").resize(size, Image.Resampling.LANCZOS), np.float32)
        alpha = np.asarray(matte.convert("L").resize(size, Image.Resampling.BILINEAR), np.float32)
    with Image.open(data / other["image"]) as img:
        bg = np.asarray(img.convert("RGB").resize(size, Image.Resampling.LANCZOS), np.float32)
    a = alpha[..., None] / 255
    image = np.rint(a * fg + (1 - a) * bg).astype(np.uint8)
    return image, alpha / 255, fg / 255


def _error(colour: np.ndarray, alpha: np.ndarray, fg: np.ndarray, band: np.ndarray) -> float:
    """Mean alpha |colour - fg| over `band`, in 8-bit levels (`colour` uint8)."""
    off = alpha[..., None] * np.abs(colour.astype(np.float32) / 255 - fg)
    return float(off[band].mean() * 255)


def main() -> None:
    """Print the error and cost table for each working size."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--upscale", type=float, default=1.0)
    parser.add_argument("--sides", default="0,2048,1024,512")
    parser.add_argument("--first", type=int, default=0, help="skip the manifest's first rows")
    parser.add_argument("--images", type=int, default=20)
    args = parser.parse_args()
    sides = [int(s) for s in args.sides.split(",")]
    with (args.data / "manifest.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r["gt_kind"] == "alpha"]
    errors: dict[str, list[float]] = {"raw": [], **{str(s): [] for s in sides}}
    seconds = dict.fromkeys(map(str, sides), 0.0)
    megapixels = 0.0
    chosen = rows[args.first : args.first + args.images]
    for i, row in enumerate(chosen):
        other = rows[(args.first + i + 7) % len(rows)]
        image, alpha, fg = _composite(args.data, row, other, args.upscale)
        band = (alpha > 1 / 512) & (alpha < 1 - 1 / 512)
        if not band.any():
            continue
        errors["raw"].append(_error(image, alpha, fg, band))
        megapixels += alpha.size / 1e6
        for side in sides:
            start = time.perf_counter()
            clean = decontaminate(image, alpha, side)
            seconds[str(side)] += time.perf_counter() - start
            errors[str(side)].append(_error(clean, alpha, fg, band))
    print(f"{len(errors['raw'])} composites, {megapixels:.1f} MP, upscale {args.upscale}x")
    print(f"{'working side':>14} {'error (levels)':>15} {'vs raw':>8} {'s/MP':>6}")
    raw = float(np.mean(errors["raw"]))
    print(f"{'raw':>14} {raw:15.3f} {'':>8} {'':>6}")
    for side in sides:
        mean = float(np.mean(errors[str(side)]))
        label = "full image" if side == 0 else f"{side} px"
        cost = seconds[str(side)] / megapixels
        print(f"{label:>14} {mean:15.3f} {mean / raw - 1:+8.1%} {cost:6.3f}")


if __name__ == "__main__":
    main()
