"""The whole job on the hostile corpus (tests/hostile.py): the run completes, every row ends as
exactly one metrics row, ok rows have outputs of the right size, each failure has the expected
stage and code, and nothing partial or temporary is left under the output prefix."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from matteflow.pipelines.remove_background import main
from matteflow.transforms.metrics import read_metrics
from tests.hostile import CASES, Case, write_corpus

Run = tuple[Path, list[dict[str, Any]]]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """The corpus run once through main() with the tiny model: (output folder, metrics rows)."""
    folder = tmp_path_factory.mktemp("hostile")
    manifest = write_corpus(folder / "corpus")
    out = folder / "out"
    argv = ["--manifest", str(manifest), "--output", str(out), "--model", "tiny-isnet"]
    assert main(argv) == 0
    return out, read_metrics(str(out)).to_pylist()


def test_the_corpus_is_big_enough() -> None:
    assert len(CASES) >= 30
    assert len({case.name for case in CASES}) == len(CASES)


def test_every_row_is_accounted_for_once(run: Run) -> None:
    out, rows = run
    assert Counter(r["id"] for r in rows) == Counter(case.name for case in CASES)
    summary = json.loads((out / "run.json").read_text())
    assert summary["reconciled"] is True and summary["manifest_rows"] == len(CASES)


def test_each_row_has_its_expected_outcome(run: Run) -> None:
    _, rows = run
    got = {
        r["id"]: "ok" if r["status"] == "ok" else f"{r['error_stage']}/{r['error_code']}"
        for r in rows
    }
    assert got == {case.name: case.expect for case in CASES}
    for r in rows:
        if r["status"] == "failed":
            assert r["error_message"] and len(r["error_message"]) <= 1000
            assert "b'" not in r["error_message"].replace("b'…'", "")  # no bytes quoted


@pytest.mark.parametrize("case", [c for c in CASES if c.expect == "ok"], ids=lambda c: c.name)
def test_ok_rows_have_whole_outputs_of_the_right_size(run: Run, case: Case) -> None:
    out, rows = run
    row = next(r for r in rows if r["id"] == case.name)
    assert (row["width"], row["height"]) == case.size
    assert tuple(row["warnings"]) == case.warnings
    mask, cutout = (_load(out / kind / f"{case.name}.png") for kind in ("masks", "cutouts"))
    wide = row["bit_depth"] == 16  # 16-bit sources get 16-bit outputs (outputs.keep_16_bit)
    assert (mask.mode, mask.size) == ("I;16" if wide else "L", case.size)
    assert (cutout.mode, cutout.size) == ("RGBA", case.size)  # Pillow reads 16-bit as 8
    alpha = np.asarray(mask).astype(np.uint16) >> 8 if wide else np.asarray(mask)
    assert np.array_equal(np.asarray(cutout)[..., 3], alpha)
    assert row["foreground_fraction"] == pytest.approx(alpha.mean() / 255, abs=0.01)


def _load(path: Path) -> Image.Image:
    with Image.open(path) as img:
        img.load()
        return img


def test_nothing_partial_is_left(run: Run) -> None:
    out, rows = run
    files = [p for p in out.rglob("*") if p.is_file()]
    assert [p for p in files if p.name.startswith(".")] == []  # no temporaries
    failed = {r["id"] for r in rows if r["status"] == "failed"}
    written = {p.stem for kind in ("cutouts", "masks", "state") for p in (out / kind).iterdir()}
    assert written.isdisjoint(failed)
    ok = {r["id"] for r in rows if r["status"] == "ok"}
    for kind, ext in (("cutouts", "png"), ("masks", "png"), ("state", "json")):
        assert {p.name for p in (out / kind).iterdir()} == {f"{key}.{ext}" for key in ok}


def test_the_polyglot_payload_does_not_reach_the_outputs(run: Run) -> None:
    out, _ = run
    for kind in ("cutouts", "masks"):
        data = (out / kind / "polyglot_jpeg_zip_html.png").read_bytes()
        assert b"<script>" not in data and b"PK\x03\x04" not in data
