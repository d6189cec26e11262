"""The main job on TestPipeline and through run(): every manifest row ends as one metrics row."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.metrics.cells import DistributionResult
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline as BeamPipeline
from apache_beam.testing.util import assert_that, equal_to
from PIL import Image

from matteflow.pipelines.config import load_config
from matteflow.pipelines.remove_background import (
    PreflightError,
    build,
    compute_dtype,
    main,
    model_handler,
    preflight,
    resume_for,
    run,
)
from matteflow.transforms.metrics import MetricsRow, read_metrics
from tests.images import encode, oriented, pattern

SIZES = {"a": (17, 11), "b": (40, 23), "nested/c": (31, 64)}


def _write_manifest(path: Path, rows: list[dict[str, str]]) -> str:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return str(path)


@pytest.fixture
def sample(tmp_path: Path) -> str:
    """Three good images (one EXIF-rotated, one nested), a missing file and a text file."""
    images = tmp_path / "images"
    (images / "nested").mkdir(parents=True)
    rows = []
    for name, (w, h) in SIZES.items():
        data = encode(oriented(pattern(w, h), 6), "PNG", exif_orientation=6)
        (images / f"{name}.png").write_bytes(data)
        rows.append({"uri": f"images/{name}.png", "shop": "x"})
    (images / "notes.jpg").write_text("<html>not an image</html>")
    rows += [{"uri": "images/notes.jpg", "shop": "y"}, {"uri": "images/gone.png", "shop": "z"}]
    return _write_manifest(tmp_path / "manifest.csv", rows)


@pytest.fixture
def bad_rows(tmp_path: Path) -> str:
    """Rows that fail as manifest rows: a shared id, an unsafe key, no uri; plus one good row."""
    (tmp_path / "a.png").write_bytes(encode(pattern(), "PNG"))
    rows = [
        {"uri": "a.png", "id": "same", "output_key": ""},
        {"uri": "a.png", "id": "same", "output_key": "other"},
        {"uri": "a.png", "id": "escape", "output_key": "../../etc/x"},
        {"uri": "", "id": "empty", "output_key": ""},
        {"uri": "a.png", "id": "good", "output_key": ""},
    ]
    return _write_manifest(tmp_path / "bad.csv", rows)


def test_pipeline_accounts_for_every_row(sample: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    # Decontamination off: the tiny model's soft alpha would recolour edge pixels, and this
    # test checks that the cutout carries the upright source colours.
    settings = ["refine.decontaminate=false"]
    cfg = load_config(manifest=sample, output=str(out), model="tiny-isnet", settings=settings)
    with BeamPipeline(runner="FnApiRunner") as p:
        outputs = build(p, cfg)
        statuses = outputs.rows | "Status" >> _status_pairs()
        assert_that(
            statuses,
            equal_to(
                [
                    ("a", "ok", None),
                    ("b", "ok", None),
                    ("nested/c", "ok", None),
                    ("notes", "failed", "decode/unsupported_format"),
                    ("gone", "failed", "fetch/not_found"),
                ]
            ),
            label="CheckStatuses",
        )
    table = read_metrics(str(out))
    assert table.num_rows == 5
    rows = {r["id"]: r for r in table.to_pylist()}
    assert dict(rows["gone"]["metadata"]) == {"shop": "z"}
    for key, (w, h) in SIZES.items():
        # EXIF orientation 6 was applied: the stored image was h x w, the output is w x h.
        mask = Image.open(out / "masks" / f"{key}.png")
        cutout = Image.open(out / "cutouts" / f"{key}.png")
        assert (mask.mode, mask.size) == ("L", (w, h))
        assert (cutout.mode, cutout.size) == ("RGBA", (w, h))
        assert np.array_equal(np.asarray(cutout)[..., 3], np.asarray(mask))
        assert np.array_equal(np.asarray(cutout)[..., :3], np.asarray(pattern(w, h)))
        assert (rows[key]["width"], rows[key]["height"], rows[key]["exif_orientation"]) == (w, h, 6)
        assert rows[key]["model"] == "tiny-isnet" and rows[key]["device"] == "cpu"
        fg = rows[key]["foreground_fraction"]
        assert fg == pytest.approx(np.asarray(mask).mean() / 255, abs=2 / 255)


def _status_pairs():  # type: ignore[no-untyped-def]

    def pair(row: MetricsRow) -> tuple:  # type: ignore[type-arg]
        code = f"{row.error_stage}/{row.error_code}" if row.error_code else None
        return row.id, row.status, code

    return beam.Map(pair)


def test_run_writes_run_json_last_and_reconciles(sample: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    argv = ["--manifest", sample, "--output", str(out), "--model", "tiny-isnet"]
    assert main(argv) == 0
    summary = json.loads((out / "run.json").read_text())
    assert summary["counts"] == {"ok": 3, "skipped": 0, "failed": 2}
    assert summary["reconciled"] is True and summary["manifest_rows"] == 5
    assert summary["model"]["name"] == "tiny-isnet"
    assert summary["versions"]["torch"].startswith("2.13.0")
    leftovers = [p.name for p in out.rglob(".*") if p.name.endswith(".tmp")]
    assert leftovers == []


def test_bad_manifest_rows_fail_one_row_each(bad_rows: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["--manifest", bad_rows, "--output", str(out), "--model", "tiny-isnet"]) == 0
    rows = read_metrics(str(out)).to_pylist()
    codes = sorted((r["id"], r["status"], r["error_stage"], r["error_code"]) for r in rows)
    assert codes == [
        ("empty", "failed", "manifest", "missing_uri"),
        ("escape", "failed", "manifest", "unsafe_key"),
        ("good", "ok", None, None),
        ("same", "failed", "manifest", "duplicate_id"),
        ("same", "failed", "manifest", "duplicate_id"),
    ]
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["good.png"]
    assert json.loads((out / "run.json").read_text())["reconciled"] is True


def test_max_failure_rate_sets_the_exit_code(bad_rows: str, tmp_path: Path) -> None:
    argv = ["--manifest", bad_rows, "--output", str(tmp_path / "o"), "--model", "tiny-isnet"]
    assert main([*argv, "--max_failure_rate", "0.5"]) == 3  # 4 of 5 rows failed
    assert main([*argv, "--max_failure_rate", "0.8"]) == 0


def test_rerun_skips_current_rows_and_redoes_changed_ones(sample: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    argv = ["--manifest", sample, "--output", str(out), "--model", "tiny-isnet"]
    assert main(argv) == 0
    first = {p.name: p.read_bytes() for p in (out / "masks").rglob("*.png")}

    assert main(argv) == 0
    summary = json.loads((out / "run.json").read_text())
    assert summary["counts"] == {"ok": 0, "skipped": 3, "failed": 2}
    assert summary["inferred_images"] in (0, None)  # None: the counter never incremented
    assert {p.name: p.read_bytes() for p in (out / "masks").rglob("*.png")} == first

    changed = tmp_path / "images" / "b.png"
    changed.write_bytes(
        encode(oriented(pattern(40, 23, mode="RGB").rotate(180), 6), "PNG", exif_orientation=6)
    )
    assert main(argv) == 0
    rows = {r["id"]: r["status"] for r in read_metrics(str(out)).to_pylist()}
    assert rows == {
        "a": "skipped",
        "b": "ok",
        "nested/c": "skipped",
        "notes": "failed",
        "gone": "failed",
    }
    assert json.loads((out / "run.json").read_text())["inferred_images"] == 1

    assert main([*argv, "--force"]) == 0
    assert json.loads((out / "run.json").read_text())["counts"]["ok"] == 3


def test_a_missing_output_is_redone(sample: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    argv = ["--manifest", sample, "--output", str(out), "--model", "tiny-isnet"]
    assert main(argv) == 0
    (out / "cutouts" / "a.png").unlink()
    assert main(argv) == 0
    rows = {r["id"]: r["status"] for r in read_metrics(str(out)).to_pylist()}
    assert (rows["a"], rows["b"]) == ("ok", "skipped")
    assert (out / "cutouts" / "a.png").is_file()


def test_preflight_stops_a_manifest_without_uri_column(tmp_path: Path) -> None:
    manifest = _write_manifest(tmp_path / "m.csv", [{"path": "a.png"}])
    cfg = load_config(manifest=manifest, output=str(tmp_path / "out"), model="tiny-isnet")
    with pytest.raises(PreflightError, match=r"no `uri` column \(columns: path\)"):
        preflight(cfg)


def test_preflight_refuses_unknown_model_and_missing_gpu(sample: str, tmp_path: Path) -> None:
    cfg = load_config(manifest=sample, output=str(tmp_path / "out"), model="nope")
    with pytest.raises(PreflightError, match="unknown model 'nope'"):
        preflight(cfg)
    profile = tmp_path / "gpu.toml"
    profile.write_text('[model]\ndevice = "cuda"\n')
    cfg = load_config(str(profile), manifest=sample, output=str(tmp_path / "o"), model="tiny-isnet")
    with pytest.raises(PreflightError, match="no CUDA device"):
        preflight(cfg)
    preflight(cfg, local=False)  # a remote runner's workers have the GPU and check it on load


def test_the_torch_thread_count_does_not_follow_the_workers() -> None:
    # Issue 17: the count decides bfloat16 results, so it comes from the config alone (the
    # handler never sees the worker options): any number of workers gets the same one.
    assert model_handler(load_config())._threads == 1
    cfg = load_config(settings=["model.torch_threads=3"])
    assert model_handler(cfg)._threads == 3


def test_thread_count_and_resolved_dtype_are_in_the_resume_fingerprint() -> None:
    options = PipelineOptions([])
    digest = {
        s: resume_for(load_config(settings=[s]), options).settings
        for s in ("model.torch_threads=1", "model.torch_threads=2", "model.device=cpu")
    }
    assert digest["model.torch_threads=1"] == digest["model.device=cpu"]  # the default
    assert digest["model.torch_threads=1"] != digest["model.torch_threads=2"]
    auto = load_config(settings=["model.dtype=auto"])
    resolved = compute_dtype(auto, options)
    assert resolved in ("float32", "bfloat16")  # what this CPU computes "auto" in
    pinned = load_config(settings=[f"model.dtype={resolved}"])
    assert resume_for(auto, options).settings == resume_for(pinned, options).settings


def test_stage_times_and_batch_sizes_are_beam_metrics(sample: str, tmp_path: Path) -> None:
    argv = ["--manifest", sample, "--output", str(tmp_path / "out"), "--model", "tiny-isnet"]
    metrics = run(argv).metrics()

    def distribution(namespace: str, name: str) -> DistributionResult:
        query = metrics.query(MetricsFilter().with_namespace(namespace).with_name(name))
        [result] = query["distributions"]
        return result.committed

    for stage in ("fetch_ms", "decode_ms", "infer_ms", "encode_ms", "write_ms", "total_ms"):
        assert distribution("matteflow.stages", stage).count == 3, stage  # the 3 ok rows
    batches = distribution("matteflow.segment", "batch_images")
    assert batches.sum == 3 and batches.max <= 3


def test_preflight_refuses_a_missing_composite_background(sample: str, tmp_path: Path) -> None:
    cfg = load_config(
        manifest=sample,
        output=str(tmp_path / "out"),
        model="tiny-isnet",
        settings=["outputs.composite=true", f"outputs.background={tmp_path / 'nope.jpg'}"],
    )
    with pytest.raises(PreflightError, match=r"outputs.background .*nope\.jpg: no such image"):
        preflight(cfg)


def test_preflight_refuses_an_unwritable_output(sample: str, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where the output folder should be")
    cfg = load_config(manifest=sample, output=str(blocker / "out"), model="tiny-isnet")
    with pytest.raises(PreflightError, match="not writable"):
        preflight(cfg)


def test_cli_exit_code_for_a_bad_setup(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--manifest", str(tmp_path / "none.csv"), "--output", str(tmp_path / "o")]
    assert main([*argv, "--model", "tiny-isnet"]) == 2
    assert "cannot start" in capsys.readouterr().err


def test_run_help_lists_our_flags(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    assert all(flag in text for flag in ("--manifest", "--output", "--profile", "--model"))


def test_odd_sizes_and_per_row_outputs_through_the_cli(tmp_path: Path) -> None:
    # Tiny images, a 1:20 strip and its transpose, each framed on a canvas; one row asks for a
    # PSD and a cropped mask only, one has a bad setting.
    sizes = {"dot": (1, 1), "tiny": (7, 5), "strip": (400, 20), "tower": (20, 400)}
    rows = []
    for name, (w, h) in sizes.items():
        (tmp_path / f"{name}.png").write_bytes(encode(pattern(w, h), "PNG"))
        rows.append({"uri": f"{name}.png", "outputs": "", "framing": ""})
    rows[1].update(outputs="mask,psd", framing="crop")
    (tmp_path / "bad.png").write_bytes(encode(pattern(), "PNG"))
    rows.append({"uri": "bad.png", "outputs": "hologram", "framing": ""})
    manifest = _write_manifest(tmp_path / "m.csv", rows)
    out = tmp_path / "out"
    argv = ["--manifest", manifest, "--output", str(out), "--model", "tiny-isnet"]
    canvas = ["--set", "framing.mode=canvas", "--set", "framing.canvas_width=64"]
    assert main([*argv, *canvas, "--set", "framing.canvas_height=48"]) == 0

    rows_by_id = {r["id"]: r for r in read_metrics(str(out)).to_pylist()}
    assert {i: r["status"] for i, r in rows_by_id.items()} == {
        "dot": "ok",
        "tiny": "ok",
        "strip": "ok",
        "tower": "ok",
        "bad": "failed",
    }
    assert (rows_by_id["bad"]["error_stage"], rows_by_id["bad"]["error_code"]) == (
        "manifest",
        "bad_setting",
    )
    for name in ("dot", "strip", "tower"):
        row = rows_by_id[name]
        assert (row["width"], row["height"]) == sizes[name]
        assert (row["output_width"], row["output_height"]) == (64, 48)
        with Image.open(out / "cutouts" / f"{name}.png") as cutout:
            assert (cutout.mode, cutout.size) == ("RGBA", (64, 48))
    tiny = rows_by_id["tiny"]
    assert tiny["row_settings"] == [("outputs", "mask,psd"), ("framing", "crop")]
    assert tiny["cutout_uri"] is None and tiny["psd_uri"] == f"{out}/psd/tiny.psd"
    assert (out / "masks" / "tiny.png").exists() and not (out / "cutouts" / "tiny.png").exists()


def test_review_manifest_lists_flagged_rows_most_uncertain_first(
    sample: str, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    argv = ["--manifest", sample, "--output", str(out), "--model", "tiny-isnet"]
    assert main([*argv, "--set", "refine.review_threshold=0.0"]) == 0  # every ok row flagged
    rows = read_metrics(str(out)).to_pylist()
    # Ties (the tiny model is unsure everywhere) by id: the list does not depend on row order.
    ok = sorted(
        (r for r in rows if r["status"] == "ok"), key=lambda r: (-r["uncertainty"], r["id"])
    )
    assert all(r["needs_review"] and 0.0 <= r["uncertainty"] <= 1.0 for r in ok)
    with (out / "review" / "manifest.csv").open() as f:
        listed = list(csv.DictReader(f))
    assert [r["id"] for r in listed] == [r["id"] for r in ok]
    assert [float(r["uncertainty"]) for r in listed] == [round(r["uncertainty"], 4) for r in ok]
    assert json.loads((out / "run.json").read_text())["needs_review"] == len(ok)

    assert main([*argv, "--set", "refine.review_threshold=1.0", "--force"]) == 0
    flagged = [r for r in read_metrics(str(out)).to_pylist() if r["needs_review"]]
    with (out / "review" / "manifest.csv").open() as f:
        assert len(list(csv.DictReader(f))) == len(flagged)  # the last run's list replaces it
