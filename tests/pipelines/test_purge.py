"""`matteflow purge`: a dry run by default, only matteflow's own objects, --keep, --older-than,
never during a run (issue 17, privacy controls)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from matteflow.pipelines.cli import app
from matteflow.pipelines.lock import acquire
from matteflow.pipelines.purge import PurgeError, parse_age, plan
from matteflow.pipelines.remove_background import main as run_main
from tests.images import encode

DAY = 86400.0


@pytest.fixture
def out(tmp_path: Path) -> Path:
    """A run's output (2 rows, composites on) plus a file that is not matteflow's."""
    for name in ("a", "b"):
        (tmp_path / f"{name}.png").write_bytes(encode(Image.new("RGB", (12, 9), "red"), "PNG"))
    (tmp_path / "m.csv").write_text("uri\na.png\nb.png\n")
    out = tmp_path / "out"
    argv = ["--manifest", str(tmp_path / "m.csv"), "--output", str(out), "--model", "tiny-isnet"]
    assert run_main([*argv, "--set", "outputs.composite=true"]) == 0
    (out / "notes.txt").write_text("the operator's own file")
    return out


def _files(out: Path) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())


def _purge(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["purge", *args])
    return result.exit_code, result.output


def test_without_yes_nothing_is_deleted(out: Path) -> None:
    before = _files(out)
    code, text = _purge(str(out))
    assert code == 0 and "nothing deleted (dry run)" in text
    assert "delete cutouts: 2 objects" in text and "delete composites: 2 objects" in text
    assert _files(out) == before


def test_yes_deletes_every_matteflow_object_and_nothing_else(out: Path) -> None:
    code, text = _purge(str(out), "--yes")
    assert code == 0, text
    assert _files(out) == ["notes.txt"]
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]  # emptied folders gone


def test_keep_metrics(out: Path) -> None:
    code, _ = _purge(str(out), "--keep", "metrics", "--keep", "run.json", "--yes")
    assert code == 0
    kept = _files(out)
    assert "run.json" in kept and "notes.txt" in kept
    assert {name.split("/")[0] for name in kept} == {"metrics", "run.json", "notes.txt"}


def test_older_than_deletes_only_old_objects(out: Path) -> None:
    old = time.time() - 40 * DAY
    os.utime(out / "cutouts" / "a.png", (old, old))
    os.utime(out / "masks" / "a.png", (old, old))
    code, _ = _purge(str(out), "--older-than", "30d", "--yes")
    assert code == 0
    assert not (out / "cutouts" / "a.png").exists() and not (out / "masks" / "a.png").exists()
    assert (out / "cutouts" / "b.png").exists() and (out / "run.json").exists()


def test_refusals_exit_2(out: Path, tmp_path: Path) -> None:
    assert _purge(str(tmp_path / "elsewhere"))[0] == 2  # not an output
    assert _purge(str(out), "--keep", "everything")[0] == 2
    assert _purge(str(out), "--older-than", "a month")[0] == 2
    holder = acquire(str(out))  # a run in progress
    code, text = _purge(str(out), "--yes")
    assert code == 2 and f"pid {holder.pid}" in text
    assert "cutouts/a.png" in _files(out)


def test_parse_age() -> None:
    assert parse_age("30d") == 30 * DAY and parse_age("1.5h") == 5400 and parse_age("90m") == 5400
    with pytest.raises(PurgeError):
        parse_age("30")


def test_plan_lists_every_matteflow_object_and_fresh_ones_are_not_old(out: Path) -> None:
    everything = plan(str(out))
    assert len(everything.doomed) == len(_files(out)) - 1  # all but notes.txt
    assert plan(str(out), older_than_s=DAY).doomed == ()
