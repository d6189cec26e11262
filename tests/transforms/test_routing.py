"""Routing policies on synthetic mattes whose answers are known by construction."""

from __future__ import annotations

import math

import numpy as np
import pytest

from matteflow.transforms import routing
from matteflow.transforms.routing import (
    Prediction,
    RoutingSettings,
    agreement,
    cascade,
    consensus,
    fuse_confidence,
    fuse_mean,
    keep_primary_edges,
    route,
)

H, W = 20, 30


def _box(top: int, left: int, height: int, width: int, value: float = 1.0) -> np.ndarray:
    alpha = np.zeros((H, W), np.float32)
    alpha[top : top + height, left : left + width] = value
    return alpha


def test_all_names_exist() -> None:
    assert all(hasattr(routing, name) for name in routing.__all__)


def test_agreement_is_mask_iou() -> None:
    a = _box(0, 0, 10, 10)
    b = _box(0, 5, 10, 10)  # overlap 50 px, union 150 px
    assert agreement(a, b) == pytest.approx(1 / 3)
    assert agreement(a, a * 0.6) == 1.0  # both above 0.5 everywhere a is
    assert agreement(a, a * 0.4) == 0.0  # the second mask is empty
    assert agreement(np.zeros((H, W)), np.zeros((H, W))) == 1.0


GENERAL = _box(0, 0, 10, 10)
AGREES = _box(0, 0, 10, 9)  # IoU 90/100 = 0.9 with GENERAL
HUMAN_FGR = np.full((H, W, 3), 0.25, np.float32)


def _preds() -> dict[str, Prediction]:
    return {
        "general": Prediction(GENERAL),
        "human": Prediction(AGREES, HUMAN_FGR),
        "empty": Prediction(np.zeros((H, W), np.float32), HUMAN_FGR),
        "also": Prediction(_box(0, 1, 10, 9)),  # IoU 0.9 too
    }


def test_consensus_keeps_an_agreeing_specialist_and_its_colour() -> None:
    routed = consensus(_preds(), "general", ["human"], threshold=0.85)
    assert routed.model == "human"
    assert routed.alpha is AGREES and routed.fgr is HUMAN_FGR
    assert routed.routed_from == ("general", "human")
    assert routed.agreement == pytest.approx(0.9)


def test_consensus_falls_back_below_the_threshold() -> None:
    routed = consensus(_preds(), "general", ["human"], threshold=0.95)
    assert routed.model == "general" and routed.alpha is GENERAL and routed.fgr is None
    assert routed.agreement == pytest.approx(0.9)  # the best specialist's, for the record


def test_a_specialist_that_finds_nothing_never_decides() -> None:
    routed = consensus(_preds(), "general", ["empty"], threshold=0.0 + 1e-9)
    assert routed.model == "general" and routed.agreement == 0.0
    nothing = {"general": Prediction(np.zeros((H, W))), "empty": _preds()["empty"]}
    both_empty = consensus(nothing, "general", ["empty"], threshold=0.5)
    assert both_empty.model == "general" and both_empty.agreement == 1.0  # agree, found nothing


def test_consensus_takes_the_first_agreeing_specialist_in_order() -> None:
    preds = _preds()
    assert consensus(preds, "general", ["empty", "also", "human"], 0.85).model == "also"
    assert consensus(preds, "general", ["human", "also"], 0.85).model == "human"
    none = consensus(preds, "general", ["empty", "human"], 0.95)
    assert none.model == "general" and none.agreement == pytest.approx(0.9)  # max of 0, 0.9
    alone = consensus(preds, "general", [], 0.5)
    assert alone.model == "general" and math.isnan(alone.agreement)


def test_cascade_skips_the_strong_model_when_the_fast_one_is_sure() -> None:
    def strong() -> Prediction:
        raise AssertionError("the strong model must not run")

    routed = cascade(Prediction(GENERAL), "fast", strong, "strong", max_uncertainty=0.1)
    assert routed.model == "fast" and routed.routed_from == ("fast",)
    assert math.isnan(routed.agreement)


def test_cascade_runs_the_strong_model_when_the_fast_one_is_unsure() -> None:
    soft = GENERAL.copy()
    soft[0:3, 0:10] = 0.6  # 30 of 100 subject pixels ambiguous: uncertainty 0.3
    calls: list[int] = []

    def strong() -> Prediction:
        calls.append(1)
        return Prediction(AGREES, HUMAN_FGR)

    sure = cascade(Prediction(soft), "fast", strong, "strong", max_uncertainty=0.31)
    assert sure.model == "fast" and calls == []
    routed = cascade(Prediction(soft), "fast", strong, "strong", max_uncertainty=0.3)
    assert calls == [1]
    assert routed.model == "strong" and routed.alpha is AGREES and routed.fgr is HUMAN_FGR
    assert routed.routed_from == ("fast", "strong")
    assert routed.agreement == pytest.approx(0.9)
    empty = cascade(Prediction(np.zeros((H, W))), "fast", strong, "strong", 0.99)
    assert empty.model == "strong"  # nothing found counts as fully unsure


def test_fuse_mean_is_the_weighted_mean() -> None:
    a = np.full((H, W), 0.9, np.float32)
    b = np.full((H, W), 0.3, np.float32)
    fused = fuse_mean({"a": Prediction(a), "b": Prediction(b, HUMAN_FGR)}, {"a": 3, "b": 1})
    np.testing.assert_allclose(fused.alpha, 0.75, atol=1e-6)  # (3*0.9 + 0.3) / 4
    assert fused.alpha.dtype == np.float32
    assert fused.model == "a+b" and fused.routed_from == ("a", "b") and fused.fgr is None
    assert fused.agreement == 0.0  # a is all foreground, b all background at 0.5


def test_fuse_confidence_lets_the_surer_model_decide() -> None:
    a = np.array([[1.0, 0.9, 0.5]], np.float32)
    b = np.array([[0.5, 0.2, 0.5]], np.float32)
    fused = fuse_confidence({"a": Prediction(a), "b": Prediction(b)}, {"a": 1, "b": 1})
    # pixel 0: b has confidence 1e-3 (floor): (1*1 + 1e-3*0.5) / 1.001
    # pixel 1: confidences 0.8 and 0.6: (0.8*0.9 + 0.6*0.2) / 1.4 = 0.6
    # pixel 2: both at the floor: the plain mean 0.5
    np.testing.assert_allclose(fused.alpha[0], [1.0005 / 1.001, 0.6, 0.5], atol=1e-6)
    heavy = fuse_confidence({"a": Prediction(a), "b": Prediction(b)}, {"a": 1, "b": 4})
    # pixel 1 with b weighted 4: (0.8*0.9 + 2.4*0.2) / 3.2 = 0.375
    assert heavy.alpha[0, 1] == pytest.approx(0.375)


def test_fusion_rejects_bad_weights() -> None:
    preds = {"a": Prediction(GENERAL), "b": Prediction(AGREES)}
    with pytest.raises(ValueError, match="one per model"):
        fuse_mean(preds, {"a": 1.0})
    with pytest.raises(ValueError, match="one per model"):
        fuse_confidence(preds, {"a": 1.0, "b": -1.0})
    with pytest.raises(ValueError, match="sum to zero"):
        fuse_mean(preds, {"a": 0.0, "b": 0.0})
    with pytest.raises(ValueError, match="at least one"):
        fuse_mean({}, {})


def test_keep_primary_edges_takes_the_mask_from_the_fusion() -> None:
    primary = np.array([[0.9, 0.6, 0.4, 0.0, 0.7]], np.float32)
    fused_alpha = np.array([[0.8, 0.55, 0.3, 0.7, 0.2]], np.float32)
    fused = fuse_mean({"a": Prediction(fused_alpha)}, {"a": 1.0})
    kept = keep_primary_edges(Prediction(primary, HUMAN_FGR[:1, :5]), fused)
    # same side at 0, 1, 2: the primary's values; pixels 3 and 4 flip: the fusion's.
    np.testing.assert_allclose(kept.alpha[0], [0.9, 0.6, 0.4, 0.7, 0.2])
    assert np.array_equal(kept.alpha > 0.5, fused_alpha > 0.5)
    assert (kept.model, kept.routed_from) == (fused.model, fused.routed_from)
    assert kept.fgr is not None and kept.fgr.shape == (1, 5, 3)


def test_a_band_keeps_thin_edge_disagreements_with_the_primary() -> None:
    h, w = 60, 80  # diagonal 100 px: band 0.03 is a radius of 3 px
    primary = np.zeros((h, w), np.float32)
    primary[10:30, 10:30] = 0.9  # a square the fused mask also has, 1 px wider
    fused_alpha = np.zeros((h, w), np.float32)
    fused_alpha[10:30, 10:31] = 0.8
    fused_alpha[35:55, 40:70] = 0.7  # a region only the fusion found: 20 x 30 px
    fused = fuse_mean({"f": Prediction(fused_alpha)}, {"f": 1.0})
    kept = keep_primary_edges(Prediction(primary), fused, band=0.03)
    assert np.all(kept.alpha[:, 30] == 0.0)  # the 1 px strip along the edge: the primary's
    assert np.all(kept.alpha[10:30, 10:30] == np.float32(0.9))
    assert np.all(kept.alpha[35:55, 40:70] == np.float32(0.7))  # the wide region: the fusion's
    every = keep_primary_edges(Prediction(primary), fused, band=0.0)
    assert np.all(every.alpha[10:30, 30] == np.float32(0.8))  # no band: the strip flips too


def _scene() -> dict[str, Prediction]:
    """general finds the square; the helper also (surer, 1 px wider) and a wide second region;
    the human model agrees with the union, with its own colour."""
    general = np.zeros((60, 80), np.float32)
    general[10:30, 10:30] = 0.9
    general[35:55, 40:70] = 0.3  # unsure there
    helper = np.zeros_like(general)
    helper[10:30, 10:31] = 1.0
    helper[35:55, 40:70] = 1.0
    return {
        "g": Prediction(general),
        "h": Prediction(helper),
        "person": Prediction(np.maximum(general, helper), HUMAN_FGR[:1, :1].repeat(60, 0)),
    }


def test_route_fuses_and_keeps_the_general_models_edges() -> None:
    settings = RoutingSettings(general="g", helpers=("h",), edge_band=0.03)
    assert settings.models == ("g", "h")
    routed = route(_scene(), settings)
    assert routed.model == "g+h" and routed.routed_from == ("g", "h")
    # the square: the general model's own values; its edge strip (column 30) too
    assert np.all(routed.alpha[10:30, 10:30] == np.float32(0.9))
    assert np.all(routed.alpha[:, 30] == 0.0)
    # the wide region the helper is sure of and the general model unsure: confidences 1.0 and
    # |2 * 0.3 - 1| = 0.4, fused (1.0 * 1.0 + 0.4 * 0.3) / 1.4 = 0.8: the fusion's region
    np.testing.assert_allclose(routed.alpha[35:55, 40:70], 0.8, atol=1e-6)
    np.testing.assert_allclose(routed.alpha[0:5, 0:5], 0.0)
    assert routed.agreement == pytest.approx(400 / 1020)


def test_route_hands_people_to_the_human_model_when_it_agrees() -> None:
    scene = _scene()
    scene["h"] = Prediction(scene["g"].alpha.copy())  # the fusion is the general model's matte
    scene["person"] = Prediction(scene["g"].alpha.copy(), HUMAN_FGR[:1, :1].repeat(60, 0))
    settings = RoutingSettings(general="g", helpers=("h",), human="person", human_threshold=0.9)
    assert settings.models == ("g", "h", "person")
    routed = route(scene, settings)
    assert routed.model == "person" and routed.routed_from == ("g", "h", "person")
    assert routed.alpha is scene["person"].alpha and routed.fgr is scene["person"].fgr
    scene["person"] = Prediction(np.zeros((60, 80), np.float32))  # finds nobody
    kept = route(scene, settings)
    assert kept.model == "g+h" and kept.routed_from == ("g", "h", "person")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fusion": "median"}, "confidence | mean"),
        ({"edge_band": -0.1}, "edge_band"),
        ({"human_threshold": 0.0}, "human_threshold"),
        ({"helpers": ("isnet-general-use",)}, "each model once"),
    ],
)
def test_routing_settings_are_checked(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RoutingSettings(**kwargs)  # type: ignore[arg-type]
