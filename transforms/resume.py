"""Idempotent resume: a state record per output key says which source and settings made it.

`{output}/state/{key}.json` is written after the key's outputs, so it exists only for complete
outputs. A rerun skips a row when the record's fingerprint (sha256 of the source bytes, the
model's identity and the settings that change outputs) matches and every output it lists still
exists; `force` redoes every row.

Which settings change outputs is said where they are defined: a dataclass field marked
`field(metadata=AFFECTS_OUTPUT)` (a whole settings table, or one setting of it) is part of the
fingerprint; `output_settings` collects them, so a new setting is marked, never listed here.

Outputs are recorded relative to the output prefix, so a copied or moved output folder, or the
same folder named by another path, resumes against its own files. A record that is not what
`record` writes (garbage, `null`, a list) means: redo the row.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from matteflow.models.registry import ModelSpec
from matteflow.transforms.failures import NotFound
from matteflow.transforms.layout import OutputLayout
from matteflow.transforms.storage import exists, read_bytes, write_atomic

__all__ = ["AFFECTS_OUTPUT", "Resume", "output_settings", "plain_settings", "settings_digest"]

RowSettings = tuple[tuple[str, str], ...]
_FORMAT = 4  # bump when the output bytes change for the same inputs and settings
AFFECTS_OUTPUT = {"affects_output": True}  # field metadata: the setting changes output bytes


def plain_settings(value: Any) -> Any:
    """A settings value as JSON-able data, as the fingerprint and the outputs' provenance XMP
    record it: dataclass fields marked `metadata={"affects_output": False}` (how objects are
    stored, not what they hold, e.g. outputs.kms_key) are left out."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        plain = dataclasses.asdict(value)
        for f in dataclasses.fields(value):
            if not f.metadata.get("affects_output", True):
                del plain[f.name]
        return plain
    return value


def output_settings(config: Any) -> dict[str, Any]:
    """The settings of a config dataclass that change outputs, by field name: fields marked
    AFFECTS_OUTPUT whole, and the marked fields of nested dataclasses (empty ones left out)."""
    found: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if f.metadata.get("affects_output"):
            found[f.name] = plain_settings(value)
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            inner = output_settings(value)
            if inner:
                found[f.name] = inner
    return found


def settings_digest(spec: ModelSpec | Sequence[ModelSpec], config: Any) -> str:
    """Digest of everything besides the source that decides the output bytes: the model's
    registry entry (each member's, for `--model auto`) and `output_settings(config)`."""
    model = (
        dataclasses.asdict(spec)
        if isinstance(spec, ModelSpec)
        else [dataclasses.asdict(s) for s in spec]
    )
    identity = {
        "format": _FORMAT,
        "model": model,
        "settings": output_settings(config),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class Resume:
    """Resume state of one run's output prefix."""

    output: str
    settings: str  # settings_digest of the run
    force: bool = False
    kms_key: str = ""  # outputs.kms_key: state records are encrypted like the outputs

    def fingerprint(self, source_sha256: str, row_settings: RowSettings = ()) -> str:
        """The identity of one row's outputs (source, run settings, the row's own settings)."""
        text = f"{source_sha256}:{self.settings}:{json.dumps(sorted(row_settings))}"
        return hashlib.sha256(text.encode()).hexdigest()

    def state_uri(self, key: str) -> str:
        """Where the state record of output key `key` lives."""
        uri: str = OutputLayout(self.output).state(key)
        return uri

    def current(
        self, key: str, source_sha256: str, row_settings: RowSettings = ()
    ) -> dict[str, str] | None:
        """The outputs recorded for key when they are current; None means: process the row."""
        if self.force:
            return None
        try:
            record = json.loads(read_bytes(self.state_uri(key)))
        except (NotFound, ValueError):  # absent or unreadable: the row is redone
            return None
        if not isinstance(record, dict):  # null, [], "x": not a record of ours, redo the row
            return None
        if record.get("fingerprint") != self.fingerprint(source_sha256, row_settings):
            return None
        recorded = record.get("outputs")
        if not isinstance(recorded, dict) or not recorded:
            return None
        outputs: dict[str, str] = {}
        for column, path in recorded.items():
            uri = self._resolve(path)
            if uri is None or not exists(uri):
                return None
            outputs[str(column)] = uri
        return outputs

    def _resolve(self, path: object) -> str | None:
        """A recorded output as a URI under this prefix; None when it is not one: outside the
        prefix (an absolute path into another folder), a `..` segment."""
        prefix = self.output.rstrip("/") + "/"
        if not isinstance(path, str):
            return None
        if path.startswith(prefix):  # absolute, as earlier versions recorded
            path = path[len(prefix) :]
        parts = path.split("/")
        if not path or "://" in path or path.startswith("/") or ".." in parts:
            return None
        return prefix + path

    def record(
        self,
        key: str,
        source_sha256: str,
        outputs: dict[str, str],
        row_settings: RowSettings = (),
    ) -> None:
        """Record that key's `outputs` (URIs under the output prefix) are complete (call after
        writing them); they are kept relative to the prefix."""
        prefix = self.output.rstrip("/") + "/"
        relative = {}
        for column, uri in outputs.items():
            if not uri.startswith(prefix):
                raise ValueError(f"{uri}: not under the output prefix {prefix}")
            relative[column] = uri[len(prefix) :]
        state = {
            "fingerprint": self.fingerprint(source_sha256, row_settings),
            "source_sha256": source_sha256,
            "outputs": relative,
        }
        data = json.dumps(state, sort_keys=True).encode()
        write_atomic(self.state_uri(key), data, kms_key=self.kms_key)
