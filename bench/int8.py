"""int8 on CPU (issue 18): which quantisation recipe, what it costs in accuracy, what it buys in
speed. Real weights (MATTEFLOW_MODEL_PATH), eval-dev (MATTEFLOW_SHARED_DIR/data/eval-dev).

    .venv/bin/python bench/int8.py recipes --out out/bench/int8-recipes.json
    .venv/bin/python bench/int8.py speed --images 4 --rounds 3 [--threads 2]
    .venv/bin/python bench/int8.py run --images 10 --rounds 2
    .venv/bin/matteflow eval --data ../shared/data/eval-dev --output out/int8 --name bfloat16
    .venv/bin/matteflow eval --data ../shared/data/eval-dev --output out/int8 --name int8 \
        --set model.dtype=int8
    .venv/bin/python bench/int8.py compare --eval-output out/int8

recipes: the model alone (registry preprocessing, no refinement, one thread) on every eval-dev
image in bfloat16 (the default on this CPU) and as int8 under each recipe, calibrated on the
bundled sample: IoU, MAE and edge MAE per category against the ground truth, and the int8 minus
bfloat16 IoU per category. speed: seconds per forward pass of bfloat16 and float32 (torch),
float32 ONNX and int8 (onnxruntime), alternated image by image in one process; ratios to
bfloat16. run: a whole `matteflow run` on N eval-dev images at the defaults and with
model.dtype=int8, alternated, fastest of each; the ratio, and whether each variant's rounds
wrote the same bytes. compare: the two `matteflow eval` runs (whole pipeline) per category.
Speed on a shared machine is noisy: read the ratios, not seconds.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from PIL import Image

from matteflow.models.onnx_engine import OnnxSession
from matteflow.models.quantize import (
    Recipe,
    calibration_files,
    float32_graph,
    quantise,
)
from matteflow.models.registry import LoadedModel, get_spec, load
from matteflow.models.weights import source_file
from matteflow.transforms.inference import postprocess, preprocess
from matteflow.transforms.quality import edge_mae, iou, mae

_HERE = Path(__file__).resolve()
_SHARED = Path(os.environ.get("MATTEFLOW_SHARED_DIR") or _HERE.parents[2] / "shared")
_DATA = _SHARED / "data" / "eval-dev"
# The recipes tried (README, "int8 on CPU"): which ops are quantised (the starting point:
# Conv only; () = every op onnxruntime quantises), how activations are calibrated, and the last
# convolutions (IS-Net's side outputs) left in float32.
_RECIPES = {
    "conv-p99.99": Recipe(ops=("Conv",)),
    "conv+relu-p99.99": Recipe(ops=("Conv", "Relu")),
    "most-p99.99": Recipe(ops=("Conv", "Relu", "MaxPool", "Concat", "Resize")),
    "all-p99.99": Recipe(ops=()),
    "all-p99.999": Recipe(ops=(), percentile=99.999),
    "all-entropy": Recipe(ops=(), method="entropy"),
    "all-minmax": Recipe(ops=(), method="minmax"),
    "all-p99.99-last7-fp32": Recipe(ops=(), exclude_last=7),
}


def _rows() -> list[dict[str, str]]:
    with (_DATA / "manifest.csv").open() as f:
        return list(csv.DictReader(f))


def _pair(row: dict[str, str]) -> tuple[np.ndarray, np.ndarray]:
    rgb = np.array(Image.open(_DATA / row["image"]).convert("RGB"))
    gt = np.asarray(Image.open(_DATA / row["alpha"]).convert("L"), dtype=np.float32) / 255.0
    return rgb, gt


def _alpha(model: LoadedModel, rgb: np.ndarray) -> np.ndarray:
    x = preprocess(rgb, model.spec, model.device)[None]
    return postprocess(model(x)[0], rgb.shape[0], rgb.shape[1])


def _by_category(scores: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for s in scores:
        groups[s["category"]].append(s)
        groups["all"].append(s)
    return {
        name: {
            "n": len(rs),
            **{m: round(statistics.fmean(r[m] for r in rs), 4) for m in ("iou", "mae", "edge_mae")},
        }
        for name, rs in sorted(groups.items())
    }


def recipes(name: str, chosen: list[str]) -> dict[str, Any]:
    """Per variant (bfloat16 and each int8 recipe): per-category scores, and the IoU change of
    each recipe against bfloat16 per category (with the worst one)."""
    torch.set_num_threads(1)
    spec = get_spec(name)
    files = calibration_files()
    variants: dict[str, LoadedModel] = {"bfloat16": load(name, "cpu", "bfloat16", threads=1)}
    build_s: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="int8-bench-") as tmp:
        for label in chosen:
            path = Path(tmp) / f"{label}.onnx"
            start = time.perf_counter()
            quantise(spec, source_file(spec), path, files, _RECIPES[label])
            build_s[label] = round(time.perf_counter() - start, 1)
            session = OnnxSession(path, spec, torch.device("cpu"), 1)
            variants[label] = LoadedModel(spec, session, torch.device("cpu"), torch.int8, "", False)
            print(f"built {label} in {build_s[label]} s", file=sys.stderr)
        scores: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for i, row in enumerate(_rows()):
            rgb, gt = _pair(row)
            for label, model in variants.items():
                alpha = _alpha(model, rgb)
                scores[label].append(
                    {
                        "id": row["id"],
                        "category": row["category"],
                        "iou": iou(alpha, gt),
                        "mae": mae(alpha, gt),
                        "edge_mae": edge_mae(alpha, gt),
                    }
                )
            print(f"{i + 1} images", file=sys.stderr, end="\r")
    summary = {label: _by_category(s) for label, s in scores.items()}
    base = summary["bfloat16"]
    delta = {
        label: {c: round(summary[label][c]["iou"] - base[c]["iou"], 4) for c in base}
        for label in chosen
    }
    return {
        "model": name,
        "calibration": [f.name for f in files],
        "recipes": {k: vars(_RECIPES[k]) for k in chosen},
        "build_s": build_s,
        "summary": summary,
        "iou_minus_bfloat16": delta,
        "worst_category_iou_change": {k: min(v.values()) for k, v in delta.items()},
    }


def speed(name: str, images: int, rounds: int, threads: int) -> dict[str, Any]:
    """Seconds per forward pass on `threads` threads, alternated: bfloat16 and float32 torch
    (channels_last, as the pipeline runs them), float32 ONNX and int8 (the cached file of the
    registry's recipe, calibrated on the bundled sample) on onnxruntime; medians, ratios."""
    torch.set_num_threads(threads)
    spec = get_spec(name)
    cpu = torch.device("cpu")
    with tempfile.TemporaryDirectory(prefix="int8-bench-") as tmp:
        fp32 = Path(tmp) / "float32.onnx"
        onnx.save(float32_graph(onnx.load(str(source_file(spec)))), str(fp32))
        engines: dict[str, Any] = {
            dtype: load(name, "cpu", dtype, channels_last=True, threads=threads)
            for dtype in ("bfloat16", "float32")
        }
        engines["float32-onnx"] = LoadedModel(
            spec, OnnxSession(fp32, spec, cpu, threads), cpu, torch.float32, "", False
        )
        engines["int8"] = load(name, "cpu", "int8", threads=threads)
        batches = [preprocess(_pair(r)[0], spec, cpu)[None] for r in _rows()[:images]]
        for model in engines.values():  # warm-up
            model(batches[0])
        times: dict[str, list[float]] = defaultdict(list)
        for _ in range(rounds):
            for x in batches:
                for label, model in engines.items():
                    start = time.perf_counter()
                    model(x)
                    times[label].append(time.perf_counter() - start)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "model": name,
        "threads": threads,
        "passes_each": len(times["int8"]),
        "median_s": {k: round(v, 3) for k, v in med.items()},
        "speed_vs_bfloat16": {k: round(med["bfloat16"] / v, 2) for k, v in med.items()},
    }


def whole_run(images: int, rounds: int) -> dict[str, Any]:
    """Wall seconds of `matteflow run` on the first `images` eval-dev images, defaults vs
    model.dtype=int8 (the int8 file built beforehand), alternated; fastest of each."""
    exe = Path(sys.executable).with_name("matteflow")
    subprocess.run([str(exe), "models", "quantize", "isnet-general-use"], check=True)
    with tempfile.TemporaryDirectory(prefix="int8-run-") as tmp:
        manifest = Path(tmp) / "manifest.csv"
        with manifest.open("w", newline="") as f:
            out = csv.writer(f)
            out.writerow(["id", "uri"])
            for row in _rows()[:images]:
                out.writerow([row["id"], str(_DATA / row["image"])])
        variants = {"default": [], "int8": ["--set", "model.dtype=int8"]}
        times: dict[str, list[float]] = defaultdict(list)
        for r in range(rounds):
            for label, extra in variants.items():
                cmd = [str(exe), "run", "--manifest", str(manifest)]
                cmd += ["--output", f"{tmp}/{label}-{r}", *extra]
                start = time.perf_counter()
                subprocess.run(cmd, check=True, capture_output=True)
                times[label].append(time.perf_counter() - start)
        # Determinism: each variant's rounds wrote the same masks and cutouts, byte for byte.
        same = {
            label: len({_output_bytes(Path(f"{tmp}/{label}-{r}")) for r in range(rounds)}) == 1
            for label in variants
        }
    best = {k: min(v) for k, v in times.items()}
    return {
        "images": images,
        "wall_s": {k: [round(t, 1) for t in v] for k, v in times.items()},
        "int8_speedup": round(best["default"] / best["int8"], 2),
        "rounds_byte_identical": same,
    }


def _output_bytes(out: Path) -> tuple[tuple[str, bytes], ...]:
    return tuple(
        (str(p.relative_to(out)), p.read_bytes())
        for folder in ("masks", "cutouts")
        for p in sorted((out / folder).rglob("*.png"))
    )


def compare(eval_output: Path, base: str, other: str) -> dict[str, Any]:
    """Per category (eval-dev's manifest), two `matteflow eval` runs under `eval_output`:
    mean iou, mae and edge_mae of each, the paired iou change, and the worst category."""
    from matteflow.transforms.metrics import read_metrics

    category = {r["id"]: r["category"] for r in _rows()}
    scores = {}
    for run in (base, other):
        rows = read_metrics(str(eval_output / "runs" / run)).to_pylist()
        scores[run] = [{**r, "category": category[r["id"]]} for r in rows if r["status"] == "ok"]
    summary = {run: _by_category(s) for run, s in scores.items()}
    change = {
        c: round(summary[other][c]["iou"] - summary[base][c]["iou"], 4) for c in summary[base]
    }
    dtypes = {run: sorted({r["dtype"] for r in s}) for run, s in scores.items()}
    return {
        "dtypes": dtypes,
        "summary": summary,
        "iou_change": change,
        "worst": min(change.values()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["recipes", "speed", "run", "compare"])
    parser.add_argument("--eval-output", type=Path, help="compare: a `matteflow eval` output")
    parser.add_argument("--runs", default="bfloat16,int8", help="compare: base,other run names")
    parser.add_argument("--model", default="isnet-general-use")
    parser.add_argument("--recipes", default=",".join(_RECIPES), help=", ".join(_RECIPES))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.what == "recipes":
        result = recipes(args.model, args.recipes.split(","))
    elif args.what == "speed":
        result = speed(args.model, args.images, args.rounds, args.threads)
    elif args.what == "run":
        result = whole_run(args.images, args.rounds)
    else:
        base, other = args.runs.split(",")
        result = compare(args.eval_output, base, other)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
