"""ReadManifest: CSV, JSONL, Parquet and globs -> ImageTask, ids, metadata and validation."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamPipeline  # not collected
from apache_beam.testing.util import assert_that, equal_to

from matteflow.transforms import manifest
from matteflow.transforms.manifest import (
    ManifestError,
    ReadManifest,
    is_glob,
    read_manifest,
    validate,
)
from matteflow.transforms.types import ImageTask

# Beam's `**` matches across folders but the `/` after it is literal, so `imgs/**/*.png`
# only matches files at least one folder below imgs/; every image here sits in a subfolder.
IMAGES = ("a/b/x.png", "c/y.png")


def _write(path: Path, rows: list[dict[str, Any]]) -> str:
    """rows as a manifest whose type follows path's extension; returns its path."""
    if path.suffix == ".csv":
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif path.suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        raise ValueError(path)
    return str(path)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """tmp/data/imgs/{a/b/x.png, c/y.png}: empty files (the manifest never opens images)."""
    for name in IMAGES:
        image = tmp_path / "data" / "imgs" / name
        image.parent.mkdir(parents=True, exist_ok=True)
        image.write_bytes(b"")
    return tmp_path / "data"


def _expected(root: Path) -> list[ImageTask]:
    return [
        ImageTask("a/b/x", f"{root}/imgs/a/b/x.png", "a/b/x"),
        ImageTask("c/y", f"{root}/imgs/c/y.png", "c/y"),
    ]


def test_all_names_exist() -> None:
    assert all(hasattr(manifest, name) for name in manifest.__all__)


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("gs://b/imgs/**/*.jpg", True),
        ("/x/img?.png", True),
        ("/x/[ab].png", True),
        ("/x/manifest.csv", False),
        ("gs://b/m.parquet", False),
    ],
)
def test_is_glob(uri: str, expected: bool) -> None:
    assert is_glob(uri) is expected


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_manifest_types_give_the_same_tasks(root: Path, suffix: str) -> None:
    # Relative uris resolve against the manifest's folder (root), not the working directory.
    rows = [{"uri": f"imgs/{name}"} for name in IMAGES]
    assert read_manifest(_write(root / f"manifest{suffix}", rows)) == _expected(root)


def test_glob_gives_the_same_tasks(root: Path) -> None:
    assert read_manifest(f"{root}/imgs/**/*.png") == _expected(root)


def test_ids_keep_subfolders_below_the_common_folder(tmp_path: Path) -> None:
    rows = [{"uri": "imgs/a/b/x.png"}, {"uri": "imgs/z.jpeg"}]
    tasks = read_manifest(_write(tmp_path / "m.csv", rows))
    assert [t.id for t in tasks] == ["a/b/x", "z"]


def test_ids_of_object_store_uris_are_relative_to_their_common_folder(tmp_path: Path) -> None:
    rows = [{"uri": "gs://bucket/imgs/a/b/x.jpg"}, {"uri": "gs://bucket/imgs/c.jpg"}]
    tasks = read_manifest(_write(tmp_path / "m.jsonl", rows))
    assert [(t.id, t.source_uri) for t in tasks] == [
        ("a/b/x", "gs://bucket/imgs/a/b/x.jpg"),
        ("c", "gs://bucket/imgs/c.jpg"),
    ]


def test_columns_map_to_task_fields_and_extras_to_metadata(tmp_path: Path) -> None:
    rows = [
        {
            "uri": "i/1.png",
            "id": "first",
            "output_key": "shop/1",
            "ground_truth_uri": "gt/1.png",
            "shop": "x",
            "sku": 17,
        },
        {
            "uri": "/abs/2.png",
            "id": "",
            "output_key": "",
            "ground_truth_uri": "",
            "shop": "y",
            "sku": None,
        },
    ]
    tasks = read_manifest(_write(tmp_path / "m.jsonl", rows))
    assert tasks == [
        ImageTask(
            "first",
            f"{tmp_path}/i/1.png",
            "shop/1",
            f"{tmp_path}/gt/1.png",
            (("shop", "x"), ("sku", "17")),
        ),
        # Empty id/output_key fall back to defaults (relative to the common folder, here "/");
        # absolute uris are kept as they are.
        ImageTask("abs/2", "/abs/2.png", "abs/2", None, (("shop", "y"), ("sku", ""))),
    ]


def test_relative_and_absolute_uris_mix_in_a_manifest_named_without_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    _write(tmp_path / "m.csv", [{"uri": "a.png"}, {"uri": "/abs/b.png"}])
    tasks = read_manifest("m.csv")
    assert [t.source_uri for t in tasks] == ["a.png", "/abs/b.png"]
    assert len({t.id for t in tasks}) == 2


def test_csv_with_byte_order_mark_still_finds_uri(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("uri,id\nimgs/1.png,one\n", encoding="utf-8-sig")
    assert [t.id for t in read_manifest(str(path))] == ["one"]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_missing_uri_column_names_the_columns(tmp_path: Path, suffix: str) -> None:
    path = _write(tmp_path / f"m{suffix}", [{"path": "a.png", "shop": "x"}])
    with pytest.raises(ManifestError, match=r"no `uri` column \(columns: path, shop\)"):
        read_manifest(path)


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("m.txt", b"uri\na.png\n"),
        ("m.jsonl", b'{"uri": "a.png"}\n{not json\n'),
        ("m.parquet", b"not parquet"),
    ],
)
def test_unreadable_manifests_raise_manifest_error(
    tmp_path: Path, name: str, content: bytes
) -> None:
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ManifestError, match=name):
        read_manifest(str(tmp_path / name))


def test_missing_manifest_raises_manifest_error(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="cannot read the manifest"):
        read_manifest(str(tmp_path / "absent.csv"))


def test_validate_counts_rows(root: Path) -> None:
    assert validate("m", _expected(root)) == 2


@pytest.mark.parametrize(
    ("rows", "field"),
    [
        ([{"uri": "a/x.png"}, {"uri": "b/x.png", "id": "a/x"}], "id"),
        ([{"uri": "a.png", "output_key": "k"}, {"uri": "b.png", "output_key": "k"}], "output_key"),
    ],
)
def test_validate_rejects_duplicates(
    tmp_path: Path, rows: list[dict[str, str]], field: str
) -> None:
    tasks = read_manifest(_write(tmp_path / "m.jsonl", rows))
    with pytest.raises(ManifestError, match=rf"1 duplicate {field} value\(s\)"):
        validate("m.jsonl", tasks)


def test_empty_glob_raises_in_validate(tmp_path: Path) -> None:
    pattern = f"{tmp_path}/nothing/**/*.png"
    with pytest.raises(ManifestError, match="no rows"):
        validate(pattern, read_manifest(pattern))


def test_read_manifest_transform_yields_the_tasks(root: Path) -> None:
    uri = _write(root / "manifest.csv", [{"uri": f"imgs/{name}"} for name in IMAGES])
    with BeamPipeline(runner="FnApiRunner") as p:
        tasks = p | "ReadManifest" >> ReadManifest(uri)
        assert_that(tasks, equal_to(_expected(root)), label="CheckTasks")
