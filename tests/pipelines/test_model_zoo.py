"""Models per manifest row, licence classes in preflight and metrics, and a user's own model
added with `matteflow models add`, each through a real pipeline."""

from __future__ import annotations

import csv
import shutil
import tomllib
from pathlib import Path

import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamPipeline
from PIL import Image
from typer.testing import CliRunner

from matteflow.models import registry
from matteflow.pipelines.cli import app
from matteflow.pipelines.config import ConfigError, load_config
from matteflow.pipelines.remove_background import PreflightError, build, main, preflight
from matteflow.transforms.metrics import read_metrics
from tests.conftest import EVAL_DEV, SHARED_MODELS, model_manifest
from tests.images import encode, pattern

U2NETP = SHARED_MODELS / "u2netp.onnx"
U2NETP_SHA = "309c8469258dda742793dce0ebea8e6dd393174f89934733ecc8b14c76f4ddd8"


@pytest.fixture
def scratch_registry(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A registry copy the test may add to, and an empty user config folder."""
    registry.specs()
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    config = tmp_path / "config"
    monkeypatch.setenv("MATTEFLOW_CONFIG_DIR", str(config))
    return config


@pytest.fixture
def u2netp_here() -> None:
    if not U2NETP.is_file():
        pytest.skip(f"{U2NETP} absent: the real model file is needed")


@pytest.mark.integration
@pytest.mark.usefixtures("u2netp_here")
def test_a_manifest_runs_two_models_in_one_job(tmp_path: Path) -> None:
    for name, (w, h) in {"a": (40, 23), "b": (33, 50), "c": (17, 11), "d": (20, 20)}.items():
        (tmp_path / f"{name}.png").write_bytes(encode(pattern(w, h), "PNG"))
    manifest = model_manifest(
        tmp_path / "m.csv",
        [
            {"uri": "a.png", "id": "a", "model": ""},  # the run's model
            {"uri": "b.png", "id": "b", "model": "u2netp"},
            {"uri": "c.png", "id": "c", "model": "no-such-model"},
            {"uri": "d.png", "id": "d", "model": "rvm-mobilenetv3"},  # copyleft: not allowed
        ],
    )
    out = tmp_path / "out"
    settings = ['model.allow_licences=["permissive"]', "model.dtype=float32"]
    cfg = load_config(manifest=manifest, output=str(out), model="tiny-isnet", settings=settings)
    preflight(cfg)
    with BeamPipeline(runner="FnApiRunner") as p:
        build(p, cfg)
    rows = {r["id"]: r for r in read_metrics(str(out)).to_pylist()}
    assert (rows["a"]["status"], rows["a"]["model"]) == ("ok", "tiny-isnet")
    assert (rows["b"]["status"], rows["b"]["model"]) == ("ok", "u2netp")
    assert rows["a"]["licence_class"] == rows["b"]["licence_class"] == "permissive"
    assert rows["b"]["model_sha256"] == U2NETP_SHA
    assert dict(rows["b"]["row_settings"]) == {"model": "u2netp"}
    assert (rows["c"]["error_stage"], rows["c"]["error_code"]) == ("manifest", "bad_setting")
    assert "unknown model 'no-such-model'" in rows["c"]["error_message"]
    assert (rows["d"]["error_stage"], rows["d"]["status"]) == ("segment", "failed")
    assert "licence class 'copyleft'" in rows["d"]["error_message"]
    mask = np.asarray(Image.open(out / "masks" / "b.png"))
    assert mask.shape == (50, 33)


def test_allow_licences_refuses_in_preflight_naming_an_alternative(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(encode(pattern(), "PNG"))
    manifest = model_manifest(tmp_path / "m.csv", [{"uri": "a.png", "id": "a", "model": ""}])
    for model in ("isnet-general-use", "rvm-mobilenetv3"):
        cfg = load_config(
            manifest=manifest,
            output=str(tmp_path / "out"),
            model=model,
            settings=['model.allow_licences=["permissive"]'],
        )
        with pytest.raises(PreflightError, match=r"allows only permissive.*'u2netp' instead"):
            preflight(cfg, local=False)


def test_require_commercial_license_is_permissive_only() -> None:
    on = load_config(settings=["model.require_commercial_license=true"])
    assert on.model.licences == ("permissive",)
    assert load_config().model.licences == ()
    both = load_config(settings=['model.allow_licences=["copyleft", "unclear"]'])
    assert both.model.licences == ("copyleft", "unclear")


def test_an_unknown_licence_class_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"model.allow_licences: \['free'\] not among"):
        load_config(settings=['model.allow_licences=["free"]'])


@pytest.mark.integration
@pytest.mark.usefixtures("u2netp_here")
def test_models_add_then_run_end_to_end(scratch_registry: Path, tmp_path: Path) -> None:
    own = tmp_path / "downloads" / "my-salient.onnx"  # u2netp under another name
    own.parent.mkdir()
    shutil.copyfile(U2NETP, own)
    runner = CliRunner()
    args = ["models", "add", "my-salient", "--onnx", str(own), "--sha256", U2NETP_SHA]
    args += ["--input-size", "320", "--mean", "0.485", "0.456", "0.406"]
    args += ["--std", "0.229", "0.224", "0.225", "--output", "1959", "--output-norm", "minmax"]
    args += ["--licence-class", "permissive", "--weights-license", "Apache-2.0"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    toml = scratch_registry / "models.toml"
    table = tomllib.loads(toml.read_text())["my-salient"]  # a fresh process reads it back
    assert registry.ModelSpec.from_toml("my-salient", table) == registry.get_spec("my-salient")
    listed = runner.invoke(app, ["models", "list"]).stdout
    assert any(
        line.split()[:3] == ["my-salient", "general", "onnxruntime"] for line in listed.splitlines()
    )
    again = runner.invoke(app, args)
    assert again.exit_code == 1 and "'my-salient' is already registered" in again.stderr

    image = EVAL_DEV / "images" / "dev-prod-021.jpg"
    if not image.is_file():
        pytest.skip(f"{image} absent")
    manifest = model_manifest(tmp_path / "m.csv", [{"uri": str(image), "id": "p", "model": ""}])
    out = tmp_path / "out"
    assert main(["--manifest", manifest, "--output", str(out), "--model", "my-salient"]) == 0
    (row,) = read_metrics(str(out)).to_pylist()
    assert (row["status"], row["model"], row["licence_class"]) == ("ok", "my-salient", "permissive")
    assert row["model_sha256"] == U2NETP_SHA and row["dtype"] == "float32"
    mask = np.asarray(Image.open(out / "masks" / "p.png"))
    assert mask.min() < 32 and mask.max() > 224  # a subject was found: min-max spans it


def test_models_add_refuses_a_file_that_does_not_match_its_sha256(
    scratch_registry: Path, tmp_path: Path
) -> None:
    own = tmp_path / "x.onnx"
    own.write_bytes(b"not the model")
    args = ["models", "add", "x", "--onnx", str(own), "--sha256", U2NETP_SHA]
    args += ["--input-size", "320", "--licence-class", "unclear"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    assert "sha256 is" in result.stderr and f"not {U2NETP_SHA} as given" in result.stderr
    assert not (scratch_registry / "models.toml").exists()


@pytest.mark.integration
@pytest.mark.slow
def test_all_three_models_in_one_job_through_the_cli(real_weights: None, tmp_path: Path) -> None:
    # The catalog case: people to the human matting model, the rest to general models.
    for name in ("u2netp.onnx", "rvm-mobilenetv3-fp32.onnx"):
        if not (SHARED_MODELS / name).is_file():
            pytest.skip(f"{SHARED_MODELS / name} absent")
    rows = {"dev-dimk-247": "rvm-mobilenetv3", "dev-prod-021": "u2netp", "dev-dimk-036": ""}
    with (EVAL_DEV / "manifest.csv").open() as f:
        labelled = {r["id"]: r for r in csv.DictReader(f) if r["id"] in rows}
    manifest = tmp_path / "m.csv"
    with manifest.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "uri", "ground_truth_uri", "model"])
        for key, model in rows.items():
            r = labelled[key]
            writer.writerow([key, EVAL_DEV / r["image"], EVAL_DEV / r["alpha"], model])
    out = tmp_path / "out"
    assert main(["--manifest", str(manifest), "--output", str(out)]) == 0
    got = {r["id"]: r for r in read_metrics(str(out)).to_pylist()}
    expected = {
        "dev-dimk-247": ("rvm-mobilenetv3", "copyleft", "float32"),
        "dev-prod-021": ("u2netp", "permissive", None),
        "dev-dimk-036": ("isnet-general-use", "unclear", None),
    }
    for key, (model, licence, dtype) in expected.items():
        row = got[key]
        assert row["status"] == "ok", row["error_message"]
        assert (row["model"], row["licence_class"]) == (model, licence)
        assert dtype is None or row["dtype"] == dtype
        assert row["iou"] > 0.8, (key, row["iou"])  # each model finds its subject
