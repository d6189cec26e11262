"""`matteflow models list | verify | convert` through typer's CliRunner."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from safetensors import safe_open
from safetensors.torch import load_file
from typer.testing import CliRunner

from matteflow.models.registry import get_spec
from matteflow.pipelines.cli import app

runner = CliRunner()


def _squash(text: str) -> str:
    return "".join(text.split())


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _table_rows(output: str) -> dict[str, list[str]]:
    """`models list`'s table as {model: [cells]} (columns at least two spaces apart)."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("model "))
    rows = {}
    for line in lines[start + 1 :]:
        cells = re.split(r"\s{2,}", line.strip())
        if len(cells) < 7:  # the licence facts follow the table
            break
        rows[cells[0]] = cells
    return rows


# --- list ----------------------------------------------------------------------------------


def test_list_shows_the_zoo_with_licence_classes() -> None:
    result = runner.invoke(app, ["models", "list"])
    assert result.exit_code == 0, result.output
    rows = _table_rows(result.stdout)
    assert rows["isnet-general-use"][1:] == [
        "general", "torch", "1024px", "-", "unclear", "no"
    ]  # fmt: skip
    assert rows["u2netp"][1:] == ["general", "torch", "320px", "-", "permissive", "no"]
    assert rows["rvm-mobilenetv3"][1:] == [
        "human", "onnxruntime", "1024px", "-", "copyleft", "no"
    ]  # fmt: skip
    assert rows["tiny-isnet"][5:] == ["permissive", "seeded"]
    assert all(len(line) <= 80 for line in result.stdout.splitlines() if line in rows)


def test_list_gives_each_models_licence_facts_in_full() -> None:
    result = runner.invoke(app, ["models", "list"])
    text = _one_line(result.stdout)
    for name in ("isnet-general-use", "u2netp", "rvm-mobilenetv3"):
        spec = get_spec(name)
        assert f"{name} ({spec.licence_class}): weights: {spec.weights_license}." in text
        assert f"Distribution: {spec.distribution}." in text
        assert f"Sources: {', '.join(spec.sources)}." in text
        assert spec.links[0] in text
    assert "(AGPL-3.0)" in text


def test_list_marks_a_verified_local_copy(monkeypatch: pytest.MonkeyPatch, onnx_path: Path) -> None:
    monkeypatch.setenv("MATTEFLOW_MODEL_PATH", str(onnx_path.parent))
    result = runner.invoke(app, ["models", "list"])
    assert result.exit_code == 0, result.output
    row = _table_rows(result.stdout)["isnet-general-use"]
    assert row[4:] == ["88.2 MB", "unclear", "yes"]


# --- verify --------------------------------------------------------------------------------


@pytest.mark.usefixtures("no_fetch")
def test_verify_accepts_the_real_file(
    monkeypatch: pytest.MonkeyPatch, onnx_path: Path, isolated_weights: Path
) -> None:
    monkeypatch.setenv("MATTEFLOW_MODEL_PATH", str(onnx_path.parent))
    result = runner.invoke(app, ["models", "verify", "isnet-general-use"])
    assert result.exit_code == 0, result.output
    spec = get_spec("isnet-general-use")
    line = _one_line(result.stdout)
    assert f"isnet-general-use: OK; {onnx_path} matches sha256 {spec.sha256}" in line
    assert (isolated_weights / spec.name / f"{spec.sha256}.safetensors").is_file()


@pytest.mark.usefixtures("no_fetch")
def test_verify_fails_clearly_without_a_local_copy(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, isolated_weights: Path
) -> None:
    empty = tmp_path / "models"
    empty.mkdir()
    monkeypatch.setenv("MATTEFLOW_MODEL_PATH", str(empty))
    result = runner.invoke(app, ["models", "verify", "isnet-general-use"])
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    err = result.stderr
    assert err.startswith("error: model 'isnet-general-use': no verified copy")
    assert f"{empty / 'isnet-general-use-fp16.onnx'}: not present" in err  # one line, whole
    assert "Fix: run `matteflow models fetch isnet-general-use`" in err
    assert not [p for p in isolated_weights.rglob("*") if p.is_file()]  # nothing fetched


def test_verify_of_the_generated_model_has_nothing_to_do() -> None:
    result = runner.invoke(app, ["models", "verify", "tiny-isnet"])
    assert result.exit_code == 0, result.output
    assert "tiny-isnet: generated at load time, nothing to verify" in result.stdout


def test_verify_of_an_unknown_model_names_the_known_ones() -> None:
    result = runner.invoke(app, ["models", "verify", "isnet-nope"])
    assert result.exit_code == 1
    known = "isnet-general-use, rvm-mobilenetv3, tiny-isnet, u2netp"
    assert f"unknown model 'isnet-nope'; known models: {known}" in result.stderr


# --- convert -------------------------------------------------------------------------------


def test_convert_writes_loadable_safetensors(onnx_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "native" / "isnet.safetensors"
    result = runner.invoke(app, ["models", "convert", str(onnx_path), str(out)])
    assert result.exit_code == 0, result.output
    assert "wrote" in result.stdout
    state = load_file(str(out))
    assert len(state) == 238
    assert tuple(state["conv_in.weight"].shape) == (64, 3, 3, 3)
    with safe_open(str(out), "pt") as f:
        assert f.metadata() == {"source": onnx_path.name}


def test_convert_of_a_foreign_onnx_fails_clearly(tmp_path: Path) -> None:
    weight = numpy_helper.from_array(np.zeros((4, 3, 3, 3), np.float32), "w")
    bias = numpy_helper.from_array(np.zeros(4, np.float32), "b")
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], name="/only/Conv", pads=[1, 1, 1, 1])
    graph = helper.make_graph(
        [node],
        "one-conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
        initializer=[weight, bias],
    )
    src = tmp_path / "one-conv.onnx"
    onnx.save(helper.make_model(graph), str(src))
    out = tmp_path / "out.safetensors"
    result = runner.invoke(app, ["models", "convert", str(src), str(out)])
    assert result.exit_code == 1, result.output
    assert f"error: {src}: 1 Conv nodes, the native network has 119" in result.stderr
    assert not out.exists()


def test_convert_takes_the_architecture(tmp_path: Path) -> None:
    from matteflow.models.u2net import U2NetP
    from tests.models.conftest import MODELS_DIR

    src = MODELS_DIR / "u2netp.onnx"
    if not src.is_file():
        pytest.skip(f"{src} absent: the real model file is needed")
    out = tmp_path / "u2netp.safetensors"
    result = runner.invoke(app, ["models", "convert", str(src), str(out), "--arch", "u2netp"])
    assert result.exit_code == 0, result.output
    U2NetP().load_state_dict(load_file(str(out)), strict=True)
    wrong = runner.invoke(
        app, ["models", "convert", str(src), str(tmp_path / "x"), "--arch", "nope"]
    )
    assert wrong.exit_code == 1 and "unknown architecture 'nope'" in wrong.stderr


@pytest.mark.usefixtures("no_fetch")
def test_verify_of_an_onnxruntime_model_without_a_copy_says_where_it_looked(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    empty = tmp_path / "models"
    empty.mkdir()
    monkeypatch.setenv("MATTEFLOW_MODEL_PATH", str(empty))
    result = runner.invoke(app, ["models", "verify", "rvm-mobilenetv3"])
    assert result.exit_code == 1, result.output
    err = result.stderr
    assert err.startswith("error: model 'rvm-mobilenetv3': no verified copy")
    assert f"{empty / 'rvm-mobilenetv3-fp32.onnx'}: not present" in err
    assert "PyPI registry" in _one_line(err)
