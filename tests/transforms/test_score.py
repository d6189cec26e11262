"""Score: ground truth read by the run's Reader, the scores, and its failures."""

from __future__ import annotations

import dataclasses
from io import BytesIO
from pathlib import Path

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamPipeline  # not collected
from apache_beam.testing.util import assert_that, equal_to
from PIL import Image

from matteflow.transforms import score
from matteflow.transforms.failures import ScoreError
from matteflow.transforms.quality import scores
from matteflow.transforms.reader import Reader, load_alpha
from matteflow.transforms.score import Score, _ScoreFn
from matteflow.transforms.types import DecodedImage, Failed, ImageTask, Matte, Timings
from tests.images import pattern

W, H = 17, 11


def _alpha(width: int = W, height: int = H) -> np.ndarray:
    """A soft diagonal ramp crossing 0.5, so iou, mae and edge_mae are all non-trivial."""
    y, x = np.mgrid[:height, :width]
    return np.clip((x - 0.3 * y) / width * 1.6 - 0.2, 0, 1).astype(np.float32)


def _task(gt: str | None = None, name: str = "x") -> ImageTask:
    return ImageTask(name, f"mem://{name}.png", f"k/{name}", gt, (("shop", "s"),))


def _matte(task: ImageTask) -> Matte:
    alpha = _alpha()
    image = DecodedImage(task, np.array(pattern(W, H)), "JPEG")
    timings = Timings(fetch_ms=1.0, decode_ms=2.0)
    return Matte(image, alpha, "tiny-isnet", "a" * 64, "cpu", "float32", 4, timings=timings)


def _gt_png(path: Path, alpha8: np.ndarray) -> str:
    Image.fromarray(alpha8).save(path, format="PNG")
    return str(path)


def _ground_truth(width: int = W, height: int = H) -> np.ndarray:
    """8-bit ground truth: a hard square plus one soft pixel."""
    gt = np.zeros((height, width), np.uint8)
    gt[2:8, 5:13] = 255
    gt[9, 2] = 100
    return gt


class _Ticks:
    """A clock that advances 0.25 s on every reading."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 0.25
        return self.now


def test_all_names_exist() -> None:
    assert all(hasattr(score, name) for name in score.__all__)


# --- ground truth ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("img", "expected"),
    [
        (Image.fromarray(np.array([[0, 51], [255, 102]], np.uint8)), [[0, 0.2], [1, 0.4]]),
        # RGBA: the alpha channel, not the colour.
        (
            Image.fromarray(
                np.dstack(
                    [np.full((2, 2, 3), 255, np.uint8), np.array([[0, 51], [255, 102]], np.uint8)]
                )
            ),
            [[0, 0.2], [1, 0.4]],
        ),
        (
            Image.fromarray(np.array([[0, 65535], [13107, 32768]], np.uint16)),
            [[0, 1], [0.2, 32768 / 65535]],
        ),
    ],
    ids=["grey", "rgba", "16-bit"],
)
def test_load_alpha(img: Image.Image, expected: list[list[float]]) -> None:
    buf = BytesIO()
    img.save(buf, format="PNG")
    gt = load_alpha(buf.getvalue(), "gt.png")
    assert gt.dtype == np.float32
    assert np.allclose(gt, expected, rtol=0, atol=1e-7)


def test_unreadable_ground_truth_is_a_score_error() -> None:
    with pytest.raises(ScoreError) as info:
        load_alpha(b"<html>", "gt.png")
    assert (info.value.stage, info.value.code) == ("score", "bad_ground_truth")


# --- the scoring DoFn ----------------------------------------------------------------------


def test_score_fn_computes_the_quality_scores(tmp_path: Path) -> None:
    gt8 = _ground_truth()
    matte = _matte(_task(_gt_png(tmp_path / "gt.png", gt8)))
    [scored] = list(_ScoreFn(Reader()).process(matte))
    assert isinstance(scored, Matte)
    expected = scores(matte.alpha, gt8.astype(np.float32) / 255)
    assert scored.scores == expected
    assert 0 < expected.iou < 1 and expected.mae > 0 and expected.edge_mae > 0
    assert scored.timings.score_ms >= 0 and scored.timings.decode_ms == 2.0
    assert matte.scores is None  # the input element is not mutated


def test_score_time_comes_from_the_clock(tmp_path: Path) -> None:
    matte = _matte(_task(_gt_png(tmp_path / "gt.png", _ground_truth())))
    [scored] = list(_ScoreFn(Reader(), _Ticks()).process(matte))
    assert scored.timings == dataclasses.replace(matte.timings, score_ms=250.0)


def test_score_fn_passes_rows_without_ground_truth() -> None:
    matte = _matte(_task(None))
    assert list(_ScoreFn(Reader()).process(matte)) == [matte]


@pytest.mark.parametrize(
    ("setup", "code"),
    [("wrong-size", "size_mismatch"), ("missing", "not_found"), ("garbage", "bad_ground_truth")],
)
def test_score_fn_failures(tmp_path: Path, setup: str, code: str) -> None:
    path = tmp_path / "gt.png"
    if setup == "wrong-size":
        _gt_png(path, _ground_truth(H, W))  # transposed: 11 x 17 instead of 17 x 11
    elif setup == "garbage":
        path.write_bytes(b"not a png")
    matte = _matte(_task(str(path)))
    [out] = list(_ScoreFn(Reader()).process(matte))
    assert isinstance(out, beam.pvalue.TaggedOutput) and out.tag == "failures"
    assert isinstance(out.value, Failed)
    assert (out.value.task, out.value.stage, out.value.code) == (matte.image.task, "score", code)
    assert str(path) in out.value.message


# --- the transform --------------------------------------------------------------------------


def test_score_in_a_pipeline(tmp_path: Path) -> None:
    gt8 = _ground_truth()
    gt = _gt_png(tmp_path / "gt.png", gt8)
    mattes = [_matte(_task(gt, "a")), _matte(_task(None, "b")), _matte(_task("/gone.png", "c"))]
    expected_iou = scores(_alpha(), gt8.astype(np.float32) / 255).iou
    with BeamPipeline(runner="FnApiRunner") as p:
        outputs = p | "Mattes" >> beam.Create(mattes) | "Score" >> Score()
        ious = outputs.ok | "Iou" >> beam.Map(
            lambda m: (m.image.task.id, m.scores and m.scores.iou)
        )
        failures = outputs.failures | "Codes" >> beam.Map(lambda f: (f.task.id, f.stage, f.code))
        assert_that(ious, equal_to([("a", expected_iou), ("b", None)]), label="CheckScores")
        assert_that(failures, equal_to([("c", "score", "not_found")]), label="CheckFailures")
