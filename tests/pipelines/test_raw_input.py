"""Acceptance: a camera RAW through the real job (tiny-isnet, in-process runner) gives an upright
cutout at the RAW's size, 16 bits kept, whose subject interior matches LibRaw's own sRGB
rendering of the file (mean CIEDE2000 < 2); a broken RAW is a failed row, not a crash. The same
run writes the XCF and a composite with a contact shadow, as the README's commands do."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import imagecodecs
import numpy as np
import pytest
import rawpy
from skimage.color import deltaE_ciede2000, rgb2lab

from matteflow.pipelines.remove_background import main
from matteflow.transforms.metrics import read_metrics
from tests.images import colour_subject, colour_subject_interior
from tests.raw_sample import dng

SCENE = np.asarray(colour_subject())  # 96 x 80
ORIENTATION = 6  # stored turned left: the upright cutout is 80 x 96
_PNG_BIT_DEPTH = 24


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    """(output prefix, the RAW's bytes) of one run over a good and a broken RAW."""
    root = tmp_path_factory.mktemp("raw")
    data = dng(SCENE, ORIENTATION)
    (root / "shot.dng").write_bytes(data)
    (root / "broken.nef").write_bytes(data[:3000])
    manifest = root / "manifest.csv"
    with manifest.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["uri"])
        writer.writeheader()
        writer.writerows({"uri": str(root / name)} for name in ("shot.dng", "broken.nef"))
    out = root / "out"
    # Decontamination recolours soft pixels on purpose (the tiny model's alpha is soft
    # everywhere); this run checks colour alone.
    argv = ["--manifest", str(manifest), "--output", str(out), "--model", "tiny-isnet"]
    layered = ["outputs.xcf=true", "outputs.composite=true", "outputs.shadow=contact"]
    sets = [arg for setting in layered for arg in ("--set", setting)]
    assert main([*argv, "--set", "refine.decontaminate=false", *sets]) == 0
    return out, data


def test_raw_cutout_is_upright_sixteen_bit_and_matches_libraw(run: tuple[Path, bytes]) -> None:
    out, data = run
    png = (out / "cutouts" / "shot.png").read_bytes()
    assert png[_PNG_BIT_DEPTH] == 16
    cutout = imagecodecs.png_decode(png)
    with rawpy.imread(io.BytesIO(data)) as raw:  # LibRaw's own sRGB rendering, turned by it
        reference = raw.postprocess(
            use_camera_wb=True, no_auto_bright=True, gamma=(2.4, 12.92), output_bps=16
        )
    assert cutout.shape == (96, 80, 4) and reference.shape == (96, 80, 3)
    interior = np.rot90(colour_subject_interior(), -1)
    lab = [rgb2lab(x[interior][:, :3] / 65535.0) for x in (cutout, reference)]
    delta_e = float(np.mean(deltaE_ciede2000(*lab)))
    assert delta_e < 2.0, f"mean CIEDE2000 {delta_e:.3f} over the subject's interior"


def test_broken_raw_is_a_failed_row(run: tuple[Path, bytes]) -> None:
    rows = {r["id"]: r for r in read_metrics(str(run[0])).to_pylist()}
    assert rows["shot"]["status"] == "ok"
    broken = rows["broken"]
    assert (broken["status"], broken["error_stage"], broken["error_code"]) == (
        "failed",
        "decode",
        "corrupt",
    )


def test_the_run_writes_the_xcf_and_the_shadowed_composite(run: tuple[Path, bytes]) -> None:
    out = run[0]
    rows = {r["id"]: r for r in read_metrics(str(out)).to_pylist()}
    assert rows["shot"]["xcf_uri"] == str(out / "xcf" / "shot.xcf")
    assert rows["shot"]["composite_uri"] == str(out / "composites" / "shot.jpg")
    assert (out / "xcf" / "shot.xcf").read_bytes().startswith(b"gimp xcf v008\0")
    assert rows["broken"]["xcf_uri"] is None
