"""Refinement on a labelled set: raw upsampled alpha vs guided vs matting, halo, review routing.

A benchmark, not a test. The model's alpha for every image (and, for flip TTA, of the mirrored
image) is computed once with the pipeline's own preprocess/postprocess and cached under
--cache; every refinement then runs on the same alphas in this process. Printed:

- per variant: mean iou, mae, edge_mae, the worst category's iou change against raw, and
  seconds per megapixel of the refinement alone; then, per category, each variant's iou and
  edge_mae change against raw (the clean-up options: remove islands, fill holes, feather);
- halo: on composites (manifest `notes` starting with "composite"), the colour error of the
  cutout over magenta against the same alpha over the true foreground (estimated from the
  ground-truth alpha), on soft edge pixels, with and without decontamination;
- review routing: recall and precision of needs_review (uncertainty >= threshold) for the
  worst-iou decile.

    .venv/bin/python bench/refine.py --data ../shared/data/eval-dev --out out/bench/refine.json
    .venv/bin/python bench/refine.py --only islands,holes,feather   # the clean-up options only
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
from matteflow.transforms.foreground import decontaminate
from matteflow.transforms.inference import postprocess, preprocess
from matteflow.transforms.matte import uncertainty
from matteflow.transforms.quality import edge_band, scores
from matteflow.transforms.refine import RefineSettings, clean_up, guided_filter, matting

Item = dict[str, object]


def _model_alphas(
    rows: list[dict[str, str]], data: Path, cache: Path, model: str, flip: bool = True
) -> None:
    """Cache {id}.npz: the model's alpha at full size, of the image and (with `flip`) of its
    mirror, and the uncertainty of each at the model's resolution."""
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
            both = loaded(torch.cat([x, x.flip(-1)]) if flip else x)
        plain = both[0]
        arrays = {"alpha": postprocess(plain, *rgb.shape[:2]), "u": uncertainty(plain[0].numpy())}
        if flip:
            average = (plain + both[1].flip(-1)) / 2
            arrays["flip"] = postprocess(average, *rgb.shape[:2])
            arrays["u_flip"] = uncertainty(average[0].numpy())
        np.savez_compressed(cache / f"{row['id']}.npz", **arrays)
        print(f"model alpha {i + 1}/{len(todo)}: {row['id']}", flush=True)


def _variants(settings: RefineSettings) -> dict[str, Callable[[np.ndarray, Item], np.ndarray]]:
    r, eps = settings.guided_radius, settings.guided_eps
    return {
        "raw (upsampled model alpha)": lambda rgb, it: it["alpha"],  # type: ignore[return-value]
        "flip TTA": lambda rgb, it: it["flip"],  # type: ignore[return-value]
        f"guided (r={r}, eps={eps:g})": lambda rgb, it: guided_filter(rgb, it["alpha"], r, eps),  # type: ignore[arg-type]
        "matting (closed-form, tiled)": lambda rgb, it: matting(rgb, it["alpha"]),  # type: ignore[arg-type]
        **{name: _cleaned(cleanup) for name, cleanup in _CLEAN_UPS.items()},
    }


# Clean-up options on the raw alpha (refine.remove_islands, fill_holes, feather_px).
_CLEAN_UPS = {
    "remove islands (min 1%)": RefineSettings(remove_islands=True),
    "fill holes (max 1%)": RefineSettings(fill_holes=True),
    "feather 1 px": RefineSettings(feather_px=1.0),
    "feather 2 px": RefineSettings(feather_px=2.0),
    "islands + holes + feather 1 px": RefineSettings(
        remove_islands=True, fill_holes=True, feather_px=1.0
    ),
}


def _cleaned(settings: RefineSettings) -> Callable[[np.ndarray, Item], np.ndarray]:
    return lambda rgb, it: clean_up(it["alpha"], settings)  # type: ignore[arg-type]


def main() -> None:
    """Run every variant on the labelled set and print (and optionally save) the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/eval-dev"))
    parser.add_argument("--model", default="isnet-general-use")
    parser.add_argument("--cache", type=Path, default=Path("out/bench/refine-cache"))
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument(
        "--only", help="comma-separated words: run only the variants named with one (and raw)"
    )
    args = parser.parse_args()
    with (args.data / "manifest.csv").open() as f:
        rows = list(csv.DictReader(f))
    settings = RefineSettings()
    variants = _variants(settings)
    if args.only:
        words = [w.strip().lower() for w in args.only.split(",")]
        variants = {
            name: fn
            for i, (name, fn) in enumerate(variants.items())
            if i == 0 or any(w in name.lower() for w in words)
        }
    # Without flip TTA among the variants, the model runs once per image, not twice.
    flip = not args.only or any("flip" in name for name in variants)
    cache = args.cache / (args.model if flip else f"{args.model}-no-flip")
    _model_alphas(rows, args.data, cache, args.model, flip)
    items = []
    for row in rows:
        cached = np.load(cache / f"{row['id']}.npz")
        rgb = np.asarray(Image.open(args.data / row["image"]).convert("RGB"))
        gt = np.asarray(Image.open(args.data / row["alpha"]).convert("L"), np.float32) / 255
        items.append({"row": row, "rgb": rgb, "gt": gt, **{k: cached[k] for k in cached}})
    megapixels = sum(it["rgb"].shape[0] * it["rgb"].shape[1] for it in items) / 1e6  # type: ignore[attr-defined]

    results: dict[str, dict[str, object]] = {}
    raw_by_category: dict[str, float] = {}
    print(f"{len(items)} images, {megapixels:.1f} MP")
    header = f"{'iou':>7} {'mae':>7} {'edge_mae':>9} {'vs raw':>7} {'worst cat dIoU':>22}"
    print(f"{'variant':34} {header} {'s/MP':>6}")
    for name, refine in variants.items():
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
        edge_by_category = {
            c: float(np.mean([s["edge_mae"] for cc, s in per_image if cc == c]))
            for c in by_category
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
            "by_category_edge_mae": edge_by_category,
        }
        print(
            f"{name:34} {mean['iou']:7.4f} {mean['mae']:7.4f} {mean['edge_mae']:9.4f}"
            f" {change:+7.1%} {worst[0]:+9.4f} ({worst[1]:>11}) {seconds / megapixels:6.2f}",
            flush=True,
        )

    _print_by_category(results, rows)
    if args.only:  # a partial run: the halo and review figures belong to the full one
        _save(args.out, {"images": len(items), "variants": results})
        return
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
    _save(args.out, {"images": len(items), "variants": results, "halo": halo, "review": review})


def _save(path: Path | None, payload: dict[str, object]) -> None:
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(payload, indent=2, default=str))


def _print_by_category(results: dict[str, dict[str, object]], rows: list[dict[str, str]]) -> None:
    """Per category (with its image count): each variant's iou change and relative edge_mae
    change against the first variant (raw)."""
    raw = next(iter(results.values()))
    counts = {c: sum(r["category"] == c for r in rows) for c in raw["by_category_iou"]}  # type: ignore[attr-defined]
    print("\nper category, change against raw: dIoU / edge_mae")
    print(f"{'variant':34} " + " ".join(f"{f'{c} ({n})':>20}" for c, n in counts.items()))
    for name, result in list(results.items())[1:]:
        cells = []
        for c in counts:
            d_iou = result["by_category_iou"][c] - raw["by_category_iou"][c]  # type: ignore[index]
            base = raw["by_category_edge_mae"][c]  # type: ignore[index]
            d_edge = result["by_category_edge_mae"][c] / base - 1 if base else 0.0  # type: ignore[index]
            cells.append(f"{d_iou:+.4f} / {d_edge:+6.1%}")
        print(f"{name:34} " + " ".join(f"{cell:>20}" for cell in cells))


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
