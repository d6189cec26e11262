"""Refinement on a labelled set: raw upsampled alpha vs guided vs matting, halo, review routing.

A benchmark, not a test. The model's alpha for every image (and, for flip TTA, of the mirrored
image) is computed once with the pipeline's own preprocess/postprocess and cached under
--cache; every refinement then runs on the same alphas in this process. Printed:

- per variant: mean iou, mae, edge_mae, the worst category's iou change against raw, and
  seconds per megapixel of the refinement alone;
- halo: on composites (manifest `notes` starting with "composite"), the colour error of the
  cutout over magenta against the same alpha over the true foreground (estimated from the
  ground-truth alpha), on soft edge pixels, with and without decontamination;
- review routing: recall and precision of needs_review (uncertainty >= threshold) for the
  worst-iou decile.

    .venv/bin/python bench/refine.py --data ../shared/data/eval-dev --out out/bench/refine.json
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from matteflow.models.registry import load
from matteflow.transforms.inference import postprocess, preprocess
from matteflow.transforms.matte import uncertainty
from matteflow.transforms.quality import edge_band, scores
from matteflow.transforms.refine import (
    RefineSettings,
    decontaminate,
    guided_filter,
    matting,
)

Item = dict[str, object]


def _model_alphas(rows: list[dict[str, str]], data: Path, cache: Path, model: str) -> None:
    """Cache {id}.npz: the model's alpha at full size, of the image and of its mirror, and the
    uncertainty of each at the model's resolution."""
    cache.mkdir(parents=True, exist_ok=True)
    todo = [r for r in rows if not (cache / f"{r['id']}.npz").exists()]
    if not todo:
        return
    torch.set_num_threads(max(1, torch.get_num_threads()))
    loaded = load(model, "cpu", "float32")
    for i, row in enumerate(todo):
        rgb = np.array(Image.open(data / row["image"]).convert("RGB"))
        with torch.inference_mode():
            x = preprocess(rgb, loaded.spec, loaded.device)[None]
            both = loaded(torch.cat([x, x.flip(-1)]))
        plain, mirrored = both[0], both[1].flip(-1)
        average = (plain + mirrored) / 2
        np.savez_compressed(
            cache / f"{row['id']}.npz",
            alpha=postprocess(plain, *rgb.shape[:2]),
            flip=postprocess(average, *rgb.shape[:2]),
            u=uncertainty(plain[0].numpy()),
            u_flip=uncertainty(average[0].numpy()),
        )
        print(f"model alpha {i + 1}/{len(todo)}: {row['id']}", flush=True)


def _variants(settings: RefineSettings) -> dict[str, Callable[[np.ndarray, Item], np.ndarray]]:
    r, eps = settings.guided_radius, settings.guided_eps
    return {
        "raw (upsampled model alpha)": lambda rgb, it: it["alpha"],  # type: ignore[return-value]
        "flip TTA": lambda rgb, it: it["flip"],  # type: ignore[return-value]
        f"guided (r={r}, eps={eps:g})": lambda rgb, it: guided_filter(rgb, it["alpha"], r, eps),  # type: ignore[arg-type]
        "matting (closed-form, tiled)": lambda rgb, it: matting(rgb, it["alpha"]),  # type: ignore[arg-type]
    }


def main() -> None:
    """Run every variant on the labelled set and print (and optionally save) the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/eval-dev"))
    parser.add_argument("--model", default="isnet-general-use")
    parser.add_argument("--cache", type=Path, default=Path("out/bench/refine-cache"))
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()
    with (args.data / "manifest.csv").open() as f:
        rows = list(csv.DictReader(f))
    _model_alphas(rows, args.data, args.cache / args.model, args.model)
    settings = RefineSettings()
    items = []
    for row in rows:
        cached = np.load(args.cache / args.model / f"{row['id']}.npz")
        rgb = np.asarray(Image.open(args.data / row["image"]).convert("RGB"))
        gt = np.asarray(Image.open(args.data / row["alpha"]).convert("L"), np.float32) / 255
        items.append({"row": row, "rgb": rgb, "gt": gt, **{k: cached[k] for k in cached}})
    megapixels = sum(it["rgb"].shape[0] * it["rgb"].shape[1] for it in items) / 1e6  # type: ignore[attr-defined]

    results: dict[str, dict[str, object]] = {}
    raw_by_category: dict[str, float] = {}
    print(f"{len(items)} images, {megapixels:.1f} MP")
    header = f"{'iou':>7} {'mae':>7} {'edge_mae':>9} {'vs raw':>7} {'worst cat dIoU':>22}"
    print(f"{'variant':34} {header} {'s/MP':>6}")
    for name, refine in _variants(settings).items():
        seconds, per_image = 0.0, []
        for it in items:
            start = time.perf_counter()
            alpha = refine(it["rgb"], it)  # type: ignore[arg-type]
            seconds += time.perf_counter() - start
            per_image.append((it["row"]["category"], asdict(scores(alpha, it["gt"]))))  # type: ignore[index, arg-type]
        mean = {k: float(np.mean([s[k] for _, s in per_image])) for k in ("iou", "mae", "edge_mae")}
        by_category = {
            c: float(np.mean([s["iou"] for cc, s in per_image if cc == c]))
            for c in sorted({c for c, _ in per_image})
        }
        raw_by_category = raw_by_category or by_category
        worst = min((by_category[c] - raw_by_category[c], c) for c in by_category)
        base = results[next(iter(results))]["edge_mae"] if results else mean["edge_mae"]
        change = mean["edge_mae"] / float(base) - 1  # type: ignore[arg-type]
        results[name] = {
            **mean,
            "edge_mae_change": change,
            "worst_category": worst,
            "s_per_mp": seconds / megapixels,
            "by_category_iou": by_category,
        }
        print(
            f"{name:34} {mean['iou']:7.4f} {mean['mae']:7.4f} {mean['edge_mae']:9.4f}"
            f" {change:+7.1%} {worst[0]:+9.4f} ({worst[1]:>11}) {seconds / megapixels:6.2f}",
            flush=True,
        )

    halo = _halo(items)
    print(
        f"halo (composites, soft edge pixels, colour error /255 over magenta):"
        f" raw {halo['raw']:.2f}, decontaminated {halo['decontaminated']:.2f}"
        f" ({halo['decontaminated'] / halo['raw'] - 1:+.0%}), {halo['s_per_mp']:.2f} s/MP"
    )
    review = _review(items, settings.review_threshold)
    print(
        f"needs_review at uncertainty >= {settings.review_threshold}: flags {review['flagged']}"
        f" of {len(items)}; worst-iou decile ({review['worst']} images, iou <= "
        f"{review['cut']:.3f}): recall {review['recall']:.2f}, precision"
        f" {review['precision']:.2f}"
    )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        payload = {"images": len(items), "variants": results, "halo": halo, "review": review}
        args.out.write_text(json.dumps(payload, indent=2, default=str))


def _halo(items: list[Item]) -> dict[str, float]:
    """Colour error of composites over magenta against the true foreground, soft pixels only."""
    import pymatting

    magenta = np.array([255.0, 0.0, 255.0])
    errors: dict[str, list[float]] = {"raw": [], "decontaminated": []}
    seconds = megapixels = 0.0
    for it in items:
        if not str(it["row"]["notes"]).startswith("composite"):  # type: ignore[index]
            continue
        rgb, gt, alpha = it["rgb"], it["gt"], it["alpha"]
        true_fg = pymatting.estimate_foreground_ml(rgb / 255.0, gt.astype(np.float64)) * 255  # type: ignore[operator, union-attr]
        soft = edge_band(gt) & (alpha > 0.02) & (alpha < 0.98)  # type: ignore[operator, arg-type]
        if not soft.any():
            continue
        start = time.perf_counter()
        clean = decontaminate(rgb, alpha)  # type: ignore[arg-type]
        seconds += time.perf_counter() - start
        megapixels += rgb.shape[0] * rgb.shape[1] / 1e6  # type: ignore[union-attr]
        a = alpha[..., None]  # type: ignore[index]
        reference = a * true_fg + (1 - a) * magenta
        for name, colour in (("raw", rgb), ("decontaminated", clean)):
            composite = a * colour.astype(np.float64) + (1 - a) * magenta  # type: ignore[union-attr]
            errors[name].append(float(np.abs(composite - reference)[soft].mean()))
    return {**{k: float(np.mean(v)) for k, v in errors.items()}, "s_per_mp": seconds / megapixels}


def _review(items: list[Item], threshold: float) -> dict[str, float]:
    """Recall and precision of needs_review for the worst-iou decile (raw alpha)."""
    ious = np.array([scores(it["alpha"], it["gt"]).iou for it in items])  # type: ignore[arg-type]
    flagged = np.array([float(it["u"]) >= threshold for it in items])  # type: ignore[arg-type]
    cut = float(np.sort(ious)[math.ceil(0.1 * len(ious)) - 1])
    worst = ious <= cut
    hits = int((flagged & worst).sum())
    return {
        "flagged": int(flagged.sum()),
        "worst": int(worst.sum()),
        "cut": cut,
        "recall": hits / max(int(worst.sum()), 1),
        "precision": hits / max(int(flagged.sum()), 1),
    }


if __name__ == "__main__":
    main()
