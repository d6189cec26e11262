"""The lines a finished batch run prints: counts, failures by code, the review list and the
model's licence class, from its run.json summary."""

from __future__ import annotations

from typing import Any

from matteflow.models.registry import get_spec

__all__ = ["summary_lines"]

_TOP_CODES = 5


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """What a run.json summary tells a person at the end of a run."""
    counts, output = summary["counts"], summary["output"].rstrip("/")
    lines = [
        f"matteflow: {counts['ok']} ok, {counts['skipped']} skipped, {counts['failed']} failed"
        f" of {summary['manifest_rows']} in {summary['wall_s']:.1f}s; outputs in {output}"
        + ("" if summary["reconciled"] else " (WARNING: metrics rows do not match the manifest)")
    ]
    codes = summary.get("failures_by_code") or {}
    if codes:
        top = list(codes.items())[:_TOP_CODES]
        more = len(codes) - len(top)
        lines.append(
            "  failures: "
            + ", ".join(f"{code} {n}" for code, n in top)
            + (f" (and {more} more codes)" if more > 0 else "")
            + f"; every row in {output}/metrics/"
        )
    if summary.get("needs_review"):
        lines.append(
            f"  review: {summary['needs_review']} rows need a look, listed in"
            f" {output}/review/manifest.csv"
        )
    model = summary["model"]
    members = model.get("members") or [model["name"]]
    licences = "; ".join(get_spec(name).weights_license for name in members)
    lines.append(
        f"  model: {model['name']}, licence class: {model['licence_class']}"
        f" (weights licence: {licences})"
    )
    return lines
