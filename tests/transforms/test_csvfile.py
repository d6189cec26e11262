"""CSV files we write: formula-looking cells neutralised, and read back as they were."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from matteflow.transforms import csvfile
from matteflow.transforms.csvfile import neutral_cell, restore_cell, write_csv


def test_all_names_exist() -> None:
    assert all(hasattr(csvfile, name) for name in csvfile.__all__)


@pytest.mark.parametrize(
    ("cell", "written"),
    [
        ('=HYPERLINK("http://x","y")', '\'=HYPERLINK("http://x","y")'),
        ("+cmd|'/c calc'!A0", "'+cmd|'/c calc'!A0"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\t=1", "'\t=1"),
        ("\r=1", "'\r=1"),
        ("-0.5", "-0.5"),  # a plain number stays a number
        ("+1", "+1"),
        ("a=b", "a=b"),
        ("'quoted", "'quoted"),
        ("", ""),
    ],
)
def test_formula_cells_are_prefixed_and_read_back(cell: str, written: str) -> None:
    assert neutral_cell(cell) == written
    assert restore_cell(written) == cell


def test_write_csv_neutralises_every_cell(tmp_path: Path) -> None:
    write_csv(str(tmp_path / "x.csv"), ["id", "uri"], [["=1+1", "a.png"], ["b", "@x"]])
    with (tmp_path / "x.csv").open(newline="") as f:
        assert list(csv.reader(f)) == [["id", "uri"], ["'=1+1", "a.png"], ["b", "'@x"]]
