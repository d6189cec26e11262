"""Command-line options of matteflow jobs; runner settings stay standard Beam flags."""

from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions

__all__ = ["MatteflowOptions"]


class MatteflowOptions(PipelineOptions):
    """--manifest, --output, --profile, --model."""

    @classmethod
    def _add_argparse_args(cls, parser) -> None:  # type: ignore[no-untyped-def]
        parser.add_argument(
            "--manifest", help="CSV/JSONL/Parquet manifest or a glob (local, gs://, s3://)"
        )
        parser.add_argument("--output", help="output prefix (local folder, gs://, s3://)")
        parser.add_argument("--profile", default=None, help="TOML profile (default: local)")
        parser.add_argument("--model", default=None, help="registry model name")
