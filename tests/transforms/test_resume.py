"""Resume: state records, fingerprints, and when a row counts as done."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from matteflow.models.registry import get_spec
from matteflow.pipelines.config import RunConfig
from matteflow.transforms.decode import DecodeSettings
from matteflow.transforms.resume import (
    Resume,
    output_settings,
    plain_settings,
    settings_digest,
)
from matteflow.transforms.settings import OutputSettings


@pytest.fixture
def done(tmp_path: Path) -> tuple[Resume, dict[str, str]]:
    """A prefix where key 'shop/a' was written from source 'sha-a'."""
    out = tmp_path / "out"
    outputs = {"mask_uri": str(out / "masks/shop/a.png")}
    (out / "masks/shop").mkdir(parents=True)
    (out / "masks/shop/a.png").write_bytes(b"png")
    resume = Resume(str(out), "settings-1")
    resume.record("shop/a", "sha-a", outputs)
    return resume, outputs


def test_nothing_recorded_means_not_done(tmp_path: Path) -> None:
    assert Resume(str(tmp_path), "s").current("a", "sha") is None


def test_a_recorded_key_is_done_with_its_outputs(done: tuple[Resume, dict[str, str]]) -> None:
    resume, outputs = done
    assert resume.current("shop/a", "sha-a") == outputs


def test_a_changed_source_is_not_done(done: tuple[Resume, dict[str, str]]) -> None:
    resume, _ = done
    assert resume.current("shop/a", "sha-b") is None


def test_changed_settings_are_not_done(done: tuple[Resume, dict[str, str]]) -> None:
    resume, _ = done
    assert dataclasses.replace(resume, settings="settings-2").current("shop/a", "sha-a") is None


def test_force_redoes_everything(done: tuple[Resume, dict[str, str]]) -> None:
    resume, _ = done
    assert dataclasses.replace(resume, force=True).current("shop/a", "sha-a") is None


def test_a_missing_output_is_not_done(done: tuple[Resume, dict[str, str]]) -> None:
    resume, outputs = done
    Path(outputs["mask_uri"]).unlink()
    assert resume.current("shop/a", "sha-a") is None


def test_an_unreadable_record_is_not_done(done: tuple[Resume, dict[str, str]]) -> None:
    resume, _ = done
    Path(resume.state_uri("shop/a")).write_text("{not json")
    assert resume.current("shop/a", "sha-a") is None


def test_settings_digest_follows_model_dtype_and_outputs() -> None:
    spec, cfg = get_spec("tiny-isnet"), RunConfig()
    base = settings_digest(spec, cfg)
    assert base == settings_digest(spec, RunConfig())
    others = {
        settings_digest(get_spec("isnet-general-use"), cfg),
        settings_digest(spec, _with(cfg, model=dataclasses.replace(cfg.model, dtype="bfloat16"))),
        settings_digest(spec, _with(cfg, outputs=OutputSettings(png_compress_level=6))),
        settings_digest(dataclasses.replace(spec, seed=1), cfg),
        settings_digest(spec, _with(cfg, decode=DecodeSettings(intent="relative"))),
        settings_digest(spec, _with(cfg, model=dataclasses.replace(cfg.model, flip_tta=True))),
        # the thread count decides bfloat16 results on a CPU (issue 17)
        settings_digest(spec, _with(cfg, model=dataclasses.replace(cfg.model, torch_threads=3))),
    }
    assert base not in others and len(others) == 7


def _with(cfg: RunConfig, **changes: object) -> RunConfig:
    return dataclasses.replace(cfg, **changes)  # type: ignore[arg-type]


def test_only_settings_marked_as_affecting_outputs_change_the_digest() -> None:
    spec, cfg = get_spec("tiny-isnet"), RunConfig()
    unchanged = [
        _with(cfg, manifest="other.csv", output="elsewhere", force=True),
        _with(cfg, model=dataclasses.replace(cfg.model, device="cuda")),
        _with(cfg, decode=DecodeSettings(max_pixels=10, max_bytes=10, row_timeout_s=5.0)),
    ]
    assert {settings_digest(spec, c) for c in unchanged} == {settings_digest(spec, cfg)}


def test_output_settings_are_the_marked_fields() -> None:
    marked = output_settings(RunConfig())
    assert set(marked) == {"model", "decode", "outputs", "framing", "matte", "refine", "routing"}
    assert marked["routing"]["models"] == ("isnet-general-use", "u2netp")  # auto's members
    assert marked["model"] == {
        "dtype": "auto",
        "calibration": "",
        "inference_size": 0,
        "torch_threads": 1,
        "flip_tta": False,
    }
    assert marked["decode"] == {
        "intent": "perceptual",
        "raw_white_balance": "camera",
        "raw_exposure": 0.0,
    }
    assert marked["outputs"] == plain_settings(OutputSettings())  # all but kms_key


@pytest.mark.parametrize("text", ["null", "[]", '"x"', "5", "\x00\xff garbage", '{"outputs": []}'])
def test_a_record_that_is_not_ours_means_redo(
    done: tuple[Resume, dict[str, str]], text: str
) -> None:
    resume, _ = done
    Path(resume.state_uri("shop/a")).write_text(text, errors="surrogateescape")
    assert resume.current("shop/a", "sha-a") is None


def test_outputs_are_recorded_relative_to_the_prefix(
    done: tuple[Resume, dict[str, str]],
) -> None:
    resume, _ = done
    record = json.loads(Path(resume.state_uri("shop/a")).read_text())
    assert record["outputs"] == {"mask_uri": "masks/shop/a.png"}


def test_a_copied_folder_resumes_against_its_own_files(
    done: tuple[Resume, dict[str, str]], tmp_path: Path
) -> None:
    resume, _ = done
    copy = tmp_path / "copy"
    shutil.copytree(resume.output, copy)
    in_copy = dataclasses.replace(resume, output=str(copy))
    assert in_copy.current("shop/a", "sha-a") == {"mask_uri": str(copy / "masks/shop/a.png")}
    (copy / "masks/shop/a.png").unlink()
    assert in_copy.current("shop/a", "sha-a") is None  # the copy's mask is gone: redo
    assert resume.current("shop/a", "sha-a") is not None  # the original is untouched


def test_the_same_folder_by_another_path_resumes(
    done: tuple[Resume, dict[str, str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    resume, _ = done
    monkeypatch.chdir(tmp_path)
    relative = dataclasses.replace(resume, output="out/")
    assert relative.current("shop/a", "sha-a") == {"mask_uri": "out/masks/shop/a.png"}


def test_an_absolute_record_into_another_folder_is_redone(
    done: tuple[Resume, dict[str, str]], tmp_path: Path
) -> None:
    """As earlier versions recorded a copied folder: its outputs point at the original."""
    resume, outputs = done
    copy = tmp_path / "copy"
    shutil.copytree(resume.output, copy)
    state = copy / "state/shop/a.json"
    record = json.loads(state.read_text())
    state.write_text(json.dumps({**record, "outputs": outputs}))  # absolute, into `out`
    assert dataclasses.replace(resume, output=str(copy)).current("shop/a", "sha-a") is None
    state.write_text(json.dumps({**record, "outputs": {"mask_uri": "../out/masks/shop/a.png"}}))
    assert dataclasses.replace(resume, output=str(copy)).current("shop/a", "sha-a") is None


def test_the_kms_key_changes_neither_the_fingerprint_nor_the_recorded_settings() -> None:
    """It says how objects are stored, not what they hold (nor does it go into every XMP)."""
    spec, keyed = get_spec("tiny-isnet"), OutputSettings(kms_key="projects/p/.../cryptoKeys/k")
    cfg = RunConfig()
    assert settings_digest(spec, _with(cfg, outputs=keyed)) == settings_digest(spec, cfg)
    assert plain_settings(keyed) == plain_settings(OutputSettings())
    assert "kms_key" not in plain_settings(keyed) and "png_compress_level" in plain_settings(keyed)
