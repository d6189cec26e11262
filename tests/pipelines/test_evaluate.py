"""`matteflow eval`: labelled sets, scoring another tool's files, our runs and the report."""

from __future__ import annotations

import csv
import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from matteflow.pipelines import evaluate
from matteflow.pipelines.config import load_config
from matteflow.pipelines.eval_runs import default_name, model_list
from matteflow.pipelines.evaluate import load_samples, main, run_name, score_predictions
from matteflow.pipelines.report import Sample
from matteflow.transforms.failures import NotFound
from matteflow.transforms.metrics import SCHEMA, read_metrics
from matteflow.transforms.quality import scores
from tests.images import encode, pattern

W, H = 24, 16


def _truth() -> np.ndarray:
    """8-bit ground truth: a hard block with a soft column."""
    gt = np.zeros((H, W), np.uint8)
    gt[4:12, 6:18] = 255
    gt[4:12, 18] = 128
    return gt


@pytest.fixture
def labelled(tmp_path: Path) -> Path:
    """An eval-dev style folder: manifest.csv with image/alpha columns relative to it."""
    root = tmp_path / "set"
    (root / "images").mkdir(parents=True)
    (root / "alpha").mkdir()
    with (root / "manifest.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "image", "alpha", "category"])
        for name, category in (("a", "product"), ("b", "product"), ("c", "animal")):
            (root / "images" / f"{name}.png").write_bytes(encode(pattern(W, H), "PNG"))
            Image.fromarray(_truth()).save(root / "alpha" / f"{name}.png")
            writer.writerow([name, f"images/{name}.png", f"alpha/{name}.png", category])
    return root


def test_all_names_exist() -> None:
    assert all(hasattr(evaluate, name) for name in evaluate.__all__)


def test_a_folder_means_its_manifest_and_paths_resolve_against_it(labelled: Path) -> None:
    samples = load_samples(str(labelled))
    assert [(s.id, s.category) for s in samples] == [
        ("a", "product"),
        ("b", "product"),
        ("c", "animal"),
    ]
    assert samples[0].image_uri == str(labelled / "images" / "a.png")
    assert samples[0].ground_truth_uri == str(labelled / "alpha" / "a.png")


def test_jsonl_manifests_with_the_run_column_names(labelled: Path) -> None:
    lines = [{"uri": "images/a.png", "ground_truth_uri": "alpha/a.png"}]
    (labelled / "m.jsonl").write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    [sample] = load_samples(str(labelled / "m.jsonl"))
    assert (sample.id, sample.category) == ("a", "")  # id from the file name


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([["a", "images/a.png", ""]], "needs an image and its ground truth"),
        ([["a", "images/a.png", "alpha/a.png"], ["a", "images/b.png", "alpha/b.png"]], "unique"),
    ],
)
def test_bad_labelled_manifests_are_refused(
    labelled: Path, rows: list[list[str]], message: str
) -> None:
    path = labelled / "bad.csv"
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([["id", "uri", "ground_truth_uri"], *rows])
    with pytest.raises(ValueError, match=message):
        load_samples(str(path))


@pytest.mark.parametrize(
    ("text", "name"), [("isnet-general-use-guided", "isnet-general-use-guided"), ("a/b c", "a-b-c")]
)
def test_run_names_are_safe_folder_names(text: str, name: str) -> None:
    assert run_name(text) == name


def test_run_name_needs_a_usable_character() -> None:
    with pytest.raises(ValueError, match="no usable characters"):
        run_name("//")


def test_predictions_are_scored_like_our_masks(labelled: Path, tmp_path: Path) -> None:
    samples = load_samples(str(labelled))
    pred = tmp_path / "pred"
    pred.mkdir()
    grey = np.zeros((H, W), np.uint8)
    grey[4:12, 6:16] = 255  # misses two columns
    Image.fromarray(grey).save(pred / "a.png")
    rgba = np.dstack([np.asarray(pattern(W, H)), _truth()])  # an RGBA cutout, exact
    Image.fromarray(rgba).save(pred / "b.webp", lossless=True)
    Image.fromarray(np.zeros((H + 1, W), np.uint8)).save(pred / "c.png")  # wrong size
    (pred / "timings.csv").write_text("id,seconds\na,0.5\n")

    table = score_predictions(samples, str(pred))
    assert table.schema == SCHEMA
    rows = {r["id"]: r for r in table.to_pylist()}
    truth = _truth().astype(np.float32) / 255
    expected = dataclasses.asdict(scores(grey.astype(np.float32) / 255, truth))
    assert {k: rows["a"][k] for k in expected} == pytest.approx(expected)
    assert (rows["a"]["total_ms"], rows["b"]["total_ms"]) == (500.0, None)
    assert rows["b"]["iou"] == 1.0 and rows["b"]["mae"] == 0.0
    assert rows["b"]["mask_uri"] == str(pred / "b.webp")
    assert (rows["c"]["status"], rows["c"]["error_code"]) == ("failed", "size_mismatch")


def test_a_missing_prediction_is_a_failed_row(labelled: Path, tmp_path: Path) -> None:
    Image.fromarray(_truth()).save(tmp_path / "a.png")
    here = load_samples(str(labelled))[0]
    sample = Sample("z", "img.png", "gt.png", "")
    row = score_predictions([here, sample], str(tmp_path)).to_pylist()[1]
    assert (row["status"], row["error_stage"], row["error_code"]) == (
        "failed",
        "score",
        "not_found",
    )


def test_eval_adds_runs_and_writes_one_report(labelled: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    base = ["--data", str(labelled), "--output", str(out), "--model", "tiny-isnet"]
    assert main([*base, "--refine", "none"]) == 0
    assert main([*base, "--refine", "guided", "--name", "guided"]) == 0
    ours = out / "runs" / "tiny-isnet-none"
    assert (
        main(["--data", str(labelled), "--output", str(out), "--predictions", str(ours / "masks")])
        == 0
    )

    runs = sorted(p.name for p in (out / "runs").iterdir())
    assert runs == ["guided", "masks", "tiny-isnet-none"]
    ours_rows = {r["id"]: r for r in read_metrics(str(ours)).to_pylist()}
    copied = {r["id"]: r for r in read_metrics(str(out / "runs" / "masks")).to_pylist()}
    assert set(ours_rows) == set(copied) == {"a", "b", "c"}
    for sample_id, row in ours_rows.items():
        assert row["status"] == "ok" and row["metadata"] == [("category", row["metadata"][0][1])]
        # Scoring our written masks as "another tool" gives our scores, up to 8-bit rounding.
        assert copied[sample_id]["iou"] == pytest.approx(row["iou"], abs=0.02)
    page = (out / "report" / "index.html").read_text()
    for name in runs:
        assert name in page


def test_eval_refuses_a_missing_data_set(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--data", str(tmp_path / "nope"), "--output", str(tmp_path / "o")]) == 2
    assert "cannot start" in capsys.readouterr().err


def test_eval_takes_a_relative_data_folder(
    labelled: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Issue 17, item 2: the run's manifest lives in another folder, so relative paths taken
    # against the working directory were not found there and every row failed.
    monkeypatch.chdir(labelled.parent)
    assert main(["--data", labelled.name, "--output", "eval", "--model", "tiny-isnet"]) == 0
    rows = read_metrics(str(tmp_path / "eval" / "runs" / "tiny-isnet")).to_pylist()
    assert sorted((r["id"], r["status"]) for r in rows) == [("a", "ok"), ("b", "ok"), ("c", "ok")]


def test_default_names_come_from_the_effective_settings(tmp_path: Path) -> None:
    profile = tmp_path / "fast.toml"
    profile.write_text("")
    settings = ["outputs.cutout_format=webp"]
    name = default_name("u2netp", str(profile), "guided", settings)
    assert name == "u2netp-guided-fast-outputs.cutout_format-webp"
    # No --model: the profile's model names the run.
    assert default_name(None, None, None, []) == load_config().model.name
    assert default_name(None, None, None, ["model.name=tiny-isnet"]) == (
        "tiny-isnet-model.name-tiny-isnet"
    )


def test_model_lists(labelled: Path) -> None:
    assert model_list(None, "tiny-isnet") == ["tiny-isnet"]
    assert model_list(None, None) == [None]
    assert model_list("tiny-isnet, isnet-general-use", None) == ["tiny-isnet", "isnet-general-use"]
    for bad in ("tiny-isnet,tiny-isnet", " , "):
        with pytest.raises(ValueError, match="distinct names"):
            model_list(bad, None)
    with pytest.raises(ValueError, match="not both"):
        model_list("tiny-isnet", "tiny-isnet")
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        model_list("tiny-isnet,nope", None)


def test_an_existing_run_is_refused_unless_replaced(
    labelled: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "eval"
    base = ["--data", str(labelled), "--output", str(out), "--models", "tiny-isnet"]
    assert main(base) == 0
    run = out / "runs" / "tiny-isnet"
    first = sorted(p.name for p in (run / "metrics").iterdir())
    stale = run / "metrics" / "stale.parquet"
    stale.write_bytes(b"left from an older run")
    capsys.readouterr()
    assert main(base) == 2
    assert "run 'tiny-isnet' exists" in capsys.readouterr().err
    assert stale.exists()  # refused before touching anything
    assert main([*base, "--replace"]) == 0
    assert sorted(p.name for p in (run / "metrics").iterdir()) == first  # the stale file is gone
    assert main([*base, "--set", "outputs.cutout_format=webp"]) == 0  # other settings, new name
    assert (out / "runs" / "tiny-isnet-outputs.cutout_format-webp" / "metrics").is_dir()


def test_several_models_and_a_name_do_not_mix(
    labelled: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--data", str(labelled), "--output", str(tmp_path / "o")]
    assert main([*base, "--models", "tiny-isnet,isnet-general-use", "--name", "x"]) == 2
    assert "--name names one run" in capsys.readouterr().err
    assert main([*base, "--models", "tiny-isnet,nope"]) == 2  # checked before any run starts
    assert "unknown model 'nope'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_predictions_without_any_matching_file_are_an_error(
    labelled: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "unrelated.png").write_bytes(b"")
    out = tmp_path / "o"
    assert main(["--data", str(labelled), "--output", str(out), "--predictions", str(empty)]) == 2
    assert "no {id}.png or .webp file for any of the 3 ids" in capsys.readouterr().err
    assert not out.exists()
    with pytest.raises(NotFound):
        score_predictions(load_samples(str(labelled)), str(empty))


def test_slices_reach_the_report(labelled: Path, tmp_path: Path) -> None:
    manifest = labelled / "manifest.csv"
    lines = manifest.read_text().splitlines()
    shades = ["shade", "dark", "light", "dark"]
    manifest.write_text("\n".join(f"{a},{b}" for a, b in zip(lines, shades, strict=True)) + "\n")
    samples = load_samples(str(labelled))
    assert dict(samples[0].columns)["shade"] == "dark"
    out = tmp_path / "eval"
    base = ["--data", str(labelled), "--output", str(out), "--model", "tiny-isnet"]
    assert main([*base, "--slice-by", "shade"]) == 0
    page = (out / "report" / "index.html").read_text()
    assert "<svg" in page
    assert main([*base, "--slice-by", "shoe_size", "--replace"]) == 2  # not a column: refused
    assert main([*base, "--refine", "guided", "--slice-by", "shade"]) == 0
    page = (out / "report" / "index.html").read_text()
    groups = re.findall(r'<tr data-a="[^"]*" data-b="[^"]*" data-group="([^"]*)"', page)
    assert groups == ["all", "category=animal", "category=product", "shade=dark", "shade=light"]


def test_eval_exits_3_when_every_row_fails(
    labelled: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Issue 17, item 2: a run that scored nothing is not a result.
    for image in (labelled / "images").iterdir():
        image.write_bytes(b"not an image")
    argv = ["--data", str(labelled), "--output", str(tmp_path / "o"), "--model", "tiny-isnet"]
    assert main(argv) == 3
    assert "every row failed" in capsys.readouterr().err


def test_prediction_ids_stay_inside_their_folder(tmp_path: Path) -> None:
    # Issue 17, item 14: an id "../x" read x.png beside the predictions folder.
    (tmp_path / "pred").mkdir()
    Image.fromarray(_truth()).save(tmp_path / "secret.png")
    Image.fromarray(_truth()).save(tmp_path / "pred" / "fine.png")
    fine = Sample("fine", "img.png", str(tmp_path / "pred" / "fine.png"), "")
    sample = Sample("../secret", "img.png", str(tmp_path / "secret.png"), "")
    rows = score_predictions([fine, sample], str(tmp_path / "pred")).to_pylist()
    outcomes = [(r["status"], r["error_code"]) for r in rows]
    assert outcomes == [("ok", None), ("failed", "unsafe_key")]
