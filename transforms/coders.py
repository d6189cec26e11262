"""The Beam coder of the records that carry pixels (DecodedImage, Matte, Written).

Beam samples the byte size of elements on every edge between steps, fused or not, for its
counters, and its default coder measures a size by encoding the element: for a 12 MP photo that
pickled some 100 MB of pixels per step, a third of a core-second per image in a short job (the
sampling rate only falls off after the first elements). `RecordCoder` codes the same way as Beam's
PickleCoder when an element really crosses a boundary, but estimates its size from its arrays'
`nbytes` without encoding it. The stages declare these records as their output types, so Beam
picks this coder for their PCollections.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.coders.typecoders import registry
from apache_beam.typehints.typehints import UnionConstraint

from matteflow.transforms.types import DecodedImage, Matte, Written

__all__ = ["RecordCoder", "RecordUnion", "estimated_size", "with_record_outputs"]

_FIELD = 8  # bytes counted for each scalar field or reference
_PICKLE = beam.coders.PickleCoder()  # how Beam itself codes an untyped element


def estimated_size(value: Any) -> int:
    """About the encoded size of `value` in bytes: the arrays' nbytes, strings' and bytes'
    lengths, nested dataclasses, sequences and mappings summed; 8 for anything else."""
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if isinstance(value, (bytes, bytearray, str)):
        return len(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = dataclasses.fields(value)
        return sum(_FIELD + estimated_size(getattr(value, f.name)) for f in fields)
    if isinstance(value, (list, tuple)):
        return sum(_FIELD + estimated_size(item) for item in value)
    if isinstance(value, dict):
        return sum(estimated_size(k) + estimated_size(v) for k, v in value.items())
    return _FIELD


class RecordCoder(beam.coders.Coder):
    """Beam's PickleCoder for the pixel records, with a size estimate that encodes nothing."""

    def encode(self, value: Any) -> bytes:
        """The record's bytes, when it crosses a stage boundary."""
        encoded: bytes = _PICKLE.encode(value)
        return encoded

    def decode(self, encoded: bytes) -> Any:
        """The record back from `encode`'s bytes (from a worker of the same job)."""
        return _PICKLE.decode(encoded)

    def estimate_size(self, value: Any) -> int:
        """The size Beam's counters record, from the arrays' nbytes."""
        return estimated_size(value)

    def is_deterministic(self) -> bool:
        """Not usable as a key: pickles of equal records may differ."""
        return False

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self)

    def __hash__(self) -> int:
        return hash(type(self))


class RecordUnion(UnionConstraint):
    """A union of record types (e.g. RunInference's Matte | Failed) that RecordCoder codes:
    Beam gives a plain Union its pickling default coder, which measures sizes by encoding."""

    def bind_type_variables(self, bindings: dict[Any, Any]) -> RecordUnion:
        """Itself: concrete classes, no type variables (Beam would rebuild a plain Union)."""
        return self


for _record in (DecodedImage, Matte, Written, RecordUnion):
    registry.register_coder(_record, RecordCoder)


def with_record_outputs(pardo: beam.ParDo, main: type, **tagged: type) -> beam.PTransform[Any, Any]:
    """`pardo` with a main output "ok" of type `main` and tagged outputs of the named types: a
    PCollection of DecodedImage or Matte is then coded by RecordCoder (registered above)."""
    typed = pardo.with_output_types(main, **tagged)
    outputs: beam.PTransform[Any, Any] = typed.with_outputs(*tagged, main="ok")
    return outputs
