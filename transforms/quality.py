"""Accuracy of a predicted matte against ground truth, with the project's fixed definitions.

pred and gt are H x W float arrays in [0, 1] at the image's full resolution (issue 3):
- iou: |pred>0.5 & gt>0.5| / |pred>0.5 | gt>0.5|, 1.0 when both are empty;
- mae: mean |pred - gt|;
- edge_mae: mean |pred - gt| over B = (dilate(gt>0.5, r) & ~erode(gt>0.5, r)) | (0.02 < gt < 0.98),
  r = max(3, round(0.01 * diagonal)), a 3x3 cross applied r times (pixels outside are 0).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["edge_band", "edge_mae", "iou", "mae", "scores"]


def iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """Intersection over union of the masks at 0.5; 1.0 when both are empty."""
    p, g = pred > 0.5, gt > 0.5
    union = np.count_nonzero(p | g)
    return 1.0 if union == 0 else np.count_nonzero(p & g) / union


def mae(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean absolute alpha error."""
    return float(np.mean(np.abs(pred.astype(np.float64) - gt)))


def _cross_step(mask: np.ndarray, grow: bool) -> np.ndarray:
    """One dilation (grow) or erosion by the 3x3 cross; outside the image counts as 0."""
    padded = np.pad(mask, 1, constant_values=False)
    centre = padded[1:-1, 1:-1]
    up, down = padded[:-2, 1:-1], padded[2:, 1:-1]
    left, right = padded[1:-1, :-2], padded[1:-1, 2:]
    if grow:
        return centre | up | down | left | right
    return centre & up & down & left & right


def edge_band(gt: np.ndarray) -> np.ndarray:
    """The boolean boundary band B of the ground truth (definition in the module docstring)."""
    h, w = gt.shape
    r = max(3, round(0.01 * math.hypot(h, w)))
    fg = gt > 0.5
    dilated, eroded = fg, fg
    for _ in range(r):
        dilated = _cross_step(dilated, grow=True)
        eroded = _cross_step(eroded, grow=False)
    return (dilated & ~eroded) | ((gt > 0.02) & (gt < 0.98))


def edge_mae(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean absolute error over the boundary band; 0.0 when the band is empty."""
    band = edge_band(gt)
    if not band.any():
        return 0.0
    return float(np.mean(np.abs(pred[band].astype(np.float64) - gt[band])))


def scores(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """iou, mae and edge_mae of pred against gt (same H x W)."""
    return {"iou": iou(pred, gt), "mae": mae(pred, gt), "edge_mae": edge_mae(pred, gt)}
