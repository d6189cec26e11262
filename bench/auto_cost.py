"""What `--model auto` costs in model time relative to its general model alone.

A benchmark, not a test. Both go through the pipeline's own handler (MatteModelHandler: the
registry models, dtype `auto` resolved for this CPU, `[routing]` defaults), one image per batch,
on every --every-th image of a labelled set; the two alternate image by image and swap order
in the second round, so a shared machine's load falls on both alike. Seconds are wall time of
run_inference (preprocess, forward passes, upsampling, and for auto the routing).

    MATTEFLOW_MODEL_PATH=../shared/models .venv/bin/python bench/auto_cost.py \\
        --data ../shared/data/eval-dev --every 7 --limit 10
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from matteflow.models.registry import resolve_dtype
from matteflow.transforms.inference import MatteModelHandler
from matteflow.transforms.routing import AUTO, RoutingSettings
from matteflow.transforms.types import DecodedImage, ImageTask


def _images(root: Path, every: int, limit: int) -> list[DecodedImage]:
    with (root / "manifest.csv").open() as f:
        rows = list(csv.DictReader(f))[::every][:limit]
    images = []
    for row in rows:
        with Image.open(root / row["image"]) as im:
            rgb = np.array(im.convert("RGB"))
        images.append(DecodedImage(ImageTask(row["id"], row["image"], row["id"]), rgb, "PNG"))
    return images


def main() -> None:
    """Print mean seconds per image of the general model and of auto, and their ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="folder with manifest.csv")
    parser.add_argument("--every", type=int, default=7, help="take every n-th image")
    parser.add_argument("--limit", type=int, default=10, help="at most this many images")
    args = parser.parse_args()
    images = _images(args.data, args.every, args.limit)
    dtype = resolve_dtype("auto", torch.device("cpu"))
    names = (RoutingSettings().general, AUTO)
    handlers = {n: MatteModelHandler(n, "cpu", dtype, max_batch_pixels=1) for n in names}
    models = {n: h.load_model() for n, h in handlers.items()}
    for name in names:  # warm up: first-call allocations, lazy member loads
        list(handlers[name].run_inference(images[:1], models[name]))
    seconds = dict.fromkeys(names, 0.0)
    for order in (names, names[::-1]):
        for image in images:
            for name in order:
                start = time.perf_counter()
                list(handlers[name].run_inference([image], models[name]))
                seconds[name] += time.perf_counter() - start
    per_image = {n: s / (2 * len(images)) for n, s in seconds.items()}
    megapixels = np.mean([im.height * im.width for im in images]) / 1e6
    print(f"{len(images)} images, mean {megapixels:.2f} MP, dtype {dtype}")
    for name, value in per_image.items():
        print(f"  {name}: {value:.3f} s/image")
    print(f"  auto / {names[0]}: {per_image[AUTO] / per_image[names[0]]:.3f}")


if __name__ == "__main__":
    main()
