"""render's layered outputs beyond the PSD: the XCF (and, with a shadow, the shadow layer and
composite), read back from the rendered bytes."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from gimpformats.gimpXcfDocument import GimpDocument
from psd_tools import PSDImage

from matteflow.transforms.settings import OutputSettings, with_overrides
from matteflow.transforms.write import quantise_alpha
from tests.images import pattern
from tests.transforms.test_write_outputs import (
    HEIGHT,
    NO_FRAMING,
    WIDTH,
    _disc_alpha,
    _matte,
    _render,
)

XCF_ONLY = OutputSettings(cutout=False, mask=False, xcf=True)


def _xcf(data: bytes, tmp_path: Path) -> GimpDocument:
    path = tmp_path / "read.xcf"
    path.write_bytes(data)
    document = GimpDocument()
    document.load(str(path))
    return document


def test_xcf_has_the_original_and_the_cutout_with_its_mask(tmp_path: Path) -> None:
    files = _render(_matte("k"), XCF_ONLY)
    assert list(files) == ["xcf_uri"]
    uri, data = files["xcf_uri"]
    assert uri == "out/xcf/k.xcf"
    document = _xcf(data, tmp_path)
    assert (document.width, document.height) == (WIDTH, HEIGHT)
    cutout, original = document.raw_layers
    assert (cutout.name, original.name) == ("Cutout", "Original")
    assert np.array_equal(np.asarray(original.image), np.array(pattern(WIDTH, HEIGHT)))
    assert cutout.mask is not None
    alpha8 = quantise_alpha(_disc_alpha(), np.uint8)
    assert np.array_equal(np.asarray(cutout.mask.image), alpha8)


def test_xcf_and_psd_carry_the_same_layers(tmp_path: Path) -> None:
    files = _render(_matte("k"), OutputSettings(cutout=False, mask=False, psd=True, xcf=True))
    assert sorted(files) == ["psd_uri", "xcf_uri"]
    psd = PSDImage.open(io.BytesIO(files["psd_uri"][1]))
    document = _xcf(files["xcf_uri"][1], tmp_path)
    by_name = {layer.name: layer for layer in document.raw_layers}
    for layer in psd:
        pixels = layer.topil()
        assert pixels is not None
        rgb = np.asarray(pixels.convert("RGB"))
        assert np.array_equal(np.asarray(by_name[layer.name].image)[..., :3], rgb)


def test_xcf_is_a_row_setting_kind() -> None:
    outputs, _ = with_overrides(OutputSettings(), NO_FRAMING, {"outputs": "cutout,xcf"})
    assert (outputs.cutout, outputs.mask, outputs.xcf) == (True, False, True)
