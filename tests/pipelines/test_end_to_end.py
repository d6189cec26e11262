"""The real model on real labelled images, through the CLI entry point, and the quick start."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from matteflow.pipelines.remove_background import main
from matteflow.transforms.metrics import read_metrics
from matteflow.transforms.quality import iou
from tests.conftest import REPO

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Small eval-dev items across kinds: a DIM composite tile, a cat photo, a product composite.
ITEMS = ["dev-dimk-036", "dev-cat-test-000", "dev-prod-021"]


def test_real_model_on_eval_dev(eval_dev: Path, real_weights: None, tmp_path: Path) -> None:
    with (eval_dev / "manifest.csv").open() as f:
        rows = {r["id"]: r for r in csv.DictReader(f)}
    manifest = tmp_path / "eval.csv"
    with manifest.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "uri", "ground_truth_uri", "category"])
        for item in ITEMS:
            r = rows[item]
            writer.writerow([item, eval_dev / r["image"], eval_dev / r["alpha"], r["category"]])
    out = tmp_path / "out"
    assert main(["--manifest", str(manifest), "--output", str(out)]) == 0

    table = read_metrics(str(out))
    assert table.num_rows == len(ITEMS)
    for row in table.to_pylist():
        assert row["status"] == "ok", row["error_message"]
        gt = np.asarray(Image.open(eval_dev / rows[row["id"]]["alpha"]).convert("L")) / 255.0
        mask = np.asarray(Image.open(out / "masks" / f"{row['id']}.png")) / 255.0
        assert mask.shape == gt.shape == (row["height"], row["width"])
        # The mask is the alpha rounded to 8 bits: pixels within 1/510 of 0.5 may change side.
        assert iou(mask, gt) == pytest.approx(row["iou"], abs=1e-3)
        assert row["model_sha256"] == (
            "b6e8497ba978a6f5fbb647e419d2696cd80df5a23cb6a8ea532021911bd76acb"
        )
        # Real photos and clean composites: the model must find the subject.
        assert row["iou"] > 0.8, row["id"]


def test_quick_start_sample_through_the_cli(real_weights: None, tmp_path: Path) -> None:
    manifest = REPO / "examples" / "sample" / "manifest.csv"
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            Path(sys.executable).with_name("matteflow"),
            "run",
            "--manifest",
            str(manifest),
            "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    with manifest.open() as f:
        expected = {row["id"] for row in csv.DictReader(f)}
    assert {p.stem for p in (out / "cutouts").glob("*.png")} == expected
    assert {p.stem for p in (out / "masks").glob("*.png")} == expected
    summary = json.loads((out / "run.json").read_text())
    assert summary["counts"]["ok"] == len(expected) and summary["reconciled"]
    assert f"{len(expected)} ok" in proc.stdout
