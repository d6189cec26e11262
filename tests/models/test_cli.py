"""`matteflow models list | verify | convert` through typer's CliRunner."""

from __future__ import annotations

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
    """A rich table's body as {first cell: [each cell's text, wrapped lines joined]}.

    Cells wrap over several lines (80 columns under CliRunner), so each cell's fragments are
    joined with all whitespace removed; compare with `_squash`ed expectations.
    """
    rows: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in output.splitlines():
        if not line.startswith("│"):
            continue
        cells = [c.strip() for c in line.strip("│").split("│")]
        if cells[0]:
            current = rows.setdefault(cells[0], [""] * len(cells))
        assert current is not None, output
        for i, cell in enumerate(cells):
            current[i] += _squash(cell)
    return rows


# --- list ----------------------------------------------------------------------------------


def test_list_shows_licence_facts_in_full() -> None:
    result = runner.invoke(app, ["models", "list"])
    assert result.exit_code == 0, result.output
    rows = _table_rows(result.stdout)
    isnet = get_spec("isnet-general-use")
    _, size, commercial, licence, distribution, local = rows["isnet-general-use"]
    assert size == "1024px"
    assert commercial == "unclear"
    assert licence == _squash(isnet.weights_license)  # nothing cut off with an ellipsis
    assert distribution == _squash(isnet.distribution)
    assert "(AGPL-3.0)" in distribution
    assert local == "no"  # no model path, empty cache
    assert rows["tiny-isnet"][2] == "yes"
    assert rows["tiny-isnet"][5] == "generated"


def test_list_marks_a_verified_local_copy(monkeypatch: pytest.MonkeyPatch, onnx_path: Path) -> None:
    monkeypatch.setenv("MATTEFLOW_MODEL_PATH", str(onnx_path.parent))
    result = runner.invoke(app, ["models", "list"])
    assert result.exit_code == 0, result.output
    assert _table_rows(result.stdout)["isnet-general-use"][5] == "yes"


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
    assert "unknown model 'isnet-nope'; known models: isnet-general-use, tiny-isnet" in (
        result.stderr
    )


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
