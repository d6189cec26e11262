"""Routing between models on a labelled set: consensus, speed cascade and alpha fusion.

A benchmark, not a test. Each ONNX model in --models (IS-Net general-use, U²-Net-p, RVM) runs
once per image directly under onnxruntime (one thread, one model loaded at a time) and its alpha
at the image's full resolution, plus its seconds, is cached under --cache (outside the repo).
Then every routing policy of matteflow.transforms.routing is evaluated offline on those alphas
with the project's metrics (transforms/quality.py): per category mean iou, mae, edge_mae and the
model seconds the policy would spend (a cascade pays for the strong model only when it runs).

    .venv/bin/python bench/routing.py --cache /tmp/routing-cache --out out/bench/routing.json

Preprocessing per model (as /work/shared/models/README.md describes, measured by issue 14):
- isnet-general-use: bilinear to 1024x1024, RGB/255 - 0.5; output in [0, 1];
- u2netp: Lanczos to 320x320, divided by the image's maximum, ImageNet mean/std; output
  min-max normalised (rembg's way);
- rvm-mobilenetv3: RGB/255 at full size, downsample_ratio so the internal pass is about 512 px
  on the long side, recurrent states zero; `pha` is alpha.
Outputs are resized back to the image with bilinear interpolation (the pipeline's postprocess).
Seconds are wall time of preprocessing + forward + resize on a shared machine: compare ratios.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
import torch.nn.functional as F
from PIL import Image

from matteflow.transforms.quality import edge_mae, iou, mae
from matteflow.transforms.routing import (
    Prediction,
    Routed,
    RoutingSettings,
    cascade,
    consensus,
    fuse_confidence,
    fuse_mean,
    keep_primary_edges,
    route,
)

_SHARED = Path(__file__).resolve().parents[1].parent / "shared"
GENERAL, FAST, HUMAN = "isnet-general-use", "u2netp", "rvm-mobilenetv3"
_FILES = {
    GENERAL: "isnet-general-use-fp16.onnx",
    FAST: "u2netp.onnx",
    HUMAN: "rvm-mobilenetv3-fp32.onnx",
}
_IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
_IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
_RVM_INTERNAL = 512  # px on the long side of RVM's low-resolution pass


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=_SHARED / "data" / "eval-dev")
    parser.add_argument("--models", type=Path, default=_SHARED / "models")
    parser.add_argument("--cache", type=Path, required=True, help="alpha cache (outside repo)")
    parser.add_argument("--limit", type=int, default=0, help="first N manifest rows (0: all)")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    parser.add_argument("--out", type=Path, default=Path("out/bench/routing.json"))
    return parser.parse_args(argv)


def _rows(data: Path, limit: int) -> list[dict[str, str]]:
    with (data / "manifest.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    return rows[:limit] if limit > 0 else rows


def _upsample(plane: np.ndarray, height: int, width: int) -> np.ndarray:
    """S x S float -> height x width float32, bilinear (half-pixel), as the pipeline does."""
    t = torch.from_numpy(np.ascontiguousarray(plane, dtype=np.float32))[None, None]
    out = F.interpolate(t, size=(height, width), mode="bilinear", align_corners=False)
    return out[0, 0].clamp(0, 1).numpy()


def _isnet(session: ort.InferenceSession, rgb: np.ndarray) -> Prediction:
    h, w = rgb.shape[:2]
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255.0
    x = F.interpolate(x, size=(1024, 1024), mode="bilinear", align_corners=False) - 0.5
    out = session.run(["output"], {"input": x.numpy()})[0]
    return Prediction(_upsample(out[0, 0], h, w))


def _u2netp(session: ort.InferenceSession, rgb: np.ndarray) -> Prediction:
    h, w = rgb.shape[:2]
    small = np.asarray(Image.fromarray(rgb).resize((320, 320), Image.Resampling.LANCZOS))
    x = small.astype(np.float32) / max(1.0, float(small.max()))
    x = (x - _IMAGENET_MEAN) / _IMAGENET_STD
    feed = {session.get_inputs()[0].name: x.transpose(2, 0, 1)[None].astype(np.float32)}
    d1 = session.run(None, feed)[0][0, 0]
    lo, hi = float(d1.min()), float(d1.max())
    return Prediction(_upsample((d1 - lo) / max(hi - lo, 1e-8), h, w))


def _rvm(session: ort.InferenceSession, rgb: np.ndarray) -> Prediction:
    h, w = rgb.shape[:2]
    zero = np.zeros((1, 1, 1, 1), dtype=np.float32)
    feed = {
        "src": (rgb.astype(np.float32) / 255.0).transpose(2, 0, 1)[None],
        "r1i": zero,
        "r2i": zero,
        "r3i": zero,
        "r4i": zero,
        "downsample_ratio": np.array([min(1.0, _RVM_INTERNAL / max(h, w))], dtype=np.float32),
    }
    fgr, pha = session.run(["fgr", "pha"], feed)
    return Prediction(np.clip(pha[0, 0], 0, 1), np.clip(fgr[0].transpose(1, 2, 0), 0, 1))


_RUNNERS: dict[str, Callable[[ort.InferenceSession, np.ndarray], Prediction]] = {
    GENERAL: _isnet,
    FAST: _u2netp,
    HUMAN: _rvm,
}


def _cache_alphas(rows: list[dict[str, str]], args: argparse.Namespace) -> None:
    """{cache}/{model}/{id}.npz: alpha (float16, full size; RVM also fgr as uint8) and seconds."""
    for model, file in _FILES.items():
        folder = args.cache / model
        folder.mkdir(parents=True, exist_ok=True)
        todo = [r for r in rows if not (folder / f"{r['id']}.npz").exists()]
        if not todo:
            continue
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(args.models / file), options, ["CPUExecutionProvider"])
        _RUNNERS[model](session, np.zeros((64, 64, 3), np.uint8))  # warm-up, untimed
        for i, row in enumerate(todo):
            rgb = np.array(Image.open(args.data / row["image"]).convert("RGB"))
            start = time.perf_counter()
            pred = _RUNNERS[model](session, rgb)
            seconds = time.perf_counter() - start
            extra = {} if pred.fgr is None else {"fgr": np.round(pred.fgr * 255).astype(np.uint8)}
            np.savez_compressed(
                folder / f"{row['id']}.npz",
                alpha=pred.alpha.astype(np.float16),
                seconds=seconds,
                **extra,
            )
            print(f"{model} {i + 1}/{len(todo)} {row['id']} {seconds:.2f}s", flush=True)
        del session


def _load(cache: Path, model: str, sample_id: str) -> tuple[Prediction, float]:
    with np.load(cache / model / f"{sample_id}.npz") as z:
        fgr = z["fgr"].astype(np.float32) / 255 if "fgr" in z else None
        return Prediction(z["alpha"].astype(np.float32), fgr), float(z["seconds"])


# A policy maps the per-model predictions of one image to a Routed result and the model seconds
# it spent (from the cached per-model seconds).
Policy = Callable[[dict[str, Prediction], dict[str, float]], tuple[Routed, float]]


def _single(model: str) -> Policy:
    def run(preds: dict[str, Prediction], secs: dict[str, float]) -> tuple[Routed, float]:
        p = preds[model]
        return Routed(p.alpha, p.fgr, model, (model,), 1.0), secs[model]

    return run


def _consensus(specialists: tuple[str, ...], threshold: float) -> Policy:
    def run(preds: dict[str, Prediction], secs: dict[str, float]) -> tuple[Routed, float]:
        routed = consensus(preds, GENERAL, specialists, threshold)
        return routed, secs[GENERAL] + sum(secs[s] for s in specialists)

    return run


def _cascade(max_uncertainty: float, human: float | None) -> Policy:
    """u2netp first; IS-Net only when u2netp is unsure (cascade); optionally RVM by consensus."""

    def run(preds: dict[str, Prediction], secs: dict[str, float]) -> tuple[Routed, float]:
        called: list[str] = []

        def strong() -> Prediction:
            called.append(GENERAL)
            return preds[GENERAL]

        routed = cascade(preds[FAST], FAST, strong, GENERAL, max_uncertainty)
        cost = secs[FAST] + (secs[GENERAL] if called else 0.0)
        if human is not None:
            base = {routed.model: Prediction(routed.alpha, routed.fgr), HUMAN: preds[HUMAN]}
            routed = consensus(base, routed.model, (HUMAN,), human)
            cost += secs[HUMAN]
        return routed, cost

    return run


def _fusion(models: tuple[str, ...], weights: tuple[float, ...], confidence: bool) -> Policy:
    def run(preds: dict[str, Prediction], secs: dict[str, float]) -> tuple[Routed, float]:
        chosen = {m: preds[m] for m in models}
        fused = (
            fuse_confidence(chosen, dict(zip(models, weights, strict=True)))
            if confidence
            else fuse_mean(chosen, dict(zip(models, weights, strict=True)))
        )
        return fused, sum(secs[m] for m in models)

    return run


def _fusion_then_human(confidence: bool, human: float) -> Policy:
    """Equal-weight fusion of IS-Net and U²-Net-p, then RVM's alpha (and colour) where its
    mask agrees with the fused one at IoU >= human."""
    fusion = _fusion((GENERAL, FAST), (1.0, 1.0), confidence)

    def run(preds: dict[str, Prediction], secs: dict[str, float]) -> tuple[Routed, float]:
        fused, cost = fusion(preds, secs)
        pair = {fused.model: Prediction(fused.alpha), HUMAN: preds[HUMAN]}
        routed = consensus(pair, fused.model, (HUMAN,), human)
        return (fused if routed.model == fused.model else routed), cost + secs[HUMAN]

    return run


def _edges(fusion: Policy, band: float) -> Policy:
    """The fusion decides regions, IS-Net's alpha draws the edges (keep_primary_edges)."""

    def run(preds: dict[str, Prediction], secs: dict[str, float]) -> tuple[Routed, float]:
        fused, cost = fusion(preds, secs)
        return keep_primary_edges(preds[GENERAL], fused, band), cost

    return run


def _auto(settings: RoutingSettings) -> Policy:
    """`--model auto` as transforms.routing.route does it with these settings."""

    def run(preds: dict[str, Prediction], secs: dict[str, float]) -> tuple[Routed, float]:
        return route(preds, settings), sum(secs[m] for m in settings.models)

    return run


def _policies() -> dict[str, Policy]:
    policies: dict[str, Policy] = {m: _single(m) for m in _FILES}
    for t in (0.5, 0.7, 0.8, 0.9, 0.95):
        policies[f"consensus rvm t={t}"] = _consensus((HUMAN,), t)
        policies[f"consensus u2netp t={t}"] = _consensus((FAST,), t)
        policies[f"consensus rvm,u2netp t={t}"] = _consensus((HUMAN, FAST), t)
    for u in (0.05, 0.1, 0.2, 0.3):
        policies[f"cascade u2netp->isnet u>={u}"] = _cascade(u, None)
        policies[f"cascade u2netp->isnet u>={u} + rvm t=0.9"] = _cascade(u, 0.9)
    for w in (0.3, 0.5, 0.7):
        pair = (w, 1 - w)
        policies[f"mean isnet:{w:.1f} u2netp:{1 - w:.1f}"] = _fusion((GENERAL, FAST), pair, False)
        policies[f"confidence isnet:{w:.1f} u2netp:{1 - w:.1f}"] = _fusion(
            (GENERAL, FAST), pair, True
        )
    for t in (0.8, 0.9, 0.95):
        policies[f"mean isnet+u2netp + rvm t={t}"] = _fusion_then_human(False, t)
        policies[f"confidence isnet+u2netp + rvm t={t}"] = _fusion_then_human(True, t)
    for w in (0.5, 0.3):
        fusion = _fusion((GENERAL, FAST), (w, 1 - w), True)
        for band in (0.0, 0.005, 0.01, 0.02):
            name = f"confidence isnet:{w:.1f} u2netp:{1 - w:.1f}, isnet edges band={band}"
            policies[name] = _edges(fusion, band)
    policies["auto (RoutingSettings defaults)"] = _auto(RoutingSettings())
    policies[f"auto + human {HUMAN} t=0.95"] = _auto(RoutingSettings(human=HUMAN))
    policies["mean all three"] = _fusion((GENERAL, FAST, HUMAN), (1, 1, 1), False)
    policies["confidence all three"] = _fusion((GENERAL, FAST, HUMAN), (1, 1, 1), True)
    return policies


def _evaluate(rows: list[dict[str, str]], args: argparse.Namespace) -> dict[str, object]:
    policies = _policies()
    per: dict[str, list[dict[str, object]]] = {name: [] for name in policies}
    for row in rows:
        gt = np.asarray(Image.open(args.data / row["alpha"]).convert("L"), np.float32) / 255
        loaded = {m: _load(args.cache, m, row["id"]) for m in _FILES}
        preds = {m: p for m, (p, _) in loaded.items()}
        secs = {m: s for m, (_, s) in loaded.items()}
        for name, policy in policies.items():
            routed, cost = policy(preds, secs)
            per[name].append(
                {
                    "id": row["id"],
                    "category": row["category"],
                    "iou": iou(routed.alpha, gt),
                    "mae": mae(routed.alpha, gt),
                    "edge_mae": edge_mae(routed.alpha, gt),
                    "seconds": cost,
                    "model": routed.model,
                    "agreement": routed.agreement,
                }
            )
    return {"images": len(rows), "policies": per}


Record = dict[str, Any]  # one image's scores under one policy
# Subsets that drop what flatters U²-Net-p here: the 320 px Adobe crops and the coarse cat labels.
_SUBSETS: dict[str, Callable[[Record], bool]] = {
    "all": lambda r: True,
    "no 320px crops": lambda r: not str(r["id"]).startswith("dev-dimk-"),
    "no crops, no cats": lambda r: not str(r["id"]).startswith(("dev-dimk-", "dev-cat-")),
}
FINALISTS = (
    GENERAL,
    FAST,
    "consensus rvm t=0.9",
    "cascade u2netp->isnet u>=0.2",
    "mean isnet:0.5 u2netp:0.5",
    "confidence isnet:0.5 u2netp:0.5",
    "confidence isnet:0.7 u2netp:0.3",
    "confidence isnet+u2netp + rvm t=0.95",
    "confidence isnet:0.5 u2netp:0.5, isnet edges band=0.0",
    "confidence isnet:0.5 u2netp:0.5, isnet edges band=0.01",
    "auto (RoutingSettings defaults)",
    f"auto + human {HUMAN} t=0.95",
    "confidence isnet:0.3 u2netp:0.7, isnet edges band=0.01",
)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def _col(recs: list[Record], key: str, keep: Callable[[Record], bool] = lambda r: True) -> float:
    return _mean([float(r[key]) for r in recs if keep(r)])


def _summarise(per: dict[str, list[Record]]) -> None:
    """Markdown tables: every policy overall; finalists per subset and per category."""
    base = per[GENERAL]
    categories = sorted({str(r["category"]) for r in base})

    def in_cat(c: str) -> Callable[[Record], bool]:
        return lambda r: r["category"] == c

    base_cat = {c: _col(base, "iou", in_cat(c)) for c in categories}
    base_secs = _col(base, "seconds")
    print("| policy | iou | mae | edge_mae | model time / IS-Net | worst category Δiou |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, recs in per.items():
        deltas = {c: _col(recs, "iou", in_cat(c)) - base_cat[c] for c in categories}
        worst = min(deltas, key=lambda c: deltas[c])
        print(
            f"| {name} | {_col(recs, 'iou'):.4f} | {_col(recs, 'mae'):.4f}"
            f" | {_col(recs, 'edge_mae'):.4f} | {_col(recs, 'seconds') / base_secs:.2f}"
            f" | {deltas[worst]:+.3f} ({worst}) |"
        )
    finalists = [f for f in FINALISTS if f in per]
    print("\n| policy | " + " | ".join(f"{s}: iou / edge_mae" for s in _SUBSETS) + " |")
    print("| --- |" + " --- |" * len(_SUBSETS))
    for name in finalists:
        cells = [
            f"{_col(per[name], 'iou', keep):.4f} / {_col(per[name], 'edge_mae', keep):.4f}"
            for keep in _SUBSETS.values()
        ]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("\nEvery policy per category: iou / mae / edge_mae / model seconds per image\n")
    print("| policy | category | images | iou | mae | edge_mae | seconds |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, recs in per.items():
        for c in categories:
            keep = in_cat(c)
            cells = [f"{_col(recs, k, keep):.4f}" for k in ("iou", "mae", "edge_mae")]
            n = sum(keep(r) for r in recs)
            secs = f"{_col(recs, 'seconds', keep):.2f}"
            print(f"| {name} | {c} | {n} | " + " | ".join(cells) + f" | {secs} |")
    counts = {c: sum(r["category"] == c for r in base) for c in categories}
    print("\niou / edge_mae per category\n")
    print("| policy | " + " | ".join(f"{c} ({counts[c]})" for c in categories) + " |")
    print("| --- |" + " --- |" * len(categories))
    for name in finalists:
        cells = [
            f"{_col(per[name], 'iou', keep):.3f} / {_col(per[name], 'edge_mae', keep):.3f}"
            for keep in (in_cat(c) for c in categories)
        ]
        print(f"| {name} | " + " | ".join(cells) + " |")


def main(argv: list[str] | None = None) -> None:
    """Cache the alphas, evaluate every policy, print the table, write JSON."""
    args = _args(argv)
    rows = _rows(args.data, args.limit)
    _cache_alphas(rows, args)
    result = _evaluate(rows, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    _summarise(result["policies"])  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
