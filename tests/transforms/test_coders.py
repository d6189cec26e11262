"""RecordCoder: the pixel records round-trip, their size is estimated without encoding them, and
the stages' PCollections of them use it."""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.coders.typecoders import registry
from apache_beam.typehints.typehints import is_consistent_with

from matteflow.transforms.coders import RecordCoder, RecordUnion, estimated_size
from matteflow.transforms.decode import DecodeSettings, FetchAndDecode
from matteflow.transforms.framing import FramingSettings
from matteflow.transforms.inference import MatteModelHandler, Segment
from matteflow.transforms.matte import MatteSettings
from matteflow.transforms.refine import Refine, RefineSettings
from matteflow.transforms.resume import Resume
from matteflow.transforms.settings import OutputSettings
from matteflow.transforms.types import DecodedImage, Failed, ImageTask, Matte, Written
from matteflow.transforms.write import WriteOutputs


def _matte(height: int = 300, width: int = 400) -> Matte:
    rng = np.random.default_rng(3)
    image = DecodedImage(
        task=ImageTask(id="a", source_uri="/in/a.jpg", output_key="a"),
        rgb=rng.integers(0, 256, (height, width, 3), dtype=np.uint8),
        source_format="JPEG",
        exif=b"Exif\0\0" + bytes(100),
    )
    alpha = rng.random((height, width), dtype=np.float32)
    return Matte(image, alpha, "m", "0" * 64, "cpu", "float32", 1, foreground=image.rgb.copy())


def test_a_matte_round_trips_with_its_pixels() -> None:
    matte = _matte()
    back = RecordCoder().decode(RecordCoder().encode(matte))
    assert np.array_equal(back.alpha, matte.alpha) and np.array_equal(
        back.image.rgb, matte.image.rgb
    )
    assert np.array_equal(back.foreground, matte.foreground)
    assert back.image.task == matte.image.task and back.image.exif == matte.image.exif


def test_the_size_estimate_is_the_pixels_and_encodes_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    matte = _matte()
    encoded = len(RecordCoder().encode(matte))

    def refuse(self: RecordCoder, value: object) -> bytes:
        raise AssertionError("estimating a size must not encode the record")

    monkeypatch.setattr(RecordCoder, "encode", refuse)
    # Beam's counters ask the coder's impl, as the SDK worker does for sampled elements.
    size, observables = RecordCoder().get_impl().get_estimated_size_and_observables(matte)
    pixels = matte.alpha.nbytes + matte.image.rgb.nbytes + matte.foreground.nbytes  # type: ignore[union-attr]
    assert observables == [] and size == estimated_size(matte)
    assert pixels <= size < pixels + 2_000
    assert abs(size - encoded) / encoded < 0.01  # close to the real encoding's size


def test_the_registry_gives_the_pixel_records_this_coder() -> None:
    assert isinstance(registry.get_coder(DecodedImage), RecordCoder)
    assert isinstance(registry.get_coder(Matte), RecordCoder)


def test_decode_refine_and_write_outputs_are_typed_as_their_records() -> None:
    p = beam.Pipeline()  # built, not run: the types are set when the stages are applied
    tasks = p | beam.Create([ImageTask(id="a", source_uri="/nowhere/a.png", output_key="a")])
    decoded = tasks | FetchAndDecode(DecodeSettings(), Resume("/nonexistent/out", "settings"))
    refined = decoded.ok | beam.Map(lambda image: _matte()) | Refine(RefineSettings())
    written = refined.ok | WriteOutputs("/nonexistent/out", OutputSettings(), FramingSettings(),
                                        Resume("/nonexistent/out", "settings"))  # fmt: skip
    assert decoded.ok.element_type is DecodedImage
    assert refined.ok.element_type is Matte
    assert written.ok.element_type is Written  # it carries the matte on to its metrics row
    for pcoll in (decoded.ok, refined.ok, written.ok):
        assert isinstance(registry.get_coder(pcoll.element_type), RecordCoder)


def test_runinference_output_is_coded_by_record_coder_as_a_union() -> None:
    # RunInference emits Matte or Failed: a plain Union would get Beam's pickling default.
    p = beam.Pipeline()
    images = p | beam.Create([_matte().image])
    handler = MatteModelHandler("tiny-isnet", max_batch_pixels=1, torch_threads=1)
    segmented = images | Segment(handler, MatteSettings())
    [inferred] = segmented.ok.producer.inputs
    assert isinstance(inferred.element_type, RecordUnion)
    assert set(inferred.element_type.union_types) == {Matte, Failed}
    assert isinstance(registry.get_coder(inferred.element_type), RecordCoder)
    # still a union to Beam's type checks: each member is consistent with it
    assert all(is_consistent_with(t, inferred.element_type) for t in (Matte, Failed))
