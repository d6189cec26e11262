"""apply_existing_alpha: what a source's own transparency does to the model's alpha."""

from __future__ import annotations

import numpy as np
import pytest

from matteflow.transforms import matte
from matteflow.transforms.matte import MatteSettings, apply_existing_alpha

MODEL_ALPHA = np.array([[0.0, 0.5, 1.0], [1.0, 1.0, 0.25]], np.float32)
SOURCE8 = np.array([[255, 255, 0], [128, 255, 255]], np.uint8)


def test_all_names_exist() -> None:
    assert all(hasattr(matte, name) for name in matte.__all__)


def test_combine_multiplies_so_transparent_stays_transparent() -> None:
    out = apply_existing_alpha(MODEL_ALPHA, SOURCE8, "combine")
    expected = np.array([[0.0, 0.5, 0.0], [128 / 255, 1.0, 0.25]], np.float32)
    assert out.dtype == np.float32
    assert np.allclose(out, expected)


def test_keep_writes_the_source_alpha_and_replace_the_model_alpha() -> None:
    assert np.allclose(apply_existing_alpha(MODEL_ALPHA, SOURCE8, "keep"), SOURCE8 / 255)
    assert apply_existing_alpha(MODEL_ALPHA, SOURCE8, "replace") is MODEL_ALPHA


def test_sixteen_bit_source_alpha_scales_by_its_own_range() -> None:
    source16 = SOURCE8.astype(np.uint16) * 257
    assert np.allclose(apply_existing_alpha(MODEL_ALPHA, source16, "keep"), SOURCE8 / 255)


@pytest.mark.parametrize("mode", ["keep", "replace", "combine"])
def test_opaque_sources_keep_the_model_alpha(mode: str) -> None:
    assert apply_existing_alpha(MODEL_ALPHA, None, mode) is MODEL_ALPHA


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="existing_alpha"):
        MatteSettings(existing_alpha="merge")
