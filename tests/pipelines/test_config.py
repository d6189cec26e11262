"""Profiles: defaults on the dataclasses, dotted-path errors for unknown keys and bad types."""

from __future__ import annotations

from pathlib import Path

import pytest

from matteflow.pipelines.config import ConfigError, RunConfig, load_config


def _profile(tmp_path: Path, text: str) -> str:
    path = tmp_path / "profile.toml"
    path.write_text(text)
    return str(path)


def test_packaged_local_profile_is_the_defaults() -> None:
    assert load_config() == RunConfig()


def test_profile_values_and_overrides(tmp_path: Path) -> None:
    profile = _profile(tmp_path, '[model]\ndtype = "bfloat16"\n[batching]\nmax_pixels = 5000000\n')
    cfg = load_config(profile, manifest="m.csv", output="out", model="tiny-isnet")
    assert (cfg.model.dtype, cfg.model.name) == ("bfloat16", "tiny-isnet")
    assert cfg.batching.max_pixels == 5_000_000
    assert (cfg.manifest, cfg.output) == ("m.csv", "out")
    assert cfg.outputs.cutout is True


def test_output_framing_and_matte_tables(tmp_path: Path) -> None:
    text = (
        '[outputs]\ncomposite = true\ncutout_format = "webp"\npng_compress_level = 0\n'
        '[framing]\nmode = "canvas"\ncanvas_width = 800\nmax_size = 0\n'
        '[matte]\nexisting_alpha = "keep"\n[decode]\nintent = "relative"\n'
    )
    cfg = load_config(_profile(tmp_path, text))
    assert (cfg.outputs.composite, cfg.outputs.cutout_format) == (True, "webp")
    assert cfg.outputs.png_compress_level == 0
    assert (cfg.framing.mode, cfg.framing.canvas_width, cfg.framing.max_size) == ("canvas", 800, 0)
    assert (cfg.matte.existing_alpha, cfg.decode.intent) == ("keep", "relative")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[batching]\nmax_pixels = '4M'\n", "batching.max_pixels: expected int, got '4M'"),
        ("[batching]\nmax_pixels = 0\n", "batching.max_pixels: expected a positive integer"),
        ("[model]\nchannels_last = 1\n", "model.channels_last: expected bool, got 1"),
        ("[outputs]\nmask = 'yes'\n", "outputs.mask: expected bool"),
        ("[model]\nname = true\n", "model.name: expected str, got True"),
        ("[model]\nsped = 1\n", "model.sped: unknown key"),
        ("[nonsense]\nx = 1\n", "nonsense: unknown key"),
        ("model = 3\n", "model: expected a table"),
        ("[outputs]\nquality = 101\n", "outputs.quality: expected 1..100, got 101"),
        ("[outputs]\ncutout_format = 'gif'\n", "outputs.cutout_format: expected one of png"),
        ("[outputs]\ncutout = false\nmask = false\n", "outputs.cutout: no output selected"),
        ("[framing]\nmode = 'zoom'\n", "framing.mode: expected one of none, crop, canvas"),
        ("[framing]\nmax_size = -1\n", "framing.max_size: expected a positive integer"),
        ("[matte]\nexisting_alpha = 'mix'\n", "matte.existing_alpha: expected one of keep"),
        ("[decode]\nintent = 'vivid'\n", "decode.intent: expected one of perceptual"),
        ("[model]\ninference_size = 700\n", "model.inference_size: expected a multiple of 32"),
        ("[model]\ninference_size = -32\n", "model.inference_size: expected a positive integer"),
    ],
)
def test_bad_profiles_name_the_dotted_path(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(_profile(tmp_path, text))
    assert message in str(info.value)


def test_missing_profile_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"profile .*nope\.toml"):
        load_config(str(tmp_path / "nope.toml"))


def test_set_overrides_any_setting_with_toml_or_bare_values(tmp_path: Path) -> None:
    profile = _profile(tmp_path, "[outputs]\nquality = 50\n")
    cfg = load_config(
        profile,
        settings=[
            "outputs.quality=80",
            "outputs.composite=true",
            "outputs.background=#00ff00",
            "outputs.cutout_format=webp",
            "framing.mode=canvas",
            "framing.margin=40",
            "framing.padding=5%",
            'model.dtype="bfloat16"',
        ],
    )
    assert (cfg.outputs.quality, cfg.outputs.composite) == (80, True)
    assert (cfg.outputs.background, cfg.outputs.cutout_format) == ("#00ff00", "webp")
    assert (cfg.framing.mode, cfg.framing.margin, cfg.framing.padding) == ("canvas", "40", "5%")
    assert cfg.model.dtype == "bfloat16"


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("outputs.quality", "expected TABLE.KEY=VALUE"),
        ("outputs.quality=high", "outputs.quality: expected int, got 'high'"),
        ("outputs.nope=1", "outputs.nope: unknown key"),
        ("manifest.x=1", "manifest: expected str"),
    ],
)
def test_bad_set_values_name_the_setting(setting: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(settings=[setting])
