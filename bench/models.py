"""The model zoo on eval-dev: per model and category, IoU, MAE and edge MAE against the ground
truth, and seconds per image, all in one run on one machine; and (--normalisation) U²-Net-p
under the preprocessing variants that decide its registry entry.

Each model runs as the pipeline runs it (registry preprocessing, `load` with the profile's
defaults: dtype auto, channels_last, one thread), alone: no refinement. Seconds cover
preprocess + forward + upsampling the alpha, the median over images. Writes JSON.

    .venv/bin/python bench/models.py --out out/bench/models.json
    .venv/bin/python bench/models.py --normalisation --out out/bench/u2netp-norm.json
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from PIL import Image

from matteflow.models.registry import load
from matteflow.transforms.inference import postprocess, preprocess
from matteflow.transforms.quality import edge_mae, iou, mae

_HERE = Path(__file__).resolve()
_SHARED = Path(os.environ.get("MATTEFLOW_SHARED_DIR") or _HERE.parents[2] / "shared")
_MODELS = ["isnet-general-use", "u2netp", "rvm-mobilenetv3"]
_IMAGENET = (np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225]))


def _items(data: Path, limit: int) -> list[dict[str, str]]:
    with (data / "manifest.csv").open() as f:
        rows = list(csv.DictReader(f))
    return rows[:limit] if limit else rows


def _load_pair(data: Path, row: dict[str, str]) -> tuple[np.ndarray, np.ndarray]:
    rgb = np.array(Image.open(data / row["image"]).convert("RGB"))
    gt = np.asarray(Image.open(data / row["alpha"]).convert("L"), dtype=np.float32) / 255.0
    return rgb, gt


def _score(alpha: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    return {"iou": iou(alpha, gt), "mae": mae(alpha, gt), "edge_mae": edge_mae(alpha, gt)}


def _summary(per_image: list[dict[str, Any]], key: str) -> dict[str, dict[str, float]]:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in per_image:
        groups[r[key]].append(r)
        groups["all"].append(r)
    return {
        name: {
            "n": len(rs),
            **{m: round(statistics.fmean(r[m] for r in rs), 4) for m in ("iou", "mae", "edge_mae")},
            **(
                {"s_per_image": round(statistics.median(r["s"] for r in rs), 3)}
                if "s" in rs[0]
                else {}
            ),
        }
        for name, rs in sorted(groups.items())
    }


def zoo(data: Path, limit: int, models: list[str], dtype: str) -> dict[str, Any]:
    """Per model: per-image rows and a per-category summary."""
    torch.set_num_threads(1)
    items = _items(data, limit)
    result: dict[str, Any] = {}
    for name in models:
        model = load(name, "cpu", dtype, channels_last=True, threads=1)
        rows = []
        for row in items:
            rgb, gt = _load_pair(data, row)
            start = time.perf_counter()
            x = preprocess(rgb, model.spec, model.device)[None]
            alpha = postprocess(model(x)[0], rgb.shape[0], rgb.shape[1])
            seconds = time.perf_counter() - start
            rows.append(
                {"id": row["id"], "category": row["category"], "s": seconds, **_score(alpha, gt)}
            )
            print(name, row["id"], f"{seconds:.2f}s", f"iou {rows[-1]['iou']:.3f}", file=sys.stderr)
        result[name] = {
            "dtype": model.dtype_name,
            "engine": model.spec.engine,
            "summary": _summary(rows, "category"),
            "images": rows,
        }
        del model
    return result


def _u2netp_input(rgb: np.ndarray, resize: str, divide: str) -> np.ndarray:
    filt = Image.Resampling.LANCZOS if resize == "lanczos" else Image.Resampling.BILINEAR
    x = np.asarray(Image.fromarray(rgb).resize((320, 320), filt), dtype=np.float64)
    x = x / max(float(x.max()), 1e-6) if divide == "max" else x / 255.0
    x = (x - _IMAGENET[0]) / _IMAGENET[1]
    return x.transpose(2, 0, 1)[None].astype(np.float32)


def normalisation(data: Path, limit: int) -> dict[str, Any]:
    """U²-Net-p (the ONNX file under onnxruntime) with rembg's preprocessing and one change
    at a time: resize filter, scaling, output min-max."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(
        str(_SHARED / "models" / "u2netp.onnx"), options, providers=["CPUExecutionProvider"]
    )
    variants = {
        "rembg: lanczos, /max, imagenet, minmax": ("lanczos", "max", True),
        "bilinear instead of lanczos": ("bilinear", "max", True),
        "/255 instead of /max": ("lanczos", "255", True),
        "no output minmax": ("lanczos", "max", False),
    }
    rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in _items(data, limit):
        rgb, gt = _load_pair(data, row)
        for label, (resize, divide, minmax) in variants.items():
            (d0,) = session.run(["1959"], {"input.1": _u2netp_input(rgb, resize, divide)})
            if minmax:
                d0 = (d0 - d0.min()) / max(float(d0.max() - d0.min()), 1e-8)
            alpha = postprocess(torch.from_numpy(d0[0]), rgb.shape[0], rgb.shape[1])
            rows[label].append({"category": row["category"], **_score(alpha, gt)})
    return {label: _summary(rs, "category")["all"] for label, rs in rows.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=_SHARED / "data" / "eval-dev")
    parser.add_argument("--limit", type=int, default=0, help="first N images (0 = all)")
    parser.add_argument("--normalisation", action="store_true")
    parser.add_argument("--models", nargs="+", default=_MODELS)
    parser.add_argument("--dtype", default="auto", help="as model.dtype (onnxruntime: float32)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    result = (
        normalisation(args.data, args.limit)
        if args.normalisation
        else zoo(args.data, args.limit, args.models, args.dtype)
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    summary = result if args.normalisation else {k: v["summary"]["all"] for k, v in result.items()}
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
