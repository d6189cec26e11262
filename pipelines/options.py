"""Command-line options of matteflow jobs; runner settings stay standard Beam flags."""

from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions

__all__ = ["MatteflowOptions"]


class MatteflowOptions(PipelineOptions):
    """--manifest, --output, --profile, --model, --force, --max_failure_rate, --set,
    --allow_source, --allow_private_sources."""

    @classmethod
    def _add_argparse_args(cls, parser) -> None:  # type: ignore[no-untyped-def]
        parser.add_argument(
            "--manifest", help="CSV/JSONL/Parquet manifest or a glob (local, gs://, s3://)"
        )
        parser.add_argument("--output", help="output prefix (local folder, gs://, s3://)")
        parser.add_argument("--profile", default=None, help="TOML profile (default: local)")
        parser.add_argument("--model", default=None, help="registry model name")
        parser.add_argument(
            "--force", action="store_true", help="redo rows whose outputs are already current"
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
