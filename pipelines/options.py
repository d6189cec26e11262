"""Command-line options of matteflow jobs; runner settings stay standard Beam flags, given on
the command line or in a profile's `[beam]` table."""

from __future__ import annotations

import argparse
import enum
from dataclasses import dataclass

from apache_beam.options.pipeline_options import PipelineOptions, PortableOptions, StandardOptions

__all__ = ["BeamSettings", "MatteflowOptions", "RunnerKind"]

_LOCAL_RUNNERS = {"directrunner", "fnapirunner", "bundlebaseddirectrunner", "switchingdirectrunner"}


class RunnerKind(enum.Enum):
    """Where a run's steps, and so its model, run."""

    IN_PROCESS = "in_process"  # no --runner: our FnApiRunner, on worker threads of this process
    LOCAL = "local"  # a Beam local runner, or a portable one whose workers loop back here
    REMOTE = "remote"  # workers elsewhere (Dataflow, Flink, Spark, ...)

    @classmethod
    def of(cls, options: PipelineOptions) -> RunnerKind:
        """The kind of runner the options choose."""
        runner = options.view_as(StandardOptions).runner
        if runner is None:
            return cls.IN_PROCESS
        if runner.lower() in _LOCAL_RUNNERS:
            return cls.LOCAL
        loopback = options.view_as(PortableOptions).environment_type == "LOOPBACK"
        return cls.LOCAL if loopback else cls.REMOTE

    @property
    def model_here(self) -> bool:
        """Whether the model runs on this machine (so preflight checks its device here)."""
        return self is not RunnerKind.REMOTE


@dataclass(frozen=True)
class BeamSettings:
    """Beam pipeline options a profile sets (`[beam] args`); the command line's flags come after
    them, so a flag given there wins (repeatable flags such as --experiments add up)."""

    args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for arg in self.args:
            if not arg.startswith("--"):
                raise ValueError(f"args: {arg!r} is not a flag; write '--name=value'")


def _flag(text: str) -> bool:
    """A boolean flag's value: true or false (any case)."""
    if text.lower() not in ("true", "false"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return text.lower() == "true"


class MatteflowOptions(PipelineOptions):
    """--manifest, --output, --profile, --model, --force, --max_failure_rate, --set,
    --subscription, --allow_source, --allow_private_sources."""

    @classmethod
    def _add_argparse_args(cls, parser) -> None:  # type: ignore[no-untyped-def]
        parser.add_argument(
            "--manifest", help="CSV/JSONL/Parquet manifest or a glob (local, gs://, s3://)"
        )
        parser.add_argument("--output", help="output prefix (local folder, gs://, s3://)")
        parser.add_argument("--profile", default=None, help="TOML profile (default: local)")
        parser.add_argument("--model", default=None, help="registry model name")
        parser.add_argument(
            "--force",
            nargs="?",
            const=True,
            default=False,
            type=_flag,
            help="redo rows whose outputs are already current (--force=true|false also works,"
            " as a Flex Template passes it)",
        )
        parser.add_argument(
            "--max_failure_rate",
            type=float,
            default=None,
            help="exit non-zero (3) when more than this share of rows failed (default 1.0)",
        )
        parser.add_argument(
            "--set",
            dest="settings",
            action="append",
            default=None,
            metavar="TABLE.KEY=VALUE",
            help="override one profile setting, e.g. --set outputs.cutout_format=webp"
            " (repeatable; VALUE is read as TOML, else as a string)",
        )
        parser.add_argument(
            "--subscription",
            default=None,
            help="with --streaming: a Pub/Sub subscription (projects/P/subscriptions/S) of Cloud"
            " Storage object-finalize notifications, read instead of polling the --manifest glob",
        )
        parser.add_argument(
            "--allow_source",
            dest="allow_sources",
            action="append",
            default=None,
            metavar="PATTERN",
            help="a source URI pattern rows may read, e.g. 'gs://photos/*' or 'local'"
            " (repeatable; replaces the default: local, gs://*, s3://*; http(s) only if named)",
        )
        parser.add_argument(
            "--allow_private_sources",
            action="store_true",
            help="let http(s) sources resolve to loopback, link-local or private addresses",
        )
