"""A job killed (SIGKILL) while it writes leaves no partial file at any final name, and a rerun
completes it with outputs byte-identical to an uninterrupted run."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from matteflow.pipelines.lock import LOCK_NAME
from matteflow.pipelines.remove_background import main
from tests.images import encode, pattern

pytestmark = pytest.mark.slow

COUNT = 40
KINDS = {"cutouts": ".png", "masks": ".png", "state": ".json"}


def _corpus(folder: Path) -> Path:
    """COUNT distinct 96 x 64 PNGs and their manifest."""
    folder.mkdir()
    manifest = folder / "manifest.csv"
    with manifest.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "uri"])
        for n in range(COUNT):
            pixels = np.array(pattern(96, 64))
            pixels[n % 64, :, 2] = 255 - n  # a distinct line per image
            (folder / f"{n:03d}.png").write_bytes(encode(Image.fromarray(pixels), "PNG"))
            writer.writerow([f"img-{n:03d}", f"{n:03d}.png"])
    return manifest


def _argv(manifest: Path, out: Path) -> list[str]:
    return ["--manifest", str(manifest), "--output", str(out), "--model", "tiny-isnet"]


def _final_files(out: Path) -> dict[str, bytes]:
    """Files at final names (not hidden) under the output kinds, by path relative to out."""
    return {
        str(p.relative_to(out)): p.read_bytes()
        for kind in KINDS
        if (out / kind).is_dir()
        for p in (out / kind).iterdir()
        if not p.name.startswith(".")
    }


def _kill_while_writing(manifest: Path, out: Path, log: Path) -> None:
    """Start the job in its own process; SIGKILL it the moment a temporary file shows up under
    out (a write in progress), or else once some outputs are final. Asserts it was cut short."""
    with log.open("wb") as sink:
        job = subprocess.Popen(
            [str(Path(sys.executable).with_name("matteflow")), "run", *_argv(manifest, out)],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        while job.poll() is None:
            names = [p.name for kind in KINDS for p in _scan(out / kind)]
            if any(n.startswith(".") for n in names) or len(names) >= COUNT // 2:
                job.send_signal(signal.SIGKILL)
                break
    finally:
        job.kill()
        job.wait(60)
    assert job.returncode == -signal.SIGKILL, log.read_text()[-3000:]
    assert not (out / "run.json").exists()


def _scan(folder: Path) -> list[os.DirEntry[str]]:
    try:
        return list(os.scandir(folder))
    except FileNotFoundError:
        return []


def test_a_killed_run_leaves_no_partial_output_and_a_rerun_completes_it(tmp_path: Path) -> None:
    manifest = _corpus(tmp_path / "images")
    clean, crashed = tmp_path / "clean", tmp_path / "crashed"
    assert main(_argv(manifest, clean)) == 0
    expected = _final_files(clean)
    assert len(expected) == COUNT * len(KINDS)

    _kill_while_writing(manifest, crashed, tmp_path / "job.log")
    partial = _final_files(crashed)
    assert len(partial) < len(expected)  # the kill interrupted the job
    for name, data in partial.items():  # whatever is at a final name is whole
        if name.startswith("state/"):
            assert json.loads(data)["outputs"]
        else:
            assert data == expected[name], name

    assert (crashed / LOCK_NAME).exists()  # the killed run's lease: stale, its pid is gone
    assert main(_argv(manifest, crashed)) == 0
    assert not (crashed / LOCK_NAME).exists()
    summary = json.loads((crashed / "run.json").read_text())
    assert summary["counts"]["failed"] == 0 and summary["reconciled"] is True
    assert summary["counts"]["skipped"] == sum(1 for n in partial if n.startswith("state/"))
    after = _final_files(crashed)
    assert after.keys() == expected.keys()
    for name, data in after.items():  # state records too: they are relative to the prefix
        assert data == expected[name], name
    leftovers = [p for kind in KINDS for p in (crashed / kind).iterdir() if p.name.startswith(".")]
    assert all(p.name.endswith(".tmp") for p in leftovers)  # hidden temporaries, never read
