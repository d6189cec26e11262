"""int8 on CPU (issue 18): a model's published ONNX graph, made float32 and statically quantised
(QDQ) by onnxruntime with calibration images, built once into the model cache and verified
before every load. The onnxruntime engine (models/onnx_engine.py) runs the result.

The quantised file is keyed by a sha256 of the source weights' sha256, the recipe (and the
quantiser's version) and the calibration images' bytes, so any change to one of them builds a
new file; a file whose bytes no longer match the digest recorded when it was built is rebuilt,
never loaded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image, ImageOps

from matteflow.models.preprocess import preprocess
from matteflow.models.weights import (
    cache_dir,
    matches_recorded_sha256,
    record_sha256,
    sha256_file,
    source_file,
)

if TYPE_CHECKING:
    import onnx

    from matteflow.models.registry import ModelSpec

__all__ = [
    "CALIBRATION_SUFFIXES",
    "RECIPE",
    "QuantiseError",
    "Recipe",
    "calibration_digest",
    "calibration_files",
    "default_calibration_dir",
    "float32_graph",
    "int8_key",
    "int8_model",
    "quantise",
]

_LOG = logging.getLogger(__name__)
CALIBRATION_SUFFIXES = (".jpg", ".jpeg", ".png")
_PER_CHANNEL_OPSET = 13


class _DropPreprocessAdvice(logging.Filter):
    """onnxruntime's quantiser advises its graph pre-processing on the root logger at every
    build; the recipe was measured without it, and the advice is noise in a run's log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


class QuantiseError(RuntimeError):
    """No int8 model can be built: no calibration images, or a graph it cannot quantise."""


@dataclass(frozen=True)
class Recipe:
    """How a graph is quantised (onnxruntime.quantization.quantize_static, QDQ format).

    ops: the op types quantised (the others stay float32; () = every op onnxruntime can
    quantise); per_channel: one weight scale per
    output channel; method: activation calibration, "percentile" (the `percentile` of each
    tensor's values), "entropy" or "minmax"; exclude_last: how many of the graph's last Conv
    nodes stay float32. Activations uint8, weights int8 (onnxruntime's advice for x86 CPUs).
    """

    ops: tuple[str, ...] = ()
    per_channel: bool = True
    method: str = "percentile"
    percentile: float = 99.99
    exclude_last: int = 0


# Every op, per-channel weights, percentile-99.99 calibration: measured on eval-dev against
# bfloat16 with bench/int8.py (README, "int8 on CPU"). Convolutions alone ran 1.7x slower (the
# float32 ops between them convert in and out of int8) and min-max calibration lost up to
# 0.18 IoU in a category.
RECIPE = Recipe()


def default_calibration_dir() -> Path:
    """The project's bundled sample (examples/sample), the default calibration set."""
    return Path(__file__).resolve().parents[1] / "examples" / "sample"


def calibration_files(folder: Path | None = None) -> list[Path]:
    """The calibration images in `folder` (default: the bundled sample), sorted by name: every
    .jpg, .jpeg or .png directly inside it. Raises QuantiseError when there are none."""
    folder = folder or default_calibration_dir()
    files = (
        sorted(p for p in folder.iterdir() if p.suffix.lower() in CALIBRATION_SUFFIXES)
        if folder.is_dir()
        else []
    )
    if not files:
        raise QuantiseError(
            f"{folder}: no calibration images (.jpg, .jpeg, .png); int8 needs a few photos like"
            " the ones it will run on: set model.calibration to a folder of them"
            " (`--set model.calibration=DIR`; `matteflow models quantize NAME --calibration DIR`)"
        )
    return files


def calibration_digest(files: Sequence[Path], recipe: Recipe = RECIPE) -> str:
    """sha256 of the recipe, the quantiser's version and the calibration images' bytes (in
    order): what, besides the source weights, decides an int8 model's bytes."""
    import onnxruntime

    digest = hashlib.sha256()
    record = {"recipe": dataclasses.asdict(recipe), "onnxruntime": onnxruntime.__version__}
    digest.update(json.dumps(record, sort_keys=True).encode())
    for path in files:
        digest.update(sha256_file(path).encode())
    return digest.hexdigest()


def int8_key(spec: ModelSpec, files: Sequence[Path], recipe: Recipe = RECIPE) -> str:
    """The int8 model's cache key: sha256 of the source weights' sha256 and
    `calibration_digest`."""
    text = f"{spec.sha256}:{calibration_digest(files, recipe)}"
    return hashlib.sha256(text.encode()).hexdigest()


def float32_graph(model: onnx.ModelProto) -> onnx.ModelProto:
    """The same graph computing in float32: float16 initializers and Constant values widened,
    and every Cast between two float types removed (each use of its output reads its input;
    a graph output keeps its name). A float32 graph comes back unchanged (a copy)."""
    import onnx  # imported where used: a run that is not int8 does not pay for it
    from onnx import TensorProto, numpy_helper

    floats = (TensorProto.FLOAT, TensorProto.FLOAT16)
    if not any(t.data_type == TensorProto.FLOAT16 for t in model.graph.initializer):
        return onnx.ModelProto.FromString(model.SerializeToString())
    model = onnx.shape_inference.infer_shapes(model)  # a copy that knows each tensor's type
    graph = model.graph
    types = {v.name: v.type.tensor_type.elem_type for v in graph.value_info}
    types.update({v.name: v.type.tensor_type.elem_type for v in graph.input})
    types.update({t.name: t.data_type for t in graph.initializer})
    for tensor in graph.initializer:
        if tensor.data_type == TensorProto.FLOAT16:
            tensor.CopyFrom(
                numpy_helper.from_array(
                    numpy_helper.to_array(tensor).astype(np.float32), tensor.name
                )
            )
    # A removed Cast joins its input and output into one tensor: named after the graph's input
    # if the group holds it, else after a graph output, else after any member.
    parent: dict[str, str] = {}

    def find(name: str) -> str:
        while parent.get(name, name) != name:
            name = parent[name]
        return name

    kept = []
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value" and attr.t.data_type == TensorProto.FLOAT16:
                    wide = numpy_helper.to_array(attr.t).astype(np.float32)
                    attr.t.CopyFrom(numpy_helper.from_array(wide, attr.t.name))
        to = next((a.i for a in node.attribute if a.name == "to"), None)
        if node.op_type == "Cast" and to in floats and types.get(node.input[0]) in floats:
            parent[find(node.output[0])] = find(node.input[0])
            continue
        kept.append(node)
    canonical: dict[str, str] = {}
    for value in [*graph.output, *graph.input]:  # inputs last: they win
        canonical[find(value.name)] = value.name

    def rename(name: str) -> str:
        root = find(name)
        return canonical.get(root, root)

    for node in kept:
        node.input[:] = [rename(n) if n else n for n in node.input]
        node.output[:] = [rename(n) for n in node.output]
    produced = {n for node in kept for n in node.output} | {i.name for i in graph.input}
    for value in graph.output:  # an output that shares its tensor with another, or the input
        if value.name not in produced:
            kept.append(onnx.helper.make_node("Identity", [rename(value.name)], [value.name]))
    del graph.node[:]
    graph.node.extend(kept)
    del graph.value_info[:]
    for value in [*graph.input, *graph.output]:
        if value.type.tensor_type.elem_type == TensorProto.FLOAT16:
            value.type.tensor_type.elem_type = TensorProto.FLOAT
    onnx.checker.check_model(model)
    return model


def _constants_as_initializers(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` (changed in place) with each tensor-valued Constant node an initializer of the
    same name: the same graph, whose constants the calibrator skips (it measures every float
    tensor that is no initializer, and an empty one, such as U²-Net-p's Resize roi, stops it)."""
    import onnx

    graph = model.graph
    kept = []
    for node in graph.node:
        values = [a for a in node.attribute if a.name == "value"]
        if node.op_type == "Constant" and values:
            tensor = onnx.TensorProto()
            tensor.CopyFrom(values[0].t)
            tensor.name = node.output[0]
            graph.initializer.append(tensor)
        else:
            kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)
    return model


def _calibration_batches(spec: ModelSpec, files: Sequence[Path]) -> list[np.ndarray]:
    """Each calibration image as the model sees it: 1 x 3 x S x S float32 (EXIF orientation
    applied; colour as stored, which is close enough for activation ranges)."""
    batches = []
    for path in files:
        with Image.open(path) as im:
            rgb = np.array(ImageOps.exif_transpose(im).convert("RGB"))
        x = preprocess(rgb, spec, torch.device("cpu"))
        batches.append(x[None].numpy().astype(np.float32))
    return batches


def quantise(
    spec: ModelSpec,
    source: Path,
    out: Path,
    files: Sequence[Path],
    recipe: Recipe = RECIPE,
) -> Path:
    """Write `source` (spec's ONNX file), made float32 and quantised by `recipe` with `files`
    as calibration images, to `out` (atomically). Calibration runs one image at a time, so
    memory stays that of one forward pass with every activation kept."""
    import onnx
    import onnx.version_converter
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    graph = float32_graph(onnx.load(str(source)))
    opset = next(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx"))
    if opset < _PER_CHANNEL_OPSET:  # per-channel weights need DequantizeLinear's axis
        graph = onnx.version_converter.convert_version(graph, _PER_CHANNEL_OPSET)
    graph = _constants_as_initializers(graph)
    image_input = spec.input or graph.graph.input[0].name
    constants = {name: np.asarray(v, dtype=np.float32) for name, v in spec.constants}
    feeds = [{image_input: x, **constants} for x in _calibration_batches(spec, files)]

    class _Reader(CalibrationDataReader):  # type: ignore[misc]
        """The calibration feeds; `set_range` lets onnxruntime collect one image at a time."""

        def __init__(self) -> None:
            self._feeds: list[dict[str, Any]] = []
            self.set_range(0, len(feeds))

        def __len__(self) -> int:
            return len(feeds)

        def set_range(self, start_index: int, end_index: int) -> None:
            self._feeds = feeds[start_index:end_index]

        def get_next(self) -> dict[str, Any] | None:
            return self._feeds.pop(0) if self._feeds else None

    convs = [n.name for n in graph.graph.node if n.op_type == "Conv"]
    exclude = convs[len(convs) - recipe.exclude_last :] if recipe.exclude_last else []
    methods = {
        "percentile": CalibrationMethod.Percentile,
        "entropy": CalibrationMethod.Entropy,
        "minmax": CalibrationMethod.MinMax,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    with tempfile.TemporaryDirectory(prefix="matteflow-int8-") as work:
        fp32 = Path(work) / "float32.onnx"
        onnx.save(graph, str(fp32))
        quiet = _DropPreprocessAdvice()
        logging.getLogger().addFilter(quiet)
        try:  # onnxruntime prints its progress on stdout, where a run's summary goes
            with contextlib.redirect_stdout(None):
                quantize_static(
                    str(fp32),
                    str(tmp),
                    _Reader(),
                    quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=list(recipe.ops),
                    per_channel=recipe.per_channel,
                    activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                    nodes_to_exclude=exclude,
                    calibrate_method=methods[recipe.method],
                    extra_options={
                        "CalibPercentile": recipe.percentile,
                        "CalibStridedMinMax": 1,
                    },
                )
        except Exception:
            tmp.unlink(missing_ok=True)
            raise
        finally:
            logging.getLogger().removeFilter(quiet)
    tmp.replace(out)
    return out


def int8_model(
    spec: ModelSpec,
    calibration: Path | None = None,
    *,
    allow_fetch: bool = True,
    recipe: Recipe = RECIPE,
) -> Path:
    """The verified int8 file of `spec` calibrated on the images in `calibration` (default:
    the bundled sample), built into the cache when missing or no longer matching the digest
    recorded beside it. Raises QuantiseError (no images) or WeightsError (no source)."""
    files = calibration_files(calibration)
    key = int8_key(spec, files, recipe)
    out = cache_dir() / spec.name / f"int8-{key}.onnx"
    matches = matches_recorded_sha256(out)
    if matches:
        return out
    if matches is False:
        _LOG.warning("%s: does not match its recorded sha256; rebuilding it", out)
    source = source_file(spec, allow_fetch)
    _LOG.warning(
        "model %r: building its int8 file once (%d calibration images); this takes a while",
        spec.name,
        len(files),
    )
    start = time.perf_counter()
    quantise(spec, source, out, files, recipe)
    record_sha256(out)
    _LOG.warning(
        "model %r: int8 file built in %.0f s: %s", spec.name, time.perf_counter() - start, out
    )
    return out
