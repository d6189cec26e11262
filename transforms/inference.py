"""Segment: DecodedImage -> Matte through Beam RunInference with our model handler.

Each model once per worker process, shared by its threads (RunInference's shared handle); a
manifest row may name its own model, and a batch runs one forward pass per model. Batches
are sized by pixel count; only the model-sized tensor is batched, and each alpha is upsampled
back to its image's full resolution before it leaves the handler. Every batch runs with the
same torch thread count, set in the thread that runs it (models/threads.py), so an alpha does
not depend on which worker thread, process or runner computed it.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import apache_beam as beam
import numpy as np
import torch
import torch.nn.functional as F
from apache_beam.metrics.metric import Metrics
from apache_beam.ml.inference.base import ModelHandler, RunInference

from matteflow.models.preprocess import preprocess
from matteflow.models.registry import (
    LoadedModel,
    get_spec,
    load,
    strictest_licence,
)
from matteflow.models.threads import torch_threads
from matteflow.transforms.coders import RecordUnion, with_record_outputs
from matteflow.transforms.failures import inference_failure, is_oom, redact
from matteflow.transforms.matte import MatteSettings, apply_existing_alpha, uncertainty
from matteflow.transforms.routing import (
    AUTO,
    Prediction,
    RoutingSettings,
    member_models,
    route,
)
from matteflow.transforms.types import Clock, DecodedImage, Failed, Matte, elapsed_ms

__all__ = ["MatteModelHandler", "ModelSet", "Segment", "postprocess", "preprocess", "row_model"]

_LOG = logging.getLogger(__name__)
_NAMESPACE = "matteflow.segment"


def postprocess(alpha: torch.Tensor, height: int, width: int) -> np.ndarray:
    """1 x S x S alpha -> H x W float32 numpy in [0, 1] (bilinear, half-pixel centres)."""
    full = F.interpolate(alpha[None], size=(height, width), mode="bilinear", align_corners=False)
    return full[0, 0].clamp_(0.0, 1.0).cpu().numpy()


def row_model(image: DecodedImage, default: str) -> str:
    """The model an image's manifest row names (its `model` setting), else the run's."""
    return dict(image.task.settings).get("model") or default


def _element_pixels(model: str, size: int, routing: RoutingSettings, image: DecodedImage) -> int:
    """Batch weight of an element: the larger of its model tensor (the run's model at `size`,
    a row's own model at its input size, auto's largest member at its) and its full-res alpha."""
    name = row_model(image, model)
    if name == model and name != AUTO:
        side = size
    else:
        side = max(get_spec(m).input_size for m in member_models(name, routing))
    return max(side * side, int(image.height) * int(image.width))


class ModelSet:
    """The models of one worker process, shared by its threads: the run's, loaded at setup,
    and each model a manifest row names, loaded on first use (one load per process each)."""

    def __init__(self, loader: functools.partial[LoadedModel], first: str) -> None:
        self._loader = loader
        self._lock = threading.Lock()
        self._loaded = {first: loader(first)}

    def get(self, name: str) -> LoadedModel:
        """The loaded model `name`; raises what `load` raises (licence, weights, device)."""
        with self._lock:
            if name not in self._loaded:
                self._loaded[name] = self._loader(name)
            return self._loaded[name]


class MatteModelHandler(ModelHandler[DecodedImage, "Matte | Failed", ModelSet]):
    """RunInference handler for registry models: the run's model (device, dtype), the square
    size it runs at (`inference_size`, 0 = the model's own) and batching limits; a manifest
    row's `model` setting picks another model for that row (at its own input size).
    `flip_tta` also runs each image mirrored and averages the two predictions. The handler
    never names an architecture: the spec says how to feed the model and read its outputs.
    `torch_threads` (> 0, from `models.threads.inference_threads`) is set in whichever thread
    runs a batch, and is each onnxruntime session's intra-op count. `calibration`: the int8
    calibration folder ("" = the bundled sample; dtype "int8" only)."""

    def __init__(
        self,
        model: str,
        device: str = "cpu",
        dtype: str = "float32",
        *,
        max_batch_pixels: int,
        inference_size: int = 0,
        channels_last: bool = False,
        torch_threads: int = 1,
        allow_licences: tuple[str, ...] = (),
        flip_tta: bool = False,
        routing: RoutingSettings | None = None,
        calibration: str = "",
        clock: Clock = time.perf_counter,
    ) -> None:
        routing = routing or RoutingSettings()
        spec = get_spec(routing.general if model == AUTO else model)
        self._size = inference_size or spec.input_size
        # A fixed pixel budget (min = max): a batch fills up to it, or ends with the bundle.
        # Beam's adaptive sizing fits batch time against size, which says nothing here.
        budget = max(self._size * self._size, max_batch_pixels)
        super().__init__(
            min_batch_size=budget,
            max_batch_size=budget,
            element_size_fn=functools.partial(_element_pixels, model, self._size, routing),
        )
        if torch_threads < 1:
            raise ValueError(f"torch_threads {torch_threads}: expected a positive count")
        self._model = model
        self._device = device
        self._dtype = dtype
        self._channels_last = channels_last
        self._threads = torch_threads
        self._allow_licences = allow_licences
        self._flip_tta = flip_tta
        self._routing = routing
        self._calibration = calibration
        self._clock = clock

    def load_model(self) -> ModelSet:
        """Load the run's model once per worker process (verified weights); row models follow
        on first use. RunInference itself records the first load's time
        (load_model_latency_milli_secs, in this namespace)."""
        loader = functools.partial(
            load,
            device=self._device,
            dtype=self._dtype,
            channels_last=self._channels_last,
            allow_licences=self._allow_licences,
            threads=self._threads,
            calibration=Path(self._calibration) if self._calibration else None,
        )
        return ModelSet(loader, member_models(self._model, self._routing)[0])

    def _infer(self, batch: Sequence[DecodedImage], model: LoadedModel) -> list[Matte]:
        start = self._clock()
        # The run's model at its size; row models, and auto's members, at their own
        size = self._size if model.spec.name == self._model else model.spec.input_size
        x = torch.stack([preprocess(im.rgb, model.spec, model.device, size) for im in batch])
        if self._flip_tta:  # the mirrored images in the same batch, averaged back
            both = model.predict(torch.cat([x, x.flip(-1)]))
            n = len(batch)
            alpha = (both.alpha[:n] + both.alpha[n:].flip(-1)) / 2
            colour = both.foreground
            if colour is not None:
                colour = (colour[:n] + colour[n:].flip(-1)) / 2
        else:
            alpha, colour = model.predict(x)
        doubts = [uncertainty(a[0].float().cpu().numpy()) for a in alpha]
        alphas = [postprocess(a, im.height, im.width) for im, a in zip(batch, alpha, strict=True)]
        # The model's colour stays at its own resolution; Refine upsamples the edge band.
        colours = [
            None if colour is None else colour[i].clamp(0, 1).permute(1, 2, 0).cpu().numpy()
            for i in range(len(batch))
        ]
        batch_ms = elapsed_ms(start, self._clock())
        mattes = [
            Matte(
                image=image,
                alpha=a,
                model=model.spec.name,
                model_sha256=model.weights_sha256,
                device=str(model.device),
                dtype=model.dtype_name,
                batch_size=len(batch),
                timings=image.timings.add(infer_ms=batch_ms / len(batch)),
                uncertainty=doubt,
                licence_class=model.spec.licence_class,
                model_foreground=c,
            )
            for image, a, doubt, c in zip(batch, alphas, doubts, colours, strict=True)
        ]
        Metrics.distribution(_NAMESPACE, "batch_images").update(len(batch))
        Metrics.distribution(_NAMESPACE, "batch_ms").update(int(batch_ms))
        Metrics.counter(_NAMESPACE, "images").inc(len(batch))
        return mattes

    def run_inference(
        self,
        batch: Sequence[DecodedImage],
        model: ModelSet,
        inference_args: dict[str, Any] | None = None,
    ) -> Iterable[Matte | Failed]:
        """Mattes for the batch, its rows grouped by model (one forward pass per model); an
        `auto` row runs through each member model of the routing settings and gets their
        routed matte. A failing group (e.g. out of memory) is retried in halves, down to
        single images, so only an image that fails alone becomes a failure; a row model that
        cannot be loaded (licence not allowed, no weights) fails its rows."""
        groups: dict[str, list[DecodedImage]] = {}
        for image in batch:
            groups.setdefault(row_model(image, self._model), []).append(image)
        results: list[Matte | Failed] = []
        for name, images in groups.items():
            if name == AUTO:
                results += self._run_auto(images, model)
            else:
                results += self._run_model(images, model, name)
        return results

    def _run_model(
        self, images: Sequence[DecodedImage], model: ModelSet, name: str
    ) -> list[Matte | Failed]:
        try:
            loaded = model.get(name)
        except Exception as err:
            return [
                Failed.from_error(im.task, inference_failure(err, im.task.source_uri))
                for im in images
            ]
        return self._run_split(images, loaded)

    def _run_auto(self, images: Sequence[DecodedImage], model: ModelSet) -> list[Matte | Failed]:
        """Each member model's mattes for the images, routed into one per image (`route`);
        an image that fails in any member fails (that member's failure)."""
        outcomes = {m: self._run_model(images, model, m) for m in self._routing.models}
        results: list[Matte | Failed] = []
        for i, image in enumerate(images):
            per_model = {m: outcomes[m][i] for m in self._routing.models}
            failed = [r for r in per_model.values() if isinstance(r, Failed)]
            if failed:
                results.append(failed[0])
                continue
            mattes = {m: r for m, r in per_model.items() if isinstance(r, Matte)}
            results.append(self._routed(image, mattes))
        return results

    def _routed(self, image: DecodedImage, mattes: dict[str, Matte]) -> Matte:
        start = self._clock()
        # route() passes a model's colour through untouched: it stays at that model's size
        routed = route(
            {m: Prediction(x.alpha, x.model_foreground) for m, x in mattes.items()},
            self._routing,
        )
        general = mattes[self._routing.general]
        infer_ms = sum(x.timings.infer_ms or 0.0 for x in mattes.values())
        return Matte(
            image=image,
            alpha=routed.alpha,
            model=routed.model,
            model_sha256=",".join(mattes[m].model_sha256 for m in routed.routed_from),
            device=general.device,
            dtype=general.dtype,
            batch_size=general.batch_size,
            timings=image.timings.add(infer_ms=infer_ms + elapsed_ms(start, self._clock())),
            uncertainty=uncertainty(routed.alpha),
            licence_class=strictest_licence(x.licence_class for x in mattes.values()),
            model_foreground=routed.fgr,
            routed_from=routed.routed_from,
            agreement=routed.agreement,
        )

    def _run_split(self, batch: Sequence[DecodedImage], model: LoadedModel) -> list[Matte | Failed]:
        if not batch:
            return []
        try:
            with torch_threads(self._threads):  # Beam may run this on any worker thread
                return list(self._infer(batch, model))
        except Exception as err:
            if is_oom(err) and model.device.type == "cuda":
                torch.cuda.empty_cache()
            if len(batch) == 1:
                error = inference_failure(err, batch[0].task.source_uri)
                return [Failed.from_error(batch[0].task, error)]
            _LOG.warning(
                "batch of %d failed (%s); retrying in halves", len(batch), redact(str(err))
            )
            Metrics.counter(_NAMESPACE, "batch_splits").inc()
            half = len(batch) // 2
            return [
                *self._run_split(batch[:half], model),
                *self._run_split(batch[half:], model),
            ]

    def get_num_bytes(self, batch: Sequence[DecodedImage]) -> int:
        """Bytes of pixels in the batch (the default pickles the whole batch)."""
        return sum(im.rgb.nbytes for im in batch)

    def get_metrics_namespace(self) -> str:
        """Beam metrics namespace of the stage."""
        return _NAMESPACE


def _split(
    result: Matte | Failed, settings: MatteSettings
) -> Iterable[Matte | beam.pvalue.TaggedOutput[str, Failed]]:
    if isinstance(result, Failed):
        yield beam.pvalue.TaggedOutput("failures", result)
        return
    source_alpha = result.image.source_alpha
    alpha = apply_existing_alpha(result.alpha, source_alpha, settings.existing_alpha)
    yield dataclasses.replace(result, alpha=alpha)  # Beam elements are not changed in place


class Segment(beam.PTransform[beam.pvalue.PCollection[DecodedImage], beam.pvalue.DoOutputsTuple]):
    """DecodedImage -> Matte (alpha at full resolution, combined with the source's own
    transparency per `settings`); failures -> tag "failures"."""

    def __init__(self, handler: MatteModelHandler, settings: MatteSettings) -> None:
        super().__init__()
        self._handler = handler
        self._settings = settings

    def expand(self, images: beam.pvalue.PCollection[DecodedImage]) -> beam.pvalue.DoOutputsTuple:
        outputs: beam.pvalue.DoOutputsTuple = (
            images
            | "RunInference"
            >> RunInference(self._handler).with_output_types(RecordUnion([Matte, Failed]))
            | "Split"
            >> with_record_outputs(beam.FlatMap(_split, self._settings), Matte, failures=Failed)
        )
        return outputs
