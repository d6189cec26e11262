"""Every source a row names goes through the run's one Reader (issue 17, items 4 and 5): a
per-row background image and ground truth obey decode.max_bytes and decode.max_pixels, a
relative background resolves against the manifest's folder (not the working directory), and
decoding never turns off Pillow's decompression-bomb check for the whole process."""

from __future__ import annotations

import csv
from typing import Any

import numpy as np
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from matteflow.pipelines.remove_background import main
from matteflow.transforms.metrics import read_metrics
from tests.images import encode, pattern

MAX_BYTES = 4000  # the image and the small files fit; the padded ones do not
MAX_PIXELS = 2000  # the 17 x 11 image fits; a 60 x 60 ground truth does not
# Pillow's own default (Image.MAX_IMAGE_PIXELS as shipped): 1 GiB of 24-bit pixels / 4.
PILLOW_BOMB_LIMIT = 1024 * 1024 * 1024 // 4 // 3


def _padded(img: Image.Image) -> bytes:
    """img as a PNG over MAX_BYTES (a long text chunk), its pixels unchanged."""
    info = PngInfo()
    info.add_text("Comment", "x" * MAX_BYTES)
    data = encode(img, "PNG", pnginfo=info)
    assert len(data) > MAX_BYTES
    return data


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """One run (tiny model) from a folder other than the manifest's: metrics rows by id."""
    root = tmp_path_factory.mktemp("reader")
    data, elsewhere = root / "data", root / "elsewhere"
    data.mkdir()
    elsewhere.mkdir()
    image = encode(pattern(17, 11), "PNG")
    assert len(image) < MAX_BYTES
    (data / "a.png").write_bytes(image)
    (data / "bg-small.png").write_bytes(encode(Image.new("RGB", (8, 8), (0, 90, 200)), "PNG"))
    (data / "bg-big.png").write_bytes(_padded(Image.new("RGB", (8, 8), (0, 90, 200))))
    (data / "gt-ok.png").write_bytes(encode(Image.new("L", (17, 11), 255), "PNG"))
    (data / "gt-big.png").write_bytes(_padded(Image.new("L", (17, 11), 255)))
    (data / "gt-many-pixels.png").write_bytes(encode(Image.new("L", (60, 60), 255), "PNG"))
    columns = ["id", "uri", "output_key", "ground_truth_uri", "outputs", "background"]
    table = [
        ["bg-relative", "a.png", "", "", "composite", "bg-small.png"],
        ["bg-too-large", "a.png", "", "", "composite", str(data / "bg-big.png")],
        ["gt-ok", "a.png", "", "gt-ok.png", "", ""],
        ["gt-too-large", "a.png", "", "gt-big.png", "", ""],
        ["gt-too-many-pixels", "a.png", "", "gt-many-pixels.png", "", ""],
    ]
    with (data / "manifest.csv").open("w", newline="") as f:
        csv.writer(f).writerows([columns, *table])
    out = root / "out"
    argv = ["--manifest", str(data / "manifest.csv"), "--output", str(out)]
    limits = [f"decode.max_bytes={MAX_BYTES}", f"decode.max_pixels={MAX_PIXELS}"]
    argv += ["--model", "tiny-isnet", *[a for s in limits for a in ("--set", s)]]
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(elsewhere)  # relative paths must not resolve here
        assert main(argv) == 0
    return {r["id"]: r for r in read_metrics(str(out)).to_pylist()}


def _outcome(row: dict[str, Any]) -> str:
    return "ok" if row["status"] == "ok" else f"{row['error_stage']}/{row['error_code']}"


def test_a_relative_background_resolves_against_the_manifest_folder(
    rows: dict[str, dict[str, Any]],
) -> None:
    row = rows["bg-relative"]
    assert _outcome(row) == "ok", row["error_message"]
    composite = np.asarray(Image.open(row["composite_uri"]))
    assert composite.shape == (11, 17, 3)


def test_a_background_over_max_bytes_fails_the_row(rows: dict[str, dict[str, Any]]) -> None:
    assert _outcome(rows["bg-too-large"]) == "fetch/too_large"


def test_ground_truth_within_the_limits_is_scored(rows: dict[str, dict[str, Any]]) -> None:
    assert _outcome(rows["gt-ok"]) == "ok" and rows["gt-ok"]["iou"] is not None


def test_ground_truth_over_max_bytes_fails_the_row(rows: dict[str, dict[str, Any]]) -> None:
    assert _outcome(rows["gt-too-large"]) == "score/too_large"


def test_ground_truth_over_max_pixels_fails_before_decoding(
    rows: dict[str, dict[str, Any]],
) -> None:
    row = rows["gt-too-many-pixels"]
    assert _outcome(row) == "score/too_many_pixels"
    assert "60x60" in row["error_message"]


def test_decoding_keeps_pillows_bomb_check(rows: dict[str, dict[str, Any]]) -> None:
    # The run above decoded in this process; Pillow's global limit is still its default.
    assert Image.MAX_IMAGE_PIXELS == PILLOW_BOMB_LIMIT
