"""Parity and speed of the native IS-Net against onnxruntime on the eval-dev set (CPU).

For each image: the ONNX export under onnxruntime is the reference; the native model runs in
fp32, in bf16 autocast and in fp32 channels_last. Per variant it reports the mean |alpha - ORT|
and the share of pixels on the same side of 0.5 (both at model resolution), the mean IoU
against the ground truth (full resolution, after a bilinear resize back to the image), and
seconds per image for the forward pass alone. Prints a table and writes JSON.

    .venv/bin/python bench/parity.py --limit 3 --out out/bench/parity.json

Seconds are wall time on a shared machine: other load only adds to them, so compare medians,
or pass --repeat to keep each image's fastest run. The whole set takes about 15 minutes.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

_SHARED = Path(__file__).resolve().parents[1].parent / "shared"
_MODEL = "isnet-general-use"
# Native variants: (name, dtype, channels_last).
_VARIANTS = [("fp32", "float32", False), ("bf16", "bfloat16", False), ("fp32_cl", "float32", True)]


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data",
        type=Path,
        default=_SHARED / "data" / "eval-dev",
        help="folder with manifest.csv (id,image,alpha,category,...) (default: %(default)s)",
    )
    parser.add_argument(
        "--onnx",
        type=Path,
        default=_SHARED / "models" / "isnet-general-use-fp16.onnx",
        help="the ONNX reference; its folder also serves the native weights unless"
        " MATTEFLOW_MODEL_PATH is set (default: %(default)s)",
    )
    parser.add_argument("--limit", type=int, default=0, help="first N manifest rows (0: all)")
    parser.add_argument("--threads", type=int, default=2, help="torch and onnxruntime threads")
    parser.add_argument(
        "--warmup", type=int, default=1, help="untimed runs per variant before the first image"
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="timed runs per image and variant; the fastest counts"
    )
    parser.add_argument(
        "--out", type=Path, default=Path("out/bench/parity.json"), help="JSON report path"
    )
    return parser.parse_args(argv)


def _rows(data: Path, limit: int) -> list[dict[str, str]]:
    with (data / "manifest.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    return rows[:limit] if limit > 0 else rows


def _model_input(rgb: np.ndarray, size: int, mean: tuple[float, ...], std: tuple[float, ...]):  # type: ignore[no-untyped-def]
    """H x W x 3 uint8 -> 1 x 3 x S x S float32: bilinear (half-pixel), (RGB/255 - mean)/std."""
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255.0
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def _full_res(alpha: np.ndarray, height: int, width: int) -> np.ndarray:
    """S x S alpha -> H x W alpha in [0, 1] (bilinear, half-pixel centres)."""
    t = torch.from_numpy(np.ascontiguousarray(alpha, dtype=np.float32))[None, None]
    full = F.interpolate(t, size=(height, width), mode="bilinear", align_corners=False)
    return full[0, 0].clamp(0.0, 1.0).numpy()


Runner = Callable[[torch.Tensor], np.ndarray]


def _ort_runner(session: Any) -> Runner:
    """1 x 3 x S x S -> S x S alpha from the ONNX graph's main output."""

    def run(x: torch.Tensor) -> np.ndarray:
        return np.asarray(session.run(["output"], {"input": x.numpy()})[0][0, 0])

    return run


def _native_runner(model: Any) -> Runner:
    """1 x 3 x S x S -> S x S alpha from a registry LoadedModel."""

    def run(x: torch.Tensor) -> np.ndarray:
        return np.asarray(model(x)[0, 0].numpy())

    return run


def _timed(fn: Runner, x: torch.Tensor, repeat: int) -> tuple[np.ndarray, float]:
    """fn(x) and its fastest wall time over `repeat` runs (other load only adds time)."""
    best = float("inf")
    out = np.empty(0)
    for _ in range(max(1, repeat)):
        start = time.perf_counter()
        out = fn(x)
        best = min(best, time.perf_counter() - start)
    return out, best


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    if not args.onnx.is_file():
        print(f"error: {args.onnx} not found; pass --onnx", file=sys.stderr)
        return 1
    if not (args.data / "manifest.csv").is_file():
        print(f"error: {args.data / 'manifest.csv'} not found; pass --data", file=sys.stderr)
        return 1
    # The native weights come from the same file the reference runs, unless told otherwise.
    os.environ.setdefault("MATTEFLOW_MODEL_PATH", str(args.onnx.parent))

    import onnxruntime as ort

    from matteflow.models import load
    from matteflow.transforms.quality import iou

    torch.set_num_threads(args.threads)
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    # ORT's idle workers spin after each run by default and would steal the cores from the
    # torch variant timed next.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(args.onnx), options, providers=["CPUExecutionProvider"])
    models = {name: load(_MODEL, "cpu", dtype, channels_last=cl) for name, dtype, cl in _VARIANTS}
    spec = models["fp32"].spec

    runners = {"ort": _ort_runner(session)}
    runners.update({name: _native_runner(m) for name, m in models.items()})
    zeros = torch.zeros(1, 3, spec.input_size, spec.input_size)
    for _ in range(args.warmup):
        for run in runners.values():
            run(zeros)

    rows = _rows(args.data, args.limit)
    images: list[dict[str, Any]] = []
    for n, row in enumerate(rows, 1):
        with Image.open(args.data / row["image"]) as img:
            rgb = np.array(img.convert("RGB"))
        with Image.open(args.data / row["alpha"]) as img:
            gt = np.asarray(img.convert("L"), dtype=np.float32) / 255.0
        height, width = rgb.shape[:2]
        if gt.shape != (height, width):
            raise SystemExit(f"{row['alpha']}: {gt.shape} does not match the image {rgb.shape}")
        x = _model_input(rgb, spec.input_size, spec.mean, spec.std)
        ref, seconds = _timed(runners["ort"], x, args.repeat)
        item: dict[str, Any] = {
            "id": row["id"],
            "category": row.get("category", ""),
            "size": [width, height],
            "ort": {"iou": iou(_full_res(ref, height, width), gt), "seconds": seconds},
        }
        for name in models:
            alpha, seconds = _timed(runners[name], x, args.repeat)
            item[name] = {
                "mean_abs_diff": float(np.abs(alpha - ref).mean()),
                "max_abs_diff": float(np.abs(alpha - ref).max()),
                "same_side": float(np.mean((alpha > 0.5) == (ref > 0.5))),
                "iou": iou(_full_res(alpha, height, width), gt),
                "seconds": seconds,
            }
        images.append(item)
        diffs = "  ".join(f"{k} {item[k]['mean_abs_diff']:.1e}" for k in models)
        print(f"[{n}/{len(rows)}] {row['id']}: iou ort {item['ort']['iou']:.3f}  |diff| {diffs}")

    summary: dict[str, dict[str, float]] = {}
    for name in ["ort", *models]:
        per = [im[name] for im in images]
        summary[name] = {
            key: statistics.fmean(p[key] for p in per)
            for key in ("mean_abs_diff", "max_abs_diff", "same_side", "iou", "seconds")
            if per and key in per[0]
        }
        if per:
            summary[name]["seconds_median"] = statistics.median(p["seconds"] for p in per)
        if name != "ort" and per:
            summary[name]["worst_mean_abs_diff"] = max(p["mean_abs_diff"] for p in per)
            summary[name]["worst_same_side"] = min(p["same_side"] for p in per)

    _print_table(summary, len(images))
    report = {
        "model": _MODEL,
        "onnx": str(args.onnx),
        "weights_sha256": models["fp32"].weights_sha256,
        "images": len(images),
        "threads": args.threads,
        "torch": torch.__version__,
        "onnxruntime": ort.__version__,
        "cpu": platform.processor() or platform.machine(),
        "preprocess": {"size": spec.input_size, "mean": spec.mean, "std": spec.std},
        "summary": summary,
        "per_image": images,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


def _print_table(summary: dict[str, dict[str, float]], n: int) -> None:
    print(f"\n{n} images; diffs and same-side vs onnxruntime at model resolution")
    header = f"{'variant':<9}{'mean|d|':>10}{'worst|d|':>10}{'same side':>11}{'worst':>9}"
    print(f"{header}{'mean IoU':>10}{'s/image':>9}{'median s':>10}")
    for name, s in summary.items():
        if name == "ort":
            cells = f"{'ref':>10}{'':>10}{'':>11}{'':>9}"
        else:
            cells = (
                f"{s['mean_abs_diff']:>10.2e}{s['worst_mean_abs_diff']:>10.2e}"
                f"{s['same_side']:>11.4%}{s['worst_same_side']:>9.3%}"
            )
        print(f"{name:<9}{cells}{s['iou']:>10.4f}{s['seconds']:>9.2f}{s['seconds_median']:>10.2f}")


if __name__ == "__main__":
    sys.exit(main())
