"""The strict `matteflow run` command line: typos exit 2 with a suggestion, both flag spellings
work, --manifest takes an image, a folder or an expanded glob, --dry-run runs nothing, and
Ctrl-C / SIGTERM stop a run cleanly so that a rerun completes it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from matteflow.pipelines.cli import app
from matteflow.pipelines.config import ConfigError, load_config
from matteflow.pipelines.launcher import UsageError, check_args, check_runner, image_manifest
from tests.conftest import REPO
from tests.images import encode, pattern

TINY = ["--model", "tiny-isnet", "--set", "refine.decontaminate=false"]


@pytest.fixture
def images(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    (folder / "more").mkdir(parents=True)
    for name in ("a", "b", "more/c"):
        (folder / f"{name}.png").write_bytes(encode(pattern(19, 13), "PNG"))
    (folder / "notes.txt").write_text("not an image")
    return folder


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["run", *args])
    return result.exit_code, result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--modle", "u2net"], "unknown flag --modle; did you mean --model?"),
        (["--max_failure_rat", "0.1"], "did you mean --max_failure_rate?"),
        (["--direct-num-workerz=2"], "did you mean --direct_num_workers?"),
        (["--runner=Nope"], "--runner Nope: unknown runner; known: "),
        (["--runner", "Dataflow-Runner"], "did you mean DataflowRunner?"),
        (["--experiments"], "--experiments needs a value"),
    ],
)
def test_mistakes_exit_2_with_a_suggestion(tmp_path: Path, args: list[str], message: str) -> None:
    code, output = _run("--manifest", "m.csv", "--output", str(tmp_path / "out"), *args)
    assert code == 2
    assert message in output
    assert not (tmp_path / "out").exists()


def test_both_spellings_and_beam_options_pass_through() -> None:
    checked = check_args(
        ["--direct-num-workers=2", "--direct_running_mode", "multi_threading", "--force", "true"]
    )
    assert checked.beam_args == (
        "--direct_num_workers=2",
        "--direct_running_mode",
        "multi_threading",
        "--force=true",
    )
    assert check_args(["stray"]).extra_inputs == ("stray",)
    assert check_runner("fnapi") == "fnapi"
    assert check_runner("my.package.MyRunner") == "my.package.MyRunner"
    code, output = _run("stray", "--output", "out")
    assert code == 2 and "unexpected argument 'stray'" in output


def test_version_and_help() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("matteflow ")
    code, text = _run("--help")
    assert code == 0
    for needed in ("Required", "Examples", "Exit codes", "--streaming", "--dry-run", "130"):
        assert needed in text, needed


def test_manifest_as_images_a_folder_or_an_expanded_glob(images: Path, tmp_path: Path) -> None:
    out = str(tmp_path / "listing")
    one = image_manifest([str(images / "a.png")], out)
    assert Path(one).read_text().splitlines() == ["uri", str(images / "a.png")]
    folder = Path(image_manifest([str(images)], out)).read_text().splitlines()
    assert folder == ["uri", *(str(images / n) for n in ("a.png", "b.png", "more/c.png"))]
    expanded = [str(images / "a.png"), str(images / "b.png")]
    assert Path(image_manifest(expanded, out)).read_text().splitlines()[1:] == expanded
    assert image_manifest(["m.csv"], out) == "m.csv"
    assert image_manifest(["gs://b/**.jpg"], out) == "gs://b/**.jpg"
    with pytest.raises(UsageError, match="not a manifest"):
        image_manifest([str(images / "notes.txt")], out)


@pytest.mark.parametrize("given", ["folder", "expanded glob"])
def test_a_folder_or_an_expanded_glob_runs(images: Path, tmp_path: Path, given: str) -> None:
    out = tmp_path / "out"
    files = [str(images / n) for n in ("a.png", "b.png", "more/c.png")]
    inputs = [str(images)] if given == "folder" else files  # as the shell passes photos/**.png
    code, output = _run("--manifest", *inputs, "--output", str(out), *TINY)
    assert code == 0, output
    summary = json.loads((out / "run.json").read_text())
    assert summary["counts"] == {"ok": 3, "skipped": 0, "failed": 0}
    assert "model: tiny-isnet, licence class: permissive" in output


def test_dry_run_counts_checks_and_writes_nothing(images: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"uri\n{images / 'a.png'}\n{images / 'b.png'}\n{images / 'gone.png'}\n")
    out = tmp_path / "out"
    code, output = _run("--manifest", str(manifest), "--output", str(out), "--dry-run", *TINY)
    assert code == 0, output
    assert "manifest: 3 rows; sources of the first 3 checked, 1 would fail" in output
    assert "gone.png: not_found" in output
    assert "estimate on this machine" in output
    assert list(out.iterdir()) == []  # the preflight's probe was removed; nothing else written


def _start(manifest: Path, out: Path) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "matteflow", "run", "--manifest", str(manifest)]
    return subprocess.Popen(
        [*command, "--output", str(out), *TINY, "--progress-every", "0.5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a shell gives a foreground job
    )


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupted_run_exits_cleanly_and_a_rerun_completes_it(
    tmp_path: Path, sig: signal.Signals, code: int
) -> None:
    images = tmp_path / "images"
    images.mkdir()
    rows = 60
    for i in range(rows):
        (images / f"{i:03d}.png").write_bytes(encode(pattern(400, 300 + i), "PNG"))
    manifest = tmp_path / "m.csv"
    manifest.write_text("uri\n" + "".join(f"images/{i:03d}.png\n" for i in range(rows)))
    out = tmp_path / "out"
    job = _start(manifest, out)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(out.glob("cutouts/*.png"))) < 3:
        assert job.poll() is None, job.communicate()
        time.sleep(0.1)
    os.kill(job.pid, sig)
    stdout, stderr = job.communicate(timeout=30)  # no hang
    assert job.returncode == code, stderr
    assert "Traceback" not in stderr
    assert f"/{rows} rows (" in stdout  # plain progress lines: stdout is not a terminal
    assert "run the same command again" in stderr
    assert not (out / "run.json").exists()
    done = sorted(out.glob("cutouts/*.png"))
    assert 0 < len(done) < rows  # stopped part way
    for path in done:  # every file at a final name is whole
        with Image.open(path) as img:
            img.load()
    rerun = _start(manifest, out)
    _, stderr = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, stderr
    counts = json.loads((out / "run.json").read_text())["counts"]
    assert counts["ok"] + counts["skipped"] == rows
    assert counts["skipped"] >= len(done) - 4  # rows in flight at the signal are redone


def test_a_profiles_beam_options_are_checked_too() -> None:
    with pytest.raises(ConfigError, match=r"--runer is not a Beam pipeline option; did you mean"):
        load_config(settings=['beam.args=["--runer=DataflowRunner"]'])
    for profile in ("dataflow-gpu", "flink", "spark"):
        assert load_config(str(REPO / "configs" / f"{profile}.toml")).beam.args


def test_eval_is_as_strict_and_lists_its_flags(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["eval", "--help"])
    assert result.exit_code == 0
    for flag in ("--data", "--models", "--slice-by", "--replace", "--set", "Exit codes"):
        assert flag in result.output, flag
    args = ["eval", "--data", "x", "--output", str(tmp_path / "o"), "--modles", "a,b"]
    typo = CliRunner().invoke(app, args)
    assert typo.exit_code == 2 and "did you mean --models?" in typo.output
