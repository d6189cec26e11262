"""Segment: preprocess/postprocess, MatteModelHandler on tiny-isnet, and RunInference."""

from __future__ import annotations

import dataclasses
import math

import apache_beam as beam
import numpy as np
import pytest
import torch
from apache_beam.testing.test_pipeline import TestPipeline as BeamPipeline  # not collected
from apache_beam.testing.util import assert_that, equal_to

from matteflow.models import registry
from matteflow.models.registry import LoadedModel, get_spec
from matteflow.transforms import inference
from matteflow.transforms.inference import (
    MatteModelHandler,
    ModelSet,
    Segment,
    postprocess,
    preprocess,
)
from matteflow.transforms.matte import MatteSettings
from matteflow.transforms.types import DecodedImage, Failed, ImageTask, Matte, Timings
from tests.images import pattern

MODEL = "tiny-isnet"  # 64-pixel input; never the real 1024-pixel model here
CPU = torch.device("cpu")
PINNED_ALPHA = 0.25
SIZES = {"a": (17, 11), "b": (40, 23), "c": (31, 64)}  # id -> (width, height)


def _image(name: str, width: int, height: int) -> DecodedImage:
    rgb = np.array(pattern(width, height))
    return DecodedImage(
        ImageTask(name, f"mem://{name}.png", name), rgb, "PNG", timings=Timings(decode_ms=1.5)
    )


def _broken(kind: str) -> DecodedImage:
    """An element preprocess cannot take: four channels, or no channel axis."""
    rgb = np.zeros((9, 13, 4) if kind == "rgba" else (9, 13), np.uint8)
    return DecodedImage(ImageTask("bad", "mem://bad.png", "bad"), rgb, "PNG")


def _pin_head(model: LoadedModel) -> LoadedModel:
    """Zero the output head's weights and set its bias so every alpha is PINNED_ALPHA."""
    head = model.network.side[0]
    with torch.no_grad():
        head.weight.zero_()
        head.bias.fill_(math.log(PINNED_ALPHA / (1 - PINNED_ALPHA)))
    return model


class _PinnedHandler(MatteModelHandler):
    """The real handler with the head pinned after loading, so pipeline tests know alpha."""

    def load_model(self) -> ModelSet:
        models = super().load_model()
        _pin_head(models.get(MODEL))
        return models


@pytest.fixture(scope="module")
def handler() -> MatteModelHandler:
    return MatteModelHandler(MODEL, "cpu", "float32", max_batch_pixels=100_000)


@pytest.fixture(scope="module")
def models(handler: MatteModelHandler) -> ModelSet:
    return handler.load_model()


@pytest.fixture(scope="module")
def model(models: ModelSet) -> LoadedModel:
    return models.get(MODEL)


@pytest.fixture(scope="module")
def pinned(handler: MatteModelHandler) -> ModelSet:
    models = handler.load_model()
    _pin_head(models.get(MODEL))
    return models


def test_all_names_exist() -> None:
    assert all(hasattr(inference, name) for name in inference.__all__)


# --- plain functions --------------------------------------------------------------------


def test_preprocess_normalises_per_channel_with_the_spec() -> None:
    spec = dataclasses.replace(get_spec(MODEL), mean=(0.1, 0.2, 0.3), std=(0.5, 0.25, 2.0))
    grey = (30, 128, 250)
    rgb = np.empty((11, 17, 3), np.uint8)
    rgb[...] = grey
    x = preprocess(rgb, spec, CPU)
    assert (tuple(x.shape), x.dtype) == ((3, 64, 64), torch.float32)
    for c in range(3):
        expected = (grey[c] / 255 - spec.mean[c]) / spec.std[c]
        # Resizing a constant image keeps it constant; float32 arithmetic leaves ~1e-7.
        assert torch.allclose(x[c], torch.full((64, 64), expected), rtol=0, atol=1e-6), c


def test_preprocess_keeps_axes() -> None:
    # Red rises along x and green along y; a transposed or flipped tensor would break both.
    rgb = np.zeros((11, 17, 3), np.uint8)
    rgb[..., 0] = np.linspace(0, 255, 17).astype(np.uint8)[None, :]
    rgb[..., 1] = np.linspace(0, 255, 11).astype(np.uint8)[:, None]
    x = preprocess(rgb, get_spec(MODEL), CPU).numpy()
    assert np.all(np.diff(x[0], axis=1) >= 0) and x[0, :, -1].min() > x[0, :, 0].max()
    assert np.all(np.diff(x[1], axis=0) >= 0) and x[1, -1, :].min() > x[1, 0, :].max()
    assert np.ptp(x[0], axis=0).max() < 1e-6 and np.ptp(x[1], axis=1).max() < 1e-6


def test_large_images_are_box_reduced_before_the_bilinear_resize() -> None:
    # One-pixel stripes at over twice the input size: plain bilinear sampling at 64 px would
    # hit stripes unevenly (moire); the box reduce averages them to a flat grey first.
    spec = dataclasses.replace(get_spec(MODEL), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    stripes = np.zeros((300, 1024, 3), np.uint8)
    stripes[:, ::2] = 255
    x = preprocess(stripes, spec, CPU)
    assert x.shape == (3, 64, 64)
    assert float(x.mean()) == pytest.approx(0.5, abs=0.01)
    assert float(x.std()) < 0.01
    small = stripes[:, :120]  # under twice the input: the reference's plain bilinear resize
    assert float(preprocess(small, spec, CPU).std()) > 0.1


def test_preprocess_runs_at_the_size_asked_for() -> None:
    # The box reduce follows the size asked for too: 300 px stripes are under twice 160.
    stripes = np.zeros((300, 300, 3), np.uint8)
    stripes[:, ::2] = 255
    x = preprocess(stripes, get_spec(MODEL), CPU, 160)
    assert x.shape == (3, 160, 160)
    assert float(x.std()) > 0.1  # plain bilinear: not box-reduced to a flat grey


def test_postprocess_restores_full_size_by_hand() -> None:
    # 2 x 2 -> 3 x 4, half-pixel centres: sample x = (i + 0.5) / 2 - 0.5 = -0.25, 0.25, 0.75,
    # 1.25, clamped to the edge -> 0, 0.25, 0.75, 1 between a 0 column and a 1 column.
    alpha = torch.tensor([[[0.0, 1.0], [0.0, 1.0]]])
    out = postprocess(alpha, 3, 4)
    assert (out.shape, out.dtype) == ((3, 4), np.float32)
    assert np.allclose(out, np.tile([0.0, 0.25, 0.75, 1.0], (3, 1)), rtol=0, atol=1e-7)


def test_postprocess_clamps_to_unit_range() -> None:
    alpha = torch.tensor([[[-0.5, 1.5], [0.3, 0.3]]])
    out = postprocess(alpha, 2, 2)
    assert np.array_equal(out, np.array([[0.0, 1.0], [0.3, 0.3]], np.float32))


# --- the handler ------------------------------------------------------------------------


def test_batching_is_by_pixels(handler: MatteModelHandler) -> None:
    kwargs = handler.batch_elements_kwargs()
    assert (kwargs["min_batch_size"], kwargs["max_batch_size"]) == (100_000, 100_000)
    size = kwargs["element_size_fn"]
    assert size(_image("small", 17, 11)) == 64 * 64  # the model tensor dominates
    assert size(_image("big", 200, 100)) == 200 * 100  # the full-resolution alpha dominates


def test_max_batch_is_at_least_one_image() -> None:
    tiny = MatteModelHandler(MODEL, max_batch_pixels=10)
    assert tiny.batch_elements_kwargs()["max_batch_size"] == 64 * 64


def test_inference_size_sets_the_tensor_and_the_batch_weight(
    models: ModelSet, model: LoadedModel
) -> None:
    big = MatteModelHandler(MODEL, max_batch_pixels=10, inference_size=96)
    kwargs = big.batch_elements_kwargs()
    assert kwargs["max_batch_size"] == 96 * 96
    assert kwargs["element_size_fn"](_image("small", 17, 11)) == 96 * 96
    seen: list[tuple[int, ...]] = []
    handle = model.network.register_forward_hook(lambda m, args, out: seen.append(args[0].shape))
    try:
        [matte] = big.run_inference([_image("a", 40, 23)], models)
    finally:
        handle.remove()
    assert seen == [(1, 3, 96, 96)]
    assert isinstance(matte, Matte) and matte.alpha.shape == (23, 40)


def test_bytes_and_namespace(handler: MatteModelHandler) -> None:
    batch = [_image("a", 17, 11), _image("b", 40, 23)]
    assert handler.get_num_bytes(batch) == (17 * 11 + 40 * 23) * 3
    assert handler.get_metrics_namespace() == "matteflow.segment"


def test_loaded_model_is_the_requested_one(model: LoadedModel) -> None:
    assert (model.spec.name, model.device, model.dtype_name) == (MODEL, CPU, "float32")
    assert len(model.weights_sha256) == 64


def test_batch_gives_full_size_mattes(handler: MatteModelHandler, pinned: ModelSet) -> None:
    batch = [_image(name, w, h) for name, (w, h) in SIZES.items()]
    mattes = list(handler.run_inference(batch, pinned))
    assert [type(m) for m in mattes] == [Matte] * 3
    for image, matte in zip(batch, mattes, strict=True):
        assert isinstance(matte, Matte)
        assert matte.image is image
        assert (matte.alpha.shape, matte.alpha.dtype) == ((image.height, image.width), np.float32)
        # The pinned head makes every alpha sigmoid(logit(0.25)); float32 leaves ~1e-7.
        assert np.allclose(matte.alpha, PINNED_ALPHA, rtol=0, atol=1e-6)
        assert (matte.model, matte.device, matte.dtype, matte.batch_size) == (
            MODEL,
            "cpu",
            "float32",
            3,
        )
        assert matte.model_sha256 == pinned.get(MODEL).weights_sha256
        assert matte.timings.decode_ms == 1.5 and matte.timings.infer_ms >= 0


def test_batch_results_match_single_runs(handler: MatteModelHandler, models: ModelSet) -> None:
    # With real (random) weights each image gets its own alpha: a mix-up inside the batch
    # would show. 1e-5: batched convolutions may pick another kernel than single ones.
    batch = [_image(name, w, h) for name, (w, h) in SIZES.items()]
    together = list(handler.run_inference(batch, models))
    for image, matte in zip(batch, together, strict=True):
        [alone] = handler.run_inference([image], models)
        assert isinstance(matte, Matte) and isinstance(alone, Matte)
        assert np.allclose(matte.alpha, alone.alpha, rtol=0, atol=1e-5)
    # Guard: these weights do tell images apart by far more than the tolerance.
    flipped = dataclasses.replace(batch[0], rgb=np.ascontiguousarray(batch[0].rgb[::-1]))
    [other] = handler.run_inference([flipped], models)
    assert isinstance(other, Matte)
    assert np.abs(other.alpha - together[0].alpha).max() > 1e-4


@pytest.mark.parametrize("kind", ["rgba", "two-dims"])
def test_broken_element_fails_alone(
    handler: MatteModelHandler, pinned: ModelSet, kind: str
) -> None:
    batch = [_image("a", 17, 11), _broken(kind), _image("b", 40, 23)]
    out = list(handler.run_inference(batch, pinned))
    assert [type(o) for o in out] == [Matte, Failed, Matte]
    failure = out[1]
    assert isinstance(failure, Failed)
    assert (failure.task.id, failure.stage, failure.code) == ("bad", "segment", "model_error")
    assert failure.message.startswith("mem://bad.png: ")
    for matte, image in ((out[0], batch[0]), (out[2], batch[2])):
        assert isinstance(matte, Matte) and matte.image is image
        assert matte.batch_size == 1  # retried one at a time
        assert matte.alpha.shape == (image.height, image.width)


class _MemoryBoundHandler(MatteModelHandler):
    """The real handler on a device that runs out of memory above `limit` images a batch."""

    limit = 2
    error: type[Exception] = torch.OutOfMemoryError

    def _infer(self, batch, model):  # type: ignore[no-untyped-def]
        if len(batch) > self.limit:
            # As torch words it on the CPU, where the error is a plain RuntimeError.
            raise self.error(f"DefaultCPUAllocator: can't allocate memory: {len(batch)} images")
        return super()._infer(batch, model)


def test_batch_out_of_memory_is_retried_in_halves(pinned: ModelSet) -> None:
    handler = _MemoryBoundHandler(MODEL, max_batch_pixels=100_000)
    batch = [_image(f"i{n}", 17 + n, 11) for n in range(5)]
    out = list(handler.run_inference(batch, pinned))
    # 5 -> 2 + 3 -> 2 + (1 + 2): every image once, in order, in the largest batch that fits.
    assert [o.image.task.id for o in out if isinstance(o, Matte)] == ["i0", "i1", "i2", "i3", "i4"]
    assert [o.batch_size for o in out if isinstance(o, Matte)] == [2, 2, 1, 2, 2]


@pytest.mark.parametrize("error", [torch.OutOfMemoryError, RuntimeError])
def test_image_out_of_memory_alone_fails_as_oom(pinned: ModelSet, error: type[Exception]) -> None:
    handler = _MemoryBoundHandler(MODEL, max_batch_pixels=100_000)
    handler.limit, handler.error = 0, error
    out = list(handler.run_inference([_image("a", 17, 11), _image("b", 40, 23)], pinned))
    assert [(f.task.id, f.stage, f.code) for f in out if isinstance(f, Failed)] == [
        ("a", "segment", "oom"),
        ("b", "segment", "oom"),
    ]
    assert all(error.__name__ in f.message for f in out if isinstance(f, Failed))


def test_empty_batch_gives_nothing(handler: MatteModelHandler, pinned: ModelSet) -> None:
    assert list(handler.run_inference([], pinned)) == []


# --- the transform ------------------------------------------------------------------------


def test_segment_splits_mattes_and_failures() -> None:
    images = [_image(name, w, h) for name, (w, h) in SIZES.items()] + [_broken("rgba")]
    handler = _PinnedHandler(MODEL, "cpu", "float32", max_batch_pixels=100_000)
    with BeamPipeline(runner="FnApiRunner") as p:
        outputs = (
            p | "Images" >> beam.Create(images) | "Segment" >> Segment(handler, MatteSettings())
        )
        mattes = outputs.ok | "Summarise" >> beam.Map(
            lambda m: (m.image.task.id, m.alpha.shape, round(float(m.alpha.mean()), 5))
        )
        failures = outputs.failures | "Codes" >> beam.Map(lambda f: (f.task.id, f.stage, f.code))
        assert_that(
            mattes,
            equal_to([(n, (h, w), PINNED_ALPHA) for n, (w, h) in SIZES.items()]),
            label="CheckMattes",
        )
        assert_that(failures, equal_to([("bad", "segment", "model_error")]), label="CheckFailures")


# --- a model per manifest row ------------------------------------------------------------


def _row(name: str, width: int, height: int, model: str) -> DecodedImage:
    image = _image(name, width, height)
    task = dataclasses.replace(image.task, settings=(("model", model),) if model else ())
    return dataclasses.replace(image, task=task)


@pytest.fixture
def second_model(monkeypatch: pytest.MonkeyPatch) -> str:
    """tiny-isnet-b: the tiny network with another seed and a 96-pixel input."""
    spec = dataclasses.replace(get_spec(MODEL), name="tiny-isnet-b", seed=1, input_size=96)
    monkeypatch.setitem(registry._REGISTRY, spec.name, spec)
    return spec.name


def test_rows_are_grouped_by_their_model(handler: MatteModelHandler, second_model: str) -> None:
    loads: list[str] = []
    real_load = inference.load

    def counting_load(name: str, **kwargs: object) -> LoadedModel:
        loads.append(name)
        return real_load(name, **kwargs)  # type: ignore[arg-type]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(inference, "load", counting_load)
        models = handler.load_model()
        batch = [
            _row("a", 17, 11, ""),
            _row("b", 40, 23, second_model),
            _row("c", 31, 64, MODEL),
            _row("d", 20, 20, second_model),
        ]
        out = list(handler.run_inference(batch, models))
        again = list(handler.run_inference(batch[1:2], models))
    assert loads == [MODEL, second_model]  # one load per model, the second on first use
    by_id = {m.image.task.id: m for m in out if isinstance(m, Matte)}
    assert {k: (m.model, m.batch_size) for k, m in by_id.items()} == {
        "a": (MODEL, 2),
        "c": (MODEL, 2),
        "b": (second_model, 2),
        "d": (second_model, 2),
    }
    assert isinstance(again[0], Matte)
    np.testing.assert_allclose(again[0].alpha, by_id["b"].alpha, rtol=0, atol=1e-5)
    # The row's own model at its own input size weighs the batch.
    size = handler.batch_elements_kwargs()["element_size_fn"]
    assert size(batch[1]) == 96 * 96 and size(batch[0]) == 64 * 64


def test_a_row_model_that_cannot_load_fails_its_rows_only(handler: MatteModelHandler) -> None:
    strict = MatteModelHandler(
        MODEL, "cpu", "float32", max_batch_pixels=100_000, allow_licences=("permissive",)
    )
    batch = [_row("a", 17, 11, ""), _row("b", 20, 20, "isnet-general-use")]
    out = list(strict.run_inference(batch, strict.load_model()))
    assert isinstance(out[0], Matte)
    failed = out[1]
    assert isinstance(failed, Failed)
    assert (failed.task.id, failed.stage, failed.code) == ("b", "segment", "model_error")
    assert "licence class 'unclear'" in failed.message


def test_preprocess_lanczos_and_divide_by_max() -> None:
    spec = dataclasses.replace(
        get_spec(MODEL), resize="lanczos", divide_by="max", mean=(0.0,) * 3, std=(1.0,) * 3
    )
    rgb = np.full((11, 17, 3), 100, np.uint8)
    rgb[..., 2] = 200
    x = preprocess(rgb, spec, CPU)
    assert x.shape == (3, 64, 64)
    # Divided by the image's own maximum (200), not 255.
    assert torch.allclose(x[0], torch.full((64, 64), 0.5), atol=1e-6)
    assert torch.allclose(x[2], torch.full((64, 64), 1.0), atol=1e-6)
