"""CSV files that matteflow writes for people and for later runs (the review list, labelled-set
manifests): cells a spreadsheet would run as a formula are neutralised on the way out, and
ReadManifest takes them back in (issue 17, item 14).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence

from matteflow.transforms.storage import write_atomic

__all__ = ["neutral_cell", "restore_cell", "write_csv"]

# What makes a spreadsheet (Excel, LibreOffice, Sheets) read a cell as a formula (OWASP, "CSV
# injection"): =, +, - and @ first, and tab or carriage return before one of them.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def neutral_cell(value: str) -> str:
    """value with a "'" in front when a spreadsheet would take it for a formula: it starts
    with =, +, -, @, tab or carriage return and is not a plain number ("-0.5" stays)."""
    if value.startswith(_FORMULA_STARTS) and not _is_number(value):
        return f"'{value}"
    return value


def restore_cell(value: str) -> str:
    """neutral_cell undone: the "'" before a formula start is dropped ("'=x" reads "=x")."""
    if value.startswith("'") and neutral_cell(value[1:]) != value[1:]:
        return value[1:]
    return value


def write_csv(uri: str, header: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    """Write a header and rows of text cells to uri (atomically), each cell through
    neutral_cell."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([neutral_cell(c) for c in header])
    writer.writerows([neutral_cell(c) for c in row] for row in rows)
    write_atomic(uri, buf.getvalue().encode())
