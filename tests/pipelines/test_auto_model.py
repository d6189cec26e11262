"""`--model auto`: the [routing] table, the handler routing its member models' mattes, the
metrics columns, licence preflight over every member, and `eval --models ...,auto`."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamPipeline
from PIL import Image

from matteflow.models import registry
from matteflow.pipelines.config import ConfigError, load_config
from matteflow.pipelines.eval_runs import model_list
from matteflow.pipelines.evaluate import main as eval_main
from matteflow.pipelines.remove_background import PreflightError, build, preflight, resume_for
from matteflow.transforms.inference import MatteModelHandler
from matteflow.transforms.metrics import read_metrics
from matteflow.transforms.routing import Prediction, RoutingSettings, route
from matteflow.transforms.types import DecodedImage, Failed, ImageTask, Matte
from tests.conftest import model_manifest
from tests.images import encode, pattern

SECOND = "tiny-isnet-b"  # tiny-isnet with other random weights: a second member model
ROUTING = ["routing.general=tiny-isnet", f'routing.helpers=["{SECOND}"]', "routing.edge_band=0.0"]


@pytest.fixture
def two_tiny_models(monkeypatch: pytest.MonkeyPatch) -> None:
    """A registry copy with a second tiny model (seed 1), for this test only."""
    registry.specs()
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    registry.register(dataclasses.replace(registry.get_spec("tiny-isnet"), name=SECOND, seed=1))


def _image(name: str, width: int, height: int) -> DecodedImage:
    return DecodedImage(
        ImageTask(name, f"mem://{name}.png", name), np.array(pattern(width, height)), "PNG"
    )


def test_the_routing_table_is_checked_like_the_others() -> None:
    cfg = load_config(settings=["routing.helpers=[]", "routing.fusion=mean"])
    assert cfg.routing == RoutingSettings(helpers=(), fusion="mean")
    with pytest.raises(ConfigError, match=r"routing.bogus: unknown key"):
        load_config(settings=["routing.bogus=1"])
    with pytest.raises(ConfigError, match=r"routing.models: unknown key"):  # derived, not set
        load_config(settings=['routing.models=["u2netp"]'])
    with pytest.raises(ConfigError, match=r"routing.fusion"):
        load_config(settings=["routing.fusion=max"])


@pytest.mark.usefixtures("two_tiny_models")
def test_the_resume_fingerprint_follows_routing_and_every_member(tmp_path: Path) -> None:
    base = load_config(output=str(tmp_path), model="auto", settings=ROUTING)
    digests = {
        resume_for(cfg, BeamPipeline().options).settings
        for cfg in (
            base,
            load_config(
                output=str(tmp_path), model="auto", settings=[*ROUTING, "routing.fusion=mean"]
            ),
            load_config(output=str(tmp_path), model="tiny-isnet", settings=ROUTING),
        )
    }
    assert len(digests) == 3
    registry._REGISTRY[SECOND] = dataclasses.replace(registry._REGISTRY[SECOND], seed=2)
    assert resume_for(base, BeamPipeline().options).settings not in digests


@pytest.mark.usefixtures("two_tiny_models")
def test_an_auto_row_gets_the_routed_matte_of_its_members() -> None:
    routing = RoutingSettings(general="tiny-isnet", helpers=(SECOND,), edge_band=0.0)
    images = [_image("a", 17, 11), _image("b", 40, 23), _image("c", 31, 64)]
    images[1] = dataclasses.replace(
        images[1], task=dataclasses.replace(images[1].task, settings=(("model", "tiny-isnet"),))
    )
    auto = MatteModelHandler("auto", "cpu", "float32", max_batch_pixels=100_000, routing=routing)
    mattes = _by_id(auto.run_inference(images, auto.load_model()))
    singles = {}
    for name in routing.models:
        handler = MatteModelHandler(name, "cpu", "float32", max_batch_pixels=100_000)
        plain = [
            dataclasses.replace(im, task=dataclasses.replace(im.task, settings=())) for im in images
        ]
        singles[name] = _by_id(handler.run_inference(plain, handler.load_model()))
    for key, matte in mattes.items():
        if key == "b":  # the row's own model: not routed
            assert (matte.model, matte.routed_from, matte.agreement) == ("tiny-isnet", (), None)
            # (batches of other sizes: equal up to float32 rounding)
            np.testing.assert_allclose(matte.alpha, singles["tiny-isnet"][key].alpha, atol=1e-6)
            continue
        preds = {n: Prediction(singles[n][key].alpha) for n in routing.models}
        expected = route(preds, routing)
        np.testing.assert_allclose(matte.alpha, expected.alpha, atol=1e-6)
        assert matte.model == "tiny-isnet+tiny-isnet-b"
        assert matte.routed_from == ("tiny-isnet", SECOND)
        assert matte.agreement == pytest.approx(expected.agreement, nan_ok=True)
        # the two random models do not agree; the fusion differs from either
        assert np.abs(matte.alpha - preds["tiny-isnet"].alpha).max() > 1e-3


def _by_id(results: Iterable[Matte | Failed]) -> dict[str, Matte]:
    mattes = {}
    for result in results:
        assert isinstance(result, Matte), result
        mattes[result.image.task.id] = result
    return mattes


@pytest.mark.usefixtures("two_tiny_models")
def test_a_run_with_model_auto_records_who_decided(tmp_path: Path) -> None:
    sizes = {"a": (40, 23), "b": (33, 50), "c": (17, 11)}
    for name, (w, h) in sizes.items():
        (tmp_path / f"{name}.png").write_bytes(encode(pattern(w, h), "PNG"))
    manifest = model_manifest(
        tmp_path / "m.csv",
        [
            {"uri": "a.png", "id": "a", "model": ""},  # the run's: auto
            {"uri": "b.png", "id": "b", "model": "tiny-isnet"},
            {"uri": "c.png", "id": "c", "model": "auto"},
        ],
    )
    out = tmp_path / "out"
    cfg = load_config(manifest=manifest, output=str(out), model="auto", settings=ROUTING)
    preflight(cfg)
    with BeamPipeline(runner="FnApiRunner") as p:
        build(p, cfg)
    rows = {r["id"]: r for r in read_metrics(str(out)).to_pylist()}
    for key in ("a", "c"):
        row = rows[key]
        assert (row["status"], row["model"]) == ("ok", "tiny-isnet+tiny-isnet-b")
        assert row["routed_from"] == ["tiny-isnet", SECOND]
        assert 0.0 <= row["agreement"] <= 1.0 or math.isnan(row["agreement"])
        assert row["licence_class"] == "permissive"
        mask = np.asarray(Image.open(out / "masks" / f"{key}.png"))
        assert mask.shape == sizes[key][::-1]
    assert (rows["b"]["model"], rows["b"]["routed_from"], rows["b"]["agreement"]) == (
        "tiny-isnet",
        [],
        None,
    )


def test_preflight_checks_the_licence_of_every_member(tmp_path: Path) -> None:
    manifest = model_manifest(tmp_path / "m.csv", [{"uri": "a.png", "id": "a", "model": ""}])
    settings = [
        "routing.general=tiny-isnet",
        "routing.helpers=[]",
        "routing.human=rvm-mobilenetv3",  # copyleft
        'model.allow_licences=["permissive"]',
    ]
    cfg = load_config(
        manifest=manifest, output=str(tmp_path / "o"), model="auto", settings=settings
    )
    with pytest.raises(PreflightError, match="rvm-mobilenetv3"):
        preflight(cfg)
    with pytest.raises(PreflightError, match="unknown model 'nope'"):
        preflight(dataclasses.replace(cfg, routing=RoutingSettings(general="nope", helpers=())))


def test_an_auto_row_fails_when_a_member_is_not_allowed(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(encode(pattern(20, 12), "PNG"))
    (tmp_path / "b.png").write_bytes(encode(pattern(12, 20), "PNG"))
    manifest = model_manifest(
        tmp_path / "m.csv",
        [{"uri": "a.png", "id": "a", "model": "auto"}, {"uri": "b.png", "id": "b", "model": ""}],
    )
    settings = [
        "routing.general=tiny-isnet",
        "routing.helpers=[]",
        "routing.human=rvm-mobilenetv3",  # copyleft
        'model.allow_licences=["permissive"]',
        "model.dtype=float32",
    ]
    out = tmp_path / "o"
    cfg = load_config(manifest=manifest, output=str(out), model="tiny-isnet", settings=settings)
    preflight(cfg)  # the run's model is allowed; the row's auto is checked when it runs
    with BeamPipeline(runner="FnApiRunner") as p:
        build(p, cfg)
    rows = {r["id"]: r for r in read_metrics(str(out)).to_pylist()}
    assert (rows["b"]["status"], rows["b"]["model"]) == ("ok", "tiny-isnet")
    assert (rows["a"]["status"], rows["a"]["error_stage"]) == ("failed", "segment")
    assert "rvm-mobilenetv3" in rows["a"]["error_message"]


@pytest.fixture
def labelled(tmp_path: Path) -> Path:
    """A three-image labelled folder (manifest.csv, images/, alpha/)."""
    root = tmp_path / "set"
    (root / "images").mkdir(parents=True)
    (root / "alpha").mkdir()
    truth = np.zeros((16, 24), np.uint8)
    truth[4:12, 6:18] = 255
    with (root / "manifest.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "image", "alpha", "category"])
        for name, category in (("a", "product"), ("b", "product"), ("c", "animal")):
            (root / "images" / f"{name}.png").write_bytes(encode(pattern(24, 16), "PNG"))
            Image.fromarray(truth).save(root / "alpha" / f"{name}.png")
            writer.writerow([name, f"images/{name}.png", f"alpha/{name}.png", category])
    return root


@pytest.mark.usefixtures("two_tiny_models")
def test_eval_runs_auto_beside_a_model_into_one_report(labelled: Path, tmp_path: Path) -> None:
    assert model_list("tiny-isnet,auto", None) == ["tiny-isnet", "auto"]
    out = tmp_path / "eval"
    sets = [a for s in ROUTING for a in ("--set", s)]
    args = ["--data", str(labelled), "--output", str(out), "--models", "tiny-isnet,auto", *sets]
    assert eval_main(args) == 0
    runs = sorted(p.name for p in (out / "runs").iterdir())
    assert len(runs) == 2 and runs[0].startswith("auto-") and runs[1].startswith("tiny-isnet-")
    auto_rows = read_metrics(str(out / "runs" / runs[0])).to_pylist()
    assert [r["routed_from"] for r in auto_rows] == [["tiny-isnet", SECOND]] * 3
    summary = json.loads((out / "runs" / runs[0] / "run.json").read_text())["model"]
    assert (summary["name"], summary["members"]) == ("auto", ["tiny-isnet", SECOND])
    assert summary["licence_class"] == "permissive"
    page = (out / "report" / "index.html").read_text()
    assert all(name in page for name in runs)


@pytest.mark.integration
def test_model_auto_on_real_images(eval_dev: Path, tmp_path: Path) -> None:
    """The default routing (IS-Net + U2-Net-p, real weights) on three eval-dev images."""
    with (eval_dev / "manifest.csv").open() as f:
        rows = list(csv.DictReader(f))[:3]
    manifest = model_manifest(
        tmp_path / "m.csv",
        [{"uri": str(eval_dev / r["image"]), "id": r["id"], "model": ""} for r in rows],
    )
    cfg = load_config(manifest=manifest, output=str(tmp_path / "o"), model="auto")
    try:
        preflight(cfg)
    except PreflightError as err:
        pytest.skip(f"real weights not here: {err}")
    with BeamPipeline(runner="FnApiRunner") as p:
        build(p, cfg)
    got = read_metrics(str(tmp_path / "o")).to_pylist()
    assert len(got) == 3
    for row in got:
        assert (row["status"], row["model"]) == ("ok", "isnet-general-use+u2netp")
        assert row["routed_from"] == ["isnet-general-use", "u2netp"]
        assert 0.5 < row["agreement"] <= 1.0  # two real models agree on these subjects
        mask = np.asarray(Image.open(tmp_path / "o" / "masks" / f"{row['id']}.png"))
        assert 0.02 < (mask > 127).mean() < 0.98  # a subject, not an empty or full matte
