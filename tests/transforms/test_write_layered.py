"""render's layered outputs beyond the PSD: the XCF (and, with a shadow, the shadow layer and
composite), read back from the rendered bytes."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from gimpformats.gimpXcfDocument import GimpDocument
from PIL import Image
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


# --- shadow -------------------------------------------------------------------------------

WHITE_COMPOSITE = {"cutout": False, "mask": False, "composite": True, "composite_format": "png"}


def _composite(outputs: OutputSettings) -> np.ndarray:
    data = _render(_matte("k"), outputs)["composite_uri"][1]
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(np.int32)


def test_drop_shadow_darkens_the_composite_below_the_subject_only() -> None:
    plain = _composite(OutputSettings(**WHITE_COMPOSITE))
    shaded = _composite(
        OutputSettings(**WHITE_COMPOSITE, shadow="drop", shadow_offset_y=0.2, shadow_blur=0.0)
    )
    darker = (shaded < plain).any(axis=2)
    # The disc (centre row 15, box rows 5..25) is 19 px tall where alpha > 0.5: 0.2 of it
    # moves the shadow ~4 px down. Beside the subject it shows only below the centre.
    rows, cols = np.nonzero(darker & (_disc_alpha() == 0))
    assert rows.size and rows.min() > 15 and rows.max() <= 25 + 4
    assert cols.min() >= 10 and cols.max() <= 30
    opaque = _disc_alpha() == 1.0
    assert np.array_equal(shaded[opaque], plain[opaque])  # the subject covers its shadow
    assert (shaded <= plain).all()


def test_no_shadow_leaves_the_composite_as_it_was() -> None:
    plain = _composite(OutputSettings(**WHITE_COMPOSITE))
    assert np.array_equal(_composite(OutputSettings(**WHITE_COMPOSITE, shadow="none")), plain)


@pytest.mark.parametrize("kind", ["contact", "drop"])
def test_psd_and_xcf_get_the_shadow_as_their_own_layer(kind: str, tmp_path: Path) -> None:
    outputs = OutputSettings(cutout=False, mask=False, psd=True, xcf=True, shadow=kind)
    files = _render(_matte("k"), outputs)
    psd = PSDImage.open(io.BytesIO(files["psd_uri"][1]))
    assert [layer.name for layer in psd] == ["Original", "Shadow", "Cutout"]
    document = _xcf(files["xcf_uri"][1], tmp_path)
    assert [layer.name for layer in document.raw_layers] == ["Cutout", "Shadow", "Original"]
    psd_shadow = psd[1].topil()
    assert psd_shadow is not None
    psd_alpha = np.asarray(psd_shadow.convert("RGBA"))[..., 3]
    xcf_alpha = np.asarray(document.raw_layers[1].image)[..., 3]
    assert xcf_alpha.any()
    # psd-tools crops a layer to its non-transparent box; compare over that box.
    left, top, right, bottom = psd[1].bbox
    assert np.array_equal(xcf_alpha[top:bottom, left:right], psd_alpha)
    assert not xcf_alpha[:top].any() and not xcf_alpha[bottom:].any()


def test_shadow_is_not_drawn_into_cutouts_or_masks() -> None:
    plain = _render(_matte("k"), OutputSettings())
    shaded = _render(_matte("k"), OutputSettings(shadow="drop"))
    for column in ("cutout_uri", "mask_uri"):  # the bytes differ: the XMP names the settings
        a = np.asarray(Image.open(io.BytesIO(plain[column][1])))
        b = np.asarray(Image.open(io.BytesIO(shaded[column][1])))
        assert np.array_equal(a, b)
