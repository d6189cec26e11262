"""What a run leaves under its output prefix after a failure, a copy, odd keys, hostile state
files, a huge EXIF or a huge canvas (issue 17, items 7-11 and 13)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
import pytest
from PIL import ExifTags, Image

from matteflow.pipelines.remove_background import main
from matteflow.transforms.decode import MAX_EXIF_BYTES
from matteflow.transforms.metrics import read_metrics
from tests.images import encode, pattern

COUNT = 12


@pytest.fixture
def images(tmp_path: Path) -> Path:
    """COUNT distinct small PNGs and a manifest `m.csv` listing them (ids 00 .. 11)."""
    folder = tmp_path / "images"
    folder.mkdir()
    rows = ["id,uri"]
    for n in range(COUNT):
        pixels = np.array(pattern(40, 30))
        pixels[n, :, 1] = 255 - n
        (folder / f"{n:02d}.png").write_bytes(encode(Image.fromarray(pixels), "PNG"))
        rows.append(f"{n:02d},{n:02d}.png")
    (folder / "m.csv").write_text("\n".join(rows) + "\n")
    return folder


def _argv(manifest: Path, out: Path, *extra: str) -> list[str]:
    return ["--manifest", str(manifest), "--output", str(out), "--model", "tiny-isnet", *extra]


def _statuses(out: Path) -> dict[str, str]:
    return {r["id"]: r["status"] for r in read_metrics(str(out)).to_pylist()}


def _assert_metrics_read_as_a_dataset(out: Path, rows: int) -> None:
    assert ds.dataset(str(out / "metrics"), format="parquet").to_table().num_rows == rows
    assert sorted(p.name for p in (out / "metrics").iterdir()) == sorted(
        p.name for p in (out / "metrics").glob("part-*.parquet")
    )


# Item 7: a full disk while metrics are written.


@pytest.fixture
def tiny_metrics_disk(tmp_path: Path) -> Iterator[Path]:
    """out/metrics on a 4 KiB tmpfs (root only: skipped elsewhere); yields out."""
    out = tmp_path / "out"
    (out / "metrics").mkdir(parents=True)
    mount = ["mount", "-t", "tmpfs", "-o", "size=4k", "tmpfs", str(out / "metrics")]
    try:
        mounted = subprocess.run(mount, capture_output=True, check=False).returncode == 0
    except OSError:
        mounted = False
    if not mounted:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield out
    finally:
        subprocess.run(["umount", str(out / "metrics")], check=True)


def test_a_full_disk_while_metrics_are_written_then_a_rerun(
    images: Path, tiny_metrics_disk: Path
) -> None:
    """The real thing: ENOSPC in Beam's Parquet sink. The failed run clears what the sink left;
    the rerun, with room, leaves a dataset."""
    out = tiny_metrics_disk
    failed = subprocess.run(  # its own process: Beam leaks the failed sink's open files
        [
            sys.executable,
            "-m",
            "matteflow.pipelines.remove_background",
            *_argv(images / "m.csv", out),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert failed.returncode == 1 and "No space left on device" in failed.stderr
    _assert_metrics_read_as_a_dataset(out, 0)  # the failed run removed its sink's leftovers
    subprocess.run(["mount", "-o", "remount,size=10m", str(out / "metrics")], check=True)
    assert main(_argv(images / "m.csv", out)) == 0
    assert not list((out / "metrics").glob("beam-temp-*"))
    _assert_metrics_read_as_a_dataset(out, COUNT)


def test_a_rerun_clears_what_a_dead_metrics_write_left(images: Path, tmp_path: Path) -> None:
    """What a run killed while Beam wrote the metrics leaves (and, where no tmpfs can be
    mounted, a stand-in for the above): the files ENOSPC left on main, an empty and a truncated
    Parquet part in a beam-temp folder, planted."""
    out = tmp_path / "out"
    assert main(_argv(images / "m.csv", out)) == 0
    temp = out / "metrics" / "beam-temp-part-305926ceee6311f1b3e702fc00000001"
    temp.mkdir()
    (temp / "0d5f2905-92c2-48bb-b522-3b02e5d2946e.part.parquet").write_bytes(b"")
    some_part = next((out / "metrics").glob("part-*.parquet")).read_bytes()
    (temp / "39f118ae-c302-41ff-9147-2b90d5f3e540.part.parquet").write_bytes(some_part[:100])
    with pytest.raises(Exception, match="Parquet"):
        ds.dataset(str(out / "metrics"), format="parquet").to_table()
    assert main(_argv(images / "m.csv", out)) == 0
    assert not temp.exists()
    _assert_metrics_read_as_a_dataset(out, COUNT)


# Item 8: a copied output folder; the same folder by another path.


def test_a_copied_output_folder_regenerates_its_deleted_mask(images: Path, tmp_path: Path) -> None:
    out, copy = tmp_path / "out", tmp_path / "copy"
    assert main(_argv(images / "m.csv", out)) == 0
    shutil.copytree(out, copy)
    (copy / "masks" / "03.png").unlink()
    assert main(_argv(images / "m.csv", copy)) == 0
    statuses = _statuses(copy)
    assert statuses.pop("03") == "ok" and set(statuses.values()) == {"skipped"}
    assert (copy / "masks" / "03.png").read_bytes() == (out / "masks" / "03.png").read_bytes()
    rows = {r["id"]: r for r in read_metrics(str(copy)).to_pylist()}
    assert rows["05"]["mask_uri"] == f"{copy}/masks/05.png"  # not the original folder


def test_the_same_folder_by_another_path_skips_every_row(
    images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(_argv(images / "m.csv", Path("out"))) == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(_argv(images / "m.csv", tmp_path / "out")) == 0
    assert set(_statuses(tmp_path / "out").values()) == {"skipped"}


# Item 9: state files that are not records.


@pytest.mark.parametrize("text", ["null", "[]", '"x"', "\x00garbage"])
def test_a_hostile_state_file_redoes_the_row(images: Path, tmp_path: Path, text: str) -> None:
    out = tmp_path / "out"
    assert main(_argv(images / "m.csv", out)) == 0
    (out / "state" / "04.json").write_text(text)
    assert main(_argv(images / "m.csv", out)) == 0
    statuses = _statuses(out)
    assert statuses.pop("04") == "ok" and set(statuses.values()) == {"skipped"}
    assert json.loads((out / "state" / "04.json").read_text())["outputs"]["mask_uri"]


# Item 10: keys whose outputs would collide.


@pytest.mark.parametrize(("key", "clash"), [("a", "a.png/b"), ("s", "s.json/x")])
def test_colliding_keys_fail_one_row_and_write_nothing_for_it(
    images: Path, tmp_path: Path, key: str, clash: str
) -> None:
    manifest = images / "keys.csv"
    manifest.write_text(f"id,uri\n{key},00.png\n{clash},01.png\n")
    out = tmp_path / "out"
    for status in ("ok", "skipped"):  # the same on every run
        assert main(_argv(manifest, out)) == 0
        rows = {r["id"]: r for r in read_metrics(str(out)).to_pylist()}
        assert rows[key]["status"] == status
        assert (rows[clash]["status"], rows[clash]["error_code"]) == ("failed", "unsafe_key")
    clash_folder = clash.split("/")[0]
    for kind in ("cutouts", "masks", "state"):
        assert not (out / kind / clash_folder).is_dir(), f"{kind}/{clash_folder} was written"


# Item 11: a 5 MB EXIF.


def _huge_exif_png(path: Path) -> int:
    """A 40 x 30 PNG whose EXIF holds a 5 MB user comment beside a copyright; its EXIF size."""
    exif = Image.Exif()
    exif[ExifTags.Base.Copyright] = "(c) Shop"
    exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.UserComment] = b"ASCII\0\0\0" + b"x" * (5 << 20)
    block = exif.tobytes()
    path.write_bytes(encode(pattern(40, 30), "PNG", exif=block))
    return len(block)


def test_a_huge_exif_is_capped_and_a_jpeg_composite_still_works(
    tmp_path: Path,
) -> None:
    size = _huge_exif_png(tmp_path / "big.png")
    assert size > 5_000_000
    (tmp_path / "m.csv").write_text('id,uri,outputs\nbig,big.png,"cutout,mask,composite"\n')
    out = tmp_path / "out"
    assert main(_argv(tmp_path / "m.csv", out)) == 0
    (row,) = read_metrics(str(out)).to_pylist()
    assert (row["status"], row["error_code"]) == ("ok", None)
    assert "decode/exif_too_large" in row["warnings"]
    assert row["output_bytes"] < 3 * MAX_EXIF_BYTES  # three files, none carrying 5 MB
    for uri in (row["cutout_uri"], row["composite_uri"]):
        with Image.open(uri) as written:
            kept = written.getexif()
        assert kept[ExifTags.Base.Copyright] == "(c) Shop"  # the small tags stay
        assert ExifTags.Base.UserComment not in kept.get_ifd(ExifTags.IFD.Exif)


# Item 13: a per-row canvas far larger than its source.


def test_a_huge_per_row_canvas_fails_the_row_before_anything_is_written(
    images: Path, tmp_path: Path
) -> None:
    manifest = images / "canvas.csv"
    manifest.write_text(
        "id,uri,framing,canvas\nhuge,00.png,canvas,12000x12000\nfine,01.png,canvas,400x300\n"
    )
    out = tmp_path / "out"
    assert main(_argv(manifest, out)) == 0
    rows = {r["id"]: r for r in read_metrics(str(out)).to_pylist()}
    assert (rows["huge"]["status"], rows["huge"]["error_code"]) == ("failed", "bad_setting")
    assert "over the 100 MP limit" in rows["huge"]["error_message"]
    assert rows["fine"]["status"] == "ok" and rows["fine"]["output_width"] == 400
    assert not list(out.glob("*/huge.*"))
