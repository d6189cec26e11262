"""Photo-sized inputs for the speed benchmarks: eval-dev images upscaled with Lanczos.

eval-dev's images are at most ~1.6 MP; catalog photos are 2-24 MP. `upscaled` writes `count`
of them (cycling through the manifest) as JPEG (quality 92, as a camera or a catalog export
writes them) of about `megapixels` each, into a folder outside the repository, and reuses the
files when they are already there. Used by bench/profile.py and bench/throughput.py --whole.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from PIL import Image

__all__ = ["upscaled"]


def upscaled(data: Path, count: int, megapixels: float, folder: Path) -> list[Path]:
    """`count` JPEGs of about `megapixels` each in `folder`, from the images of `data`
    (a folder with manifest.csv, column `image`), upscaled with Lanczos."""
    with (data / "manifest.csv").open() as f:
        rows = list(csv.DictReader(f))
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        source = data / rows[i % len(rows)]["image"]
        path = folder / f"{i:03d}-{source.stem}.jpg"
        if not path.exists():
            with Image.open(source) as img:
                rgb = img.convert("RGB")
            scale = math.sqrt(megapixels * 1e6 / (rgb.width * rgb.height))
            size = (round(rgb.width * scale), round(rgb.height * scale))
            rgb.resize(size, Image.Resampling.LANCZOS).save(path, quality=92)
        paths.append(path)
    return paths
