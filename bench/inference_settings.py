"""Precision, memory layout and inference size: accuracy against speed on a labelled set.

A benchmark, not a test. Every variant (dtype, inference size, channels_last) runs the model
on every image of the set in this process, through the pipeline's own preprocess and
postprocess, one image at a time. Printed per variant: mean iou, mae and edge_mae, the
change in mean iou against the first variant (the reference: float32 at the model's own
size), the worst category's change, the worst single image's change, and the model's
seconds per image (forward pass, preprocess and upsampling; the first image is a warm-up).

    .venv/bin/python bench/inference_settings.py --data ../shared/data/eval-dev \\
        --variants float32:1024,float32:1024:nhwc,bfloat16:1024:nhwc,bfloat16:768:nhwc \\
        --out out/bench/inference_settings.json
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from matteflow.models.registry import load
from matteflow.transforms.inference import postprocess, preprocess
from matteflow.transforms.quality import edge_mae, iou, mae


def _variant(text: str) -> tuple[str, int, bool]:
    """ "bfloat16:768:nhwc" -> ("bfloat16", 768, True)."""
    dtype, size, *layout = text.split(":")
    return dtype, int(size), layout == ["nhwc"]


def _run(
    model_name: str, variant: str, items: list[tuple[np.ndarray, np.ndarray]]
) -> tuple[list[dict[str, float]], float]:
    """Scores per image and the mean seconds per image (after one warm-up image)."""
    dtype, size, channels_last = _variant(variant)
    model = load(model_name, "cpu", dtype, channels_last=channels_last)
    scored, seconds = [], []
    for rgb, gt in items:
        start = time.perf_counter()
        with torch.inference_mode():
            alpha = model(preprocess(rgb, model.spec, model.device, size)[None])[0]
        pred = postprocess(alpha, *rgb.shape[:2])
        seconds.append(time.perf_counter() - start)
        scored.append({"iou": iou(pred, gt), "mae": mae(pred, gt), "edge_mae": edge_mae(pred, gt)})
    return scored, float(np.mean(seconds[1:] or seconds))


def main() -> None:
    """Run the variants and print (and optionally save) the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/eval-dev"))
    parser.add_argument("--model", default="isnet-general-use")
    parser.add_argument(
        "--variants",
        default="float32:1024,float32:1024:nhwc,bfloat16:1024:nhwc,bfloat16:896:nhwc,"
        "bfloat16:768:nhwc,bfloat16:640:nhwc",
        help="comma-separated dtype:size[:nhwc]; the first is the reference",
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0 = default")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with (args.data / "manifest.csv").open() as f:
        rows = list(csv.DictReader(f))
    items = [
        (
            np.array(Image.open(args.data / r["image"]).convert("RGB")),
            np.asarray(Image.open(args.data / r["alpha"]).convert("L"), np.float32) / 255,
        )
        for r in rows
    ]
    print(f"{len(items)} images, model {args.model}, {torch.get_num_threads()} torch threads")
    results: dict[str, dict[str, object]] = {}
    reference: list[dict[str, float]] = []
    for variant in args.variants.split(","):
        scored, seconds = _run(args.model, variant, items)
        reference = reference or scored
        change = [s["iou"] - r["iou"] for s, r in zip(scored, reference, strict=True)]
        by_category: dict[str, list[float]] = defaultdict(list)
        for row, delta in zip(rows, change, strict=True):
            by_category[row["category"]].append(delta)
        worst_category = min(by_category, key=lambda c: float(np.mean(by_category[c])))
        result = {
            **{k: float(np.mean([s[k] for s in scored])) for k in ("iou", "mae", "edge_mae")},
            "iou_change": float(np.mean(change)),
            "worst_category": worst_category,
            "worst_category_iou_change": float(np.mean(by_category[worst_category])),
            "worst_image_iou_change": float(min(change)),
            "seconds_per_image": seconds,
        }
        results[variant] = result
        print(
            f"{variant:<22} iou {result['iou']:.4f} ({result['iou_change']:+.4f})"
            f"  mae {result['mae']:.4f}  edge_mae {result['edge_mae']:.4f}"
            f"  worst category {worst_category} {result['worst_category_iou_change']:+.4f}"
            f"  worst image {result['worst_image_iou_change']:+.4f}  {seconds:.3f} s/image",
            flush=True,
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
