"""Idempotent resume: a state record per output key says which source and settings made it.

`{output}/state/{key}.json` is written after the key's outputs, so it exists only for complete
outputs. A rerun skips a row when the record's fingerprint (sha256 of the source bytes, the
model's identity and the settings that change outputs) matches and every output it lists still
exists; `force` redoes every row.

Which settings change outputs is said where they are defined: a dataclass field marked
`field(metadata=AFFECTS_OUTPUT)` (a whole settings table, or one setting of it) is part of the
fingerprint; `output_settings` collects them, so a new setting is marked, never listed here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from matteflow.models.registry import ModelSpec
from matteflow.transforms.failures import NotFound
from matteflow.transforms.layout import OutputLayout
from matteflow.transforms.storage import exists, read_bytes, write_atomic

__all__ = ["AFFECTS_OUTPUT", "Resume", "output_settings", "settings_digest"]

RowSettings = tuple[tuple[str, str], ...]
_FORMAT = 3  # bump when the output bytes change for the same inputs and settings
AFFECTS_OUTPUT = {"affects_output": True}  # field metadata: the setting changes output bytes


def _plain(value: Any) -> Any:
    """A settings value as JSON-able data."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value


def output_settings(config: Any) -> dict[str, Any]:
    """The settings of a config dataclass that change outputs, by field name: fields marked
    AFFECTS_OUTPUT whole, and the marked fields of nested dataclasses (empty ones left out)."""
    found: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if f.metadata.get("affects_output"):
            found[f.name] = _plain(value)
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            inner = output_settings(value)
            if inner:
                found[f.name] = inner
    return found


def settings_digest(spec: ModelSpec, config: Any) -> str:
    """Digest of everything besides the source that decides the output bytes: the model's
    registry entry and `output_settings(config)` (a run's config)."""
    identity = {
        "format": _FORMAT,
        "model": dataclasses.asdict(spec),
        "settings": output_settings(config),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class Resume:
    """Resume state of one run's output prefix."""

    output: str
    settings: str  # settings_digest of the run
    force: bool = False

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
        if record.get("fingerprint") != self.fingerprint(source_sha256, row_settings):
            return None
        outputs: dict[str, str] = record.get("outputs", {})
        return outputs if outputs and all(exists(uri) for uri in outputs.values()) else None

    def record(
        self,
        key: str,
        source_sha256: str,
        outputs: dict[str, str],
        row_settings: RowSettings = (),
    ) -> None:
        """Record that key's `outputs` are complete (call after writing them)."""
        state = {
            "fingerprint": self.fingerprint(source_sha256, row_settings),
            "source_sha256": source_sha256,
            "outputs": outputs,
        }
        write_atomic(self.state_uri(key), json.dumps(state, sort_keys=True).encode())
