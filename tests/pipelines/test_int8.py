"""model.dtype = "int8" through the real job (issue 18): the quantised model writes every
output, metrics and run.json say int8, two runs write the same bytes, and the resume
fingerprint follows the dtype and the calibration images' bytes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from matteflow.models.registry import get_spec
from matteflow.models.weights import find_file
from matteflow.pipelines.config import load_config
from matteflow.pipelines.remove_background import PreflightError, main, preflight, resume_for
from matteflow.transforms.metrics import read_metrics
from tests.conftest import SAMPLE, shrunk_sample

IMAGES = ["rocket.jpg", "camera.jpg"]


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two sample photos shrunk to 96 px wide (U²-Net-p sees 320 px whatever the size), not
    the ones the calibration set holds."""
    return shrunk_sample(tmp_path_factory.mktemp("int8-run"), IMAGES)


def _int8_run(manifest: Path, out: Path, calibration: Path) -> dict[str, bytes]:
    if find_file(get_spec("u2netp"))[0] is None:
        pytest.skip("the real u2netp.onnx is not in MATTEFLOW_MODEL_PATH")
    argv = ["--manifest", str(manifest), "--output", str(out), "--model", "u2netp"]
    argv += ["--set", "model.dtype=int8", "--set", f"model.calibration={calibration}"]
    assert main(argv) == 0
    rows = read_metrics(str(out)).to_pylist()
    assert [(r["status"], r["dtype"], r["model"]) for r in rows] == [("ok", "int8", "u2netp")] * 2
    assert json.loads((out / "run.json").read_text())["model"]["dtype"] == "int8"
    return {
        str(p.relative_to(out)): p.read_bytes()
        for folder in ("masks", "cutouts")
        for p in sorted((out / folder).rglob("*.png"))
    }


@pytest.mark.integration
@pytest.mark.slow
def test_int8_run_writes_every_output_and_the_same_bytes_twice(
    manifest: Path, calibration: Path
) -> None:
    first = _int8_run(manifest, manifest.parent / "first", calibration)
    second = _int8_run(manifest, manifest.parent / "second", calibration)
    assert len(first) == 2 * len(IMAGES)
    assert [name for name, data in first.items() if second.get(name) != data] == []


def _digest(calibration: Path, dtype: str) -> str:
    cfg = load_config(
        manifest="m.csv",
        output="out",
        settings=["model.dtype=" + dtype, f"model.calibration={calibration}"],
    )
    return resume_for(cfg, PipelineOptions([])).settings


def test_resume_fingerprint_follows_dtype_and_calibration_bytes(
    calibration: Path, tmp_path: Path
) -> None:
    same_bytes = tmp_path / "same"
    shutil.copytree(calibration, same_bytes)
    int8 = _digest(calibration, "int8")
    assert _digest(same_bytes, "int8") == int8  # another folder, the same photos
    assert _digest(calibration, "float32") != int8
    (same_bytes / "coffee.jpg").write_bytes((SAMPLE / "rocket.jpg").read_bytes())
    assert _digest(same_bytes, "int8") != int8
    # calibration images do not touch other dtypes' outputs
    assert _digest(same_bytes, "float32") == _digest(calibration, "float32")


def test_int8_refuses_another_inference_size(tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text("uri\nx.png\n")
    cfg = load_config(
        manifest=str(manifest),
        output=str(tmp_path / "out"),
        model="u2netp",
        settings=["model.dtype=int8", "model.inference_size=640"],
    )
    with pytest.raises(PreflightError, match="runs at its own 320 px only"):
        preflight(cfg)
