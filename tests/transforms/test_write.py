"""WriteOutputs: atomic writes, PNG round trips, unsafe keys and the ok metrics row."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamPipeline  # not collected
from apache_beam.testing.util import assert_that, equal_to
from PIL import Image

from matteflow.transforms import write
from matteflow.transforms.encode import Metadata, encode
from matteflow.transforms.framing import FramingSettings
from matteflow.transforms.metrics import SCHEMA, metrics_row
from matteflow.transforms.resume import Resume
from matteflow.transforms.settings import OutputSettings
from matteflow.transforms.types import DecodedImage, Failed, ImageTask, Matte, Timings, Written
from matteflow.transforms.write import WriteOutputs, _WriteFn, quantise_alpha
from tests.images import pattern

NO_FRAMING = FramingSettings()
UNSAFE_KEYS = ["../x", "a/../../x", "/abs", "gs://b/x", "a\x00b", "a\\b", "tab\tkey", ""]


def _matte(key: str = "shop/x", width: int = 17, height: int = 11) -> Matte:
    """A matte over the test pattern whose alpha is a diagonal ramp with values off the 1/255
    grid, so rounding to 8 bits is exercised."""
    rgb = np.array(pattern(width, height))
    y, x = np.mgrid[:height, :width]
    alpha = ((x + 2 * y) / (width + 2 * height)).astype(np.float32)
    image = DecodedImage(
        ImageTask("x", "mem://x.png", key, None, (("shop", "s"),)),
        rgb,
        "PNG",
        orientation=6,
        timings=Timings(decode_ms=2.0),
    )
    return Matte(
        image,
        alpha,
        "tiny-isnet",
        "0" * 64,
        "cpu",
        "float32",
        2,
        timings=Timings(decode_ms=2.0, infer_ms=3.0),
    )


def _files(root: Path) -> list[str]:
    """Every file under root (hidden ones included), relative, sorted."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def _png(path: Path) -> Image.Image:
    img = Image.open(BytesIO(path.read_bytes()))
    img.load()
    return img


def test_all_names_exist() -> None:
    assert all(hasattr(write, name) for name in write.__all__)


# --- plain functions --------------------------------------------------------------------


def test_quantise_alpha_rounds_and_clips() -> None:
    alpha = np.array([0.0, 1.0, 0.5, 0.002, 0.998, -0.2, 1.3, 10 / 255], np.float32)
    # 127.5 rounds half to even (128); 0.51 -> 1; 254.49 -> 254; outside [0, 1] clips.
    expected = np.array([0, 255, 128, 1, 254, 0, 255, 10], np.uint8)
    assert np.array_equal(quantise_alpha(alpha, np.uint8), expected)
    assert quantise_alpha(alpha, np.uint8).dtype == np.uint8
    wide = quantise_alpha(alpha, np.uint16)
    assert wide.dtype == np.uint16 and list(wide[:3]) == [0, 65535, 32768]


@pytest.mark.parametrize(
    "pixels",
    [
        np.arange(11 * 17, dtype=np.uint8).reshape(11, 17),
        np.dstack([np.array(pattern()), np.arange(11 * 17, dtype=np.uint8).reshape(11, 17)]),
    ],
    ids=["grey", "rgba"],
)
def test_encode_png_round_trips(pixels: np.ndarray) -> None:
    img = Image.open(BytesIO(encode(pixels, "png", Metadata(), compress_level=1)))
    assert img.format == "PNG"
    assert img.mode == ("L" if pixels.ndim == 2 else "RGBA")
    assert np.array_equal(np.asarray(img), pixels)


# --- the DoFn ---------------------------------------------------------------------------


def test_dofn_writes_cutout_and_mask_and_yields_the_ok_row(tmp_path: Path) -> None:
    out = tmp_path / "out"
    matte = _matte("shop/x")
    [row] = list(
        _WriteFn(
            str(out) + "/", OutputSettings(), NO_FRAMING, Resume(str(out), "settings")
        ).process(matte)
    )
    assert isinstance(row, Written)
    row = metrics_row(row).record()

    # The state record comes last, once the outputs it lists are complete.
    assert _files(tmp_path) == [
        "out/cutouts/shop/x.png",
        "out/masks/shop/x.png",
        "out/state/shop/x.json",
    ]
    cutout, mask = _png(out / "cutouts/shop/x.png"), _png(out / "masks/shop/x.png")
    alpha8 = np.rint(matte.alpha.astype(np.float64) * 255).astype(np.uint8)
    assert (cutout.mode, cutout.size, mask.mode, mask.size) == ("RGBA", (17, 11), "L", (17, 11))
    seen, clear = alpha8 > 0, alpha8 == 0
    assert np.array_equal(np.asarray(cutout)[seen][:, :3], matte.image.rgb[seen])
    # fully transparent pixels keep no colour of what was behind the subject
    assert clear.any() and not np.asarray(cutout)[clear].any()
    assert np.array_equal(np.asarray(cutout)[..., 3], alpha8)
    assert np.array_equal(np.asarray(mask), alpha8)
    assert len(np.unique(alpha8)) > 20  # the ramp really has many levels

    assert list(row) == SCHEMA.names
    assert (row["status"], row["cutout_uri"], row["mask_uri"]) == (
        "ok",
        f"{out}/cutouts/shop/x.png",
        f"{out}/masks/shop/x.png",
    )
    sizes = (out / "cutouts/shop/x.png").stat().st_size + (out / "masks/shop/x.png").stat().st_size
    assert row["output_bytes"] == sizes
    assert (row["decode_ms"], row["infer_ms"]) == (2.0, 3.0)
    assert row["encode_ms"] >= 0 and row["write_ms"] >= 0
    assert row["total_ms"] == pytest.approx(5.0 + row["encode_ms"] + row["write_ms"], rel=1e-12)


@pytest.mark.parametrize(
    ("settings", "written"),
    [
        (OutputSettings(cutout=False), ["out/masks/k.png", "out/state/k.json"]),
        (OutputSettings(mask=False), ["out/cutouts/k.png", "out/state/k.json"]),
    ],
    ids=["mask-only", "cutout-only"],
)
def test_dofn_writes_only_enabled_outputs(
    tmp_path: Path, settings: OutputSettings, written: list[str]
) -> None:
    [row] = list(
        _WriteFn(
            str(tmp_path / "out"), settings, NO_FRAMING, Resume(str(tmp_path / "out"), "settings")
        ).process(_matte("k"))
    )
    assert _files(tmp_path) == written
    assert isinstance(row, Written)
    row = metrics_row(row).record()
    assert row["output_bytes"] == (tmp_path / written[0]).stat().st_size
    assert [row["cutout_uri"] is None, row["mask_uri"] is None] == [
        not settings.cutout,
        not settings.mask,
    ]


@pytest.mark.parametrize("key", UNSAFE_KEYS)
def test_dofn_refuses_unsafe_keys_and_writes_nothing(tmp_path: Path, key: str) -> None:
    matte = _matte(key)
    [out] = list(
        _WriteFn(
            str(tmp_path / "out"),
            OutputSettings(),
            NO_FRAMING,
            Resume(str(tmp_path / "out"), "settings"),
        ).process(matte)
    )
    assert isinstance(out, beam.pvalue.TaggedOutput) and out.tag == "failures"
    assert isinstance(out.value, Failed)
    assert (out.value.task, out.value.stage, out.value.code) == (
        matte.image.task,
        "manifest",
        "unsafe_key",
    )
    assert _files(tmp_path) == []


def test_dofn_classifies_write_errors(tmp_path: Path) -> None:
    (tmp_path / "out").write_text("a file where the output folder should be")
    [out] = list(
        _WriteFn(
            str(tmp_path / "out"),
            OutputSettings(),
            NO_FRAMING,
            Resume(str(tmp_path / "out"), "settings"),
        ).process(_matte("k"))
    )
    assert isinstance(out, beam.pvalue.TaggedOutput) and out.tag == "failures"
    assert (out.value.stage, out.value.code) == ("write", "unexpected")
    assert "NotADirectoryError" in out.value.message


# --- the transform ------------------------------------------------------------------------


def test_write_outputs_in_a_pipeline(tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    mattes = [_matte("a"), _matte("b/c", 9, 7), _matte("../escape")]
    with BeamPipeline(runner="FnApiRunner") as p:
        outputs = (
            p
            | "Mattes" >> beam.Create(mattes)
            | "WriteOutputs"
            >> WriteOutputs(out, OutputSettings(), NO_FRAMING, Resume(out, "settings"))
        )
        rows = outputs.ok | "Uris" >> beam.Map(
            lambda w: (w.matte.image.task.output_key, w.uris.get("mask_uri"))
        )
        failures = outputs.failures | "Codes" >> beam.Map(lambda f: (f.task.output_key, f.code))
        assert_that(
            rows,
            equal_to([("a", f"{out}/masks/a.png"), ("b/c", f"{out}/masks/b/c.png")]),
            label="CheckRows",
        )
        assert_that(failures, equal_to([("../escape", "unsafe_key")]), label="CheckFailures")
    assert _files(tmp_path) == [
        "out/cutouts/a.png",
        "out/cutouts/b/c.png",
        "out/masks/a.png",
        "out/masks/b/c.png",
        "out/state/a.json",
        "out/state/b/c.json",
    ]
    assert _png(tmp_path / "out/masks/b/c.png").size == (9, 7)
