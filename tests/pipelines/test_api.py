"""The Python API: remove() and Remover give the job's cutout pixels for every kind of source;
RemoveBackground runs in a user's own Beam pipeline."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from pathlib import Path

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.coders.typecoders import registry
from apache_beam.testing.test_pipeline import TestPipeline as BeamPipeline
from apache_beam.testing.util import assert_that, equal_to
from PIL import Image

import matteflow
from matteflow.pipelines.api import cutout_bytes
from matteflow.pipelines.remove_background import main as run_main
from matteflow.transforms.coders import RecordCoder
from matteflow.transforms.failures import MatteflowError
from matteflow.transforms.metrics import MetricsRow
from matteflow.transforms.types import Written
from tests.images import adobe_rgb_profile, encode, oriented, pattern

TINY = "tiny-isnet"


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two images through the CLI's job: one EXIF-rotated with an Adobe RGB profile, one plain."""
    root = tmp_path_factory.mktemp("api")
    (root / "tagged.png").write_bytes(
        encode(oriented(pattern(17, 11), 6), "PNG", exif_orientation=6, icc=adobe_rgb_profile())
    )
    (root / "plain.png").write_bytes(encode(pattern(23, 14), "PNG"))
    with (root / "manifest.csv").open("w", newline="") as f:
        csv.writer(f).writerows([["uri"], ["tagged.png"], ["plain.png"]])
    args = ["--manifest", str(root / "manifest.csv"), "--output", str(root / "out")]
    assert run_main([*args, "--model", TINY, "--runner", "FnApiRunner"]) == 0
    return root


def _pixels(img: Image.Image) -> np.ndarray:
    assert img.mode == "RGBA"
    return np.asarray(img)


def _read(path: Path | io.BytesIO) -> np.ndarray:
    with Image.open(path) as img:
        return _pixels(img)


def _cutout(job: Path, key: str) -> np.ndarray:
    return _read(job / "out" / "cutouts" / f"{key}.png")


def test_public_names() -> None:
    assert sorted(matteflow.__all__) == ["RemoveBackground", "Remover", "__version__", "remove"]
    assert all(getattr(matteflow, name) for name in matteflow.__all__)


@pytest.mark.parametrize("kind", ["path", "str", "bytes", "pil"])
def test_remove_gives_the_jobs_cutout(job: Path, kind: str) -> None:
    path = job / "tagged.png"
    if kind == "pil":
        with Image.open(path) as img:
            cutout = _pixels(matteflow.remove(img, model=TINY))
    else:
        src = {"path": path, "str": str(path), "bytes": path.read_bytes()}[kind]
        cutout = _pixels(matteflow.remove(src, model=TINY))
    assert cutout.shape == (11, 17, 4)  # upright: EXIF orientation 6 applied
    assert np.array_equal(cutout, _cutout(job, "tagged"))


def test_remove_takes_an_array(job: Path) -> None:
    rgb = np.asarray(pattern(23, 14))
    assert np.array_equal(_pixels(matteflow.remove(rgb, model=TINY)), _cutout(job, "plain"))


def test_remover_keeps_one_model_for_many_images(job: Path) -> None:
    remover = matteflow.Remover(TINY)
    loaded = remover._model
    for key in ("tagged", "plain"):
        assert np.array_equal(_pixels(remover.remove(job / f"{key}.png")), _cutout(job, key))
    assert remover._model is loaded
    webp = remover.render(job / "plain.png", cutout_format="webp", framing="crop")
    assert Image.open(io.BytesIO(webp)).format == "WEBP"


def test_settings_as_keywords_and_their_typos(job: Path) -> None:
    guided = matteflow.Remover(TINY, refine="guided", decontaminate=False)
    assert (guided.config.refine.refine, guided.config.refine.decontaminate) == ("guided", False)
    with pytest.raises(TypeError, match="did you mean 'decontaminate'"):
        matteflow.Remover(TINY, decontaminat=False)
    with pytest.raises(TypeError, match=r"'batching\.max_pixels', 'decode\.max_pixels'"):
        matteflow.Remover(TINY, max_pixels=5)
    dotted = matteflow.Remover(TINY, **{"decode.max_pixels": 5, "framing.mode": "crop"})
    assert (dotted.config.decode.max_pixels, dotted.config.framing.mode) == (5, "crop")


def test_a_bad_image_raises_the_jobs_failure_code() -> None:
    with pytest.raises(MatteflowError) as caught:
        matteflow.remove(b"<html>not an image</html>", model=TINY)
    assert (caught.value.stage, caught.value.code) == ("decode", "unsupported_format")
    with pytest.raises(TypeError, match="expected H x W"):
        matteflow.remove(np.zeros((4, 4, 2), np.uint8), model=TINY)


def test_the_transform_in_a_users_pipeline(job: Path, tmp_path: Path) -> None:
    expected = _cutout(job, "plain")

    def outcome(row: MetricsRow) -> tuple:  # type: ignore[type-arg]
        if row.status == "ok":
            same = np.array_equal(_read(io.BytesIO(cutout_bytes(row))), expected)
            return row.id, "ok", same
        return row.id, row.status, row.error_code

    items = [str(job / "plain.png"), {"uri": str(job / "gone.png"), "id": "gone"}]
    with BeamPipeline(runner="FnApiRunner") as p:
        results = (
            p
            | "Images" >> beam.Create(items)
            | "Cutouts" >> matteflow.RemoveBackground(model=TINY)
            | "Outcome" >> beam.Map(outcome)
        )
        assert_that(results, equal_to([("plain", "ok", True), ("gone", "failed", "not_found")]))


def test_the_transforms_rendered_records_are_coded_without_pickling_for_sizes() -> None:
    # Render's Written carry the matte to their metrics row: typed, Beam's counters read nbytes.
    p = beam.Pipeline()  # built, not run
    _ = p | beam.Create(["/nowhere/a.png"]) | matteflow.RemoveBackground(model=TINY)
    rendered = []

    class Outputs(beam.pipeline.PipelineVisitor):
        def visit_transform(self, node: beam.pipeline.AppliedPTransform) -> None:
            if node.full_label.endswith("/Render/ParDo(_RenderFn)"):
                rendered.append(node.outputs[None].element_type)

    p.visit(Outputs())
    assert rendered == [Written]
    assert isinstance(registry.get_coder(Written), RecordCoder)


@pytest.mark.parametrize("run", ["first", "again"])
def test_the_transform_writes_outputs_and_resumes(job: Path, tmp_path_factory, run: str) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path_factory.getbasetemp() / "transform-out"
    rows = [{"uri": str(job / "plain.png"), "id": "p1", "output_key": "shop/p1"}]
    with BeamPipeline(runner="FnApiRunner") as p:
        statuses = (
            p
            | "Rows" >> beam.Create(rows)
            | "Cutouts" >> matteflow.RemoveBackground(str(out), model=TINY)
            | "Status" >> beam.Map(lambda r: (r.id, r.status))
        )
        assert_that(statuses, equal_to([("p1", "ok" if run == "first" else "skipped")]))
    written = _read(out / "cutouts" / "shop" / "p1.png")
    assert np.array_equal(written, _cutout(job, "plain"))


def test_python_dash_m_matteflow() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "matteflow", "--version"], capture_output=True, text=True
    )
    assert (done.returncode, done.stdout.strip()) == (0, f"matteflow {matteflow.__version__}")


@pytest.mark.integration
def test_remove_with_the_real_model(real_weights: None, tmp_path: Path) -> None:
    source = (
        Path(__file__).resolve().parents[2] / "examples" / "sample" / "chelsea-exif-rotated.jpg"
    )
    (tmp_path / "m.csv").write_text(f"uri,id\n{source},cat\n")
    args = ["--manifest", str(tmp_path / "m.csv"), "--output", str(tmp_path / "out")]
    assert run_main([*args, "--model", "isnet-general-use", "--runner", "FnApiRunner"]) == 0
    expected = _read(tmp_path / "out" / "cutouts" / "cat.png")
    got = _pixels(matteflow.remove(source, model="isnet-general-use"))
    assert np.array_equal(got, expected)
    assert 0.05 < (got[..., 3] > 127).mean() < 0.95  # a cat found, not all or nothing
