"""Choosing or combining the mattes of several models for one image (`--model auto`).

Plain numpy on full-resolution alphas (H x W float32 in [0, 1]); each policy returns a `Routed`:
the alpha (and the model's foreground colour when it gives one), `model` (the model, or models
joined by '+', whose output is the matte), `routed_from` (every model consulted, in order) and
`agreement` (IoU of the masks at 0.5 between the models compared; NaN when none was).

- consensus: a specialist's matte is kept when its mask agrees with the general model's
  (IoU >= threshold), else the general model's. A human-matting specialist finds nothing on
  other subjects, so it disagrees there and the general model decides.
- cascade: a fast model first; the strong one runs only when the fast one is unsure
  (uncertainty, refine.py's ambiguous share of the subject, at or above a bound).
- fuse_mean / fuse_confidence: a weighted mean of the alphas, the latter weighting each pixel
  by the model's confidence there, |2 alpha - 1|.
- keep_primary_edges: one model's alpha except in regions, wider than a boundary band, where
  a fused mask differs from it: the fusion decides what is subject, the primary model's
  (sharper, higher-resolution) alpha draws the edges.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from matteflow.transforms.matte import uncertainty
from matteflow.transforms.quality import iou

__all__ = [
    "Prediction",
    "Routed",
    "RoutingSettings",
    "agreement",
    "cascade",
    "consensus",
    "fuse_confidence",
    "fuse_mean",
    "keep_primary_edges",
    "route",
]

_CONFIDENCE_FLOOR = 1e-3  # keeps a pixel where every model says 0.5 defined (plain mean there)


@dataclass(frozen=True)
class Prediction:
    """One model's output for one image: alpha (H x W) and, when the model predicts it, the
    foreground colour (H x W x 3 float in [0, 1])."""

    alpha: np.ndarray
    fgr: np.ndarray | None = None


@dataclass(frozen=True)
class Routed:
    """The matte a policy chose or made, and which models it came from."""

    alpha: np.ndarray
    fgr: np.ndarray | None
    model: str
    routed_from: tuple[str, ...]
    agreement: float


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of the two mattes' masks at 0.5 (1.0 when both are empty)."""
    return float(iou(a, b))


def consensus(
    preds: Mapping[str, Prediction],
    general: str,
    specialists: Sequence[str],
    threshold: float,
) -> Routed:
    """The first specialist, in order, whose mask agrees with the general model's at IoU >=
    threshold; else the general model. A specialist whose mask is empty never qualifies (two
    empty masks agree, but nothing was found). `agreement` is the chosen specialist's IoU, or
    the best specialist's when none qualified."""
    base = preds[general]
    consulted = (general, *specialists)
    best = math.nan
    for name in specialists:
        score = agreement(preds[name].alpha, base.alpha)
        if score >= threshold and bool(np.any(preds[name].alpha > 0.5)):
            return Routed(preds[name].alpha, preds[name].fgr, name, consulted, score)
        best = score if math.isnan(best) else max(best, score)
    return Routed(base.alpha, base.fgr, general, consulted, best)


def cascade(
    fast: Prediction,
    fast_name: str,
    strong: Callable[[], Prediction],
    strong_name: str,
    max_uncertainty: float,
) -> Routed:
    """The fast model's matte when its uncertainty is below `max_uncertainty` (an empty matte
    counts as fully uncertain); else `strong()` is called and its matte returned, with the
    agreement of the two masks."""
    if uncertainty(fast.alpha) < max_uncertainty:
        return Routed(fast.alpha, fast.fgr, fast_name, (fast_name,), math.nan)
    other = strong()
    score = agreement(fast.alpha, other.alpha)
    return Routed(other.alpha, other.fgr, strong_name, (fast_name, strong_name), score)


def _fused(preds: Mapping[str, Prediction], alpha: np.ndarray) -> Routed:
    names = tuple(preds)
    alphas = [p.alpha for p in preds.values()]
    pairs = [agreement(a, b) for i, a in enumerate(alphas) for b in alphas[i + 1 :]]
    return Routed(
        np.clip(alpha, 0.0, 1.0).astype(np.float32),
        None,
        "+".join(names),
        names,
        min(pairs) if pairs else math.nan,
    )


def _check_weights(preds: Mapping[str, Prediction], weights: Mapping[str, float]) -> None:
    if not preds:
        raise ValueError("fusion needs at least one prediction")
    if set(weights) != set(preds) or any(w < 0 for w in weights.values()):
        raise ValueError(f"weights {dict(weights)} must be >= 0, one per model {list(preds)}")
    if sum(weights.values()) <= 0:
        raise ValueError("fusion weights sum to zero")


def fuse_mean(preds: Mapping[str, Prediction], weights: Mapping[str, float]) -> Routed:
    """sum(w_i alpha_i) / sum(w_i); no foreground colour (the pipeline estimates it);
    `agreement` is the lowest pairwise mask IoU."""
    _check_weights(preds, weights)
    total = sum(weights.values())
    alpha = sum(weights[n] / total * p.alpha.astype(np.float32) for n, p in preds.items())
    return _fused(preds, np.asarray(alpha))


def fuse_confidence(preds: Mapping[str, Prediction], weights: Mapping[str, float]) -> Routed:
    """Per pixel sum(c_i alpha_i) / sum(c_i) with c_i = w_i * max(|2 alpha_i - 1|, 1e-3): the
    model surest of a pixel decides it most."""
    _check_weights(preds, weights)
    num = np.zeros(next(iter(preds.values())).alpha.shape, np.float32)
    den = np.zeros_like(num)
    for name, pred in preds.items():
        a = pred.alpha.astype(np.float32)
        c = weights[name] * np.maximum(np.abs(2 * a - 1), _CONFIDENCE_FLOOR)
        num += c * a
        den += c
    return _fused(preds, num / np.maximum(den, np.finfo(np.float32).tiny))


def keep_primary_edges(primary: Prediction, fused: Routed, band: float = 0.0) -> Routed:
    """`primary`'s alpha, except in regions where the fused mask (at 0.5) differs from the
    primary's by more than a boundary band: there the fused alpha. The band is `band` times
    the image diagonal in pixels (0: every differing pixel takes the fused alpha); a connected
    differing region that erosion by a 4-connected cross of that radius removes entirely (a
    thin strip along an edge) keeps the primary's alpha, a wider one takes the fused alpha
    throughout. The primary's foreground colour; `model`, `routed_from` and `agreement` stay
    the fusion's."""
    differ = (primary.alpha > 0.5) != (fused.alpha > 0.5)
    radius = round(band * math.hypot(*differ.shape))
    if radius > 0 and differ.any():
        cross = ndimage.generate_binary_structure(2, 1)
        core = ndimage.binary_erosion(differ, cross, iterations=radius)
        labels, _ = ndimage.label(differ, cross)
        differ = np.isin(labels, np.unique(labels[core])) & differ
    alpha = np.where(differ, fused.alpha, primary.alpha).astype(np.float32)
    return Routed(alpha, primary.fgr, fused.model, fused.routed_from, fused.agreement)


@dataclass(frozen=True)
class RoutingSettings:
    """`--model auto`: which models run and how their mattes combine (the [routing] table).

    The general model and each helper run on every image; their alphas are fused (`fusion`:
    "confidence" or "mean", equal weights); the fusion decides regions wider than `edge_band`
    of the diagonal and the general model draws the edges (keep_primary_edges). When `human`
    names a model, it runs too and its matte (and foreground colour) replaces the result where
    its mask agrees with it at IoU >= `human_threshold` (consensus). Defaults measured in
    bench/routing.py (README, Evaluation)."""

    general: str = "isnet-general-use"
    helpers: tuple[str, ...] = ("u2netp",)
    fusion: str = "confidence"
    edge_band: float = 0.01
    human: str = ""
    human_threshold: float = 0.95
    models: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        if self.fusion not in ("confidence", "mean"):
            raise ValueError(f"routing.fusion: expected confidence | mean, got {self.fusion!r}")
        if not 0.0 <= self.edge_band < 0.5 or not 0.0 < self.human_threshold <= 1.0:
            raise ValueError("routing: edge_band must be in [0, 0.5), human_threshold in (0, 1]")
        names = (self.general, *self.helpers, *((self.human,) if self.human else ()))
        if len(set(names)) != len(names):
            raise ValueError(f"routing: each model once, got {list(names)}")
        object.__setattr__(self, "models", names)


def route(preds: Mapping[str, Prediction], settings: RoutingSettings) -> Routed:
    """The `auto` matte of one image from the predictions of every model in settings.models."""
    members = {name: preds[name] for name in (settings.general, *settings.helpers)}
    fuse = fuse_confidence if settings.fusion == "confidence" else fuse_mean
    fused = fuse(members, dict.fromkeys(members, 1.0))
    result = keep_primary_edges(preds[settings.general], fused, settings.edge_band)
    if not settings.human:
        return result
    pair = {
        result.model: Prediction(result.alpha, result.fgr),
        settings.human: preds[settings.human],
    }
    chosen = consensus(pair, result.model, (settings.human,), settings.human_threshold)
    consulted = (*result.routed_from, settings.human)
    if chosen.model == result.model:
        return Routed(result.alpha, result.fgr, result.model, consulted, chosen.agreement)
    return Routed(chosen.alpha, chosen.fgr, chosen.model, consulted, chosen.agreement)
