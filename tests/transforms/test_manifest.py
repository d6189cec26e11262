"""ReadManifest: CSV, JSONL, Parquet and globs -> ImageTask, ids, metadata, bad rows."""

from __future__ import annotations

import csv
import json
import threading
from collections import defaultdict
from pathlib import Path
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamPipeline  # not collected
from apache_beam.testing.util import assert_that, equal_to

from matteflow.transforms import manifest
from matteflow.transforms.failures import BadRow
from matteflow.transforms.manifest import (
    ManifestError,
    ReadManifest,
    check_key,
    check_manifest,
    count_rows,
    is_glob,
)
from matteflow.transforms.types import Failed, ImageTask

# Beam's `**` matches across folders but the `/` after it is literal, so `imgs/**/*.png`
# only matches files at least one folder below imgs/; every image here sits in a subfolder.
IMAGES = ("a/b/x.png", "c/y.png")

# Outputs of _read, per call: the in-process runner shares this module with the test.
_SEEN: dict[str, list[Any]] = defaultdict(list)
_LOCK = threading.Lock()


def _keep(item: Any, name: str) -> None:
    with _LOCK:
        _SEEN[name].append(item)


def _read(uri: str) -> tuple[list[ImageTask], list[Failed]]:
    """Run ReadManifest on uri; (tasks sorted by id, failures sorted by id and code)."""
    tag = f"{uri}#{len(_SEEN)}"
    with BeamPipeline(runner="FnApiRunner") as p:
        rows = p | "ReadManifest" >> ReadManifest(uri)
        _ = rows.ok | "KeepTasks" >> beam.Map(_keep, f"{tag}:ok")
        _ = rows.failures | "KeepFailures" >> beam.Map(_keep, f"{tag}:failed")
    tasks = sorted(_SEEN.pop(f"{tag}:ok", []), key=lambda t: t.id)
    failed = sorted(_SEEN.pop(f"{tag}:failed", []), key=lambda f: (f.task.id, f.code))
    return tasks, failed


def _tasks(uri: str) -> list[ImageTask]:
    tasks, failed = _read(uri)
    assert failed == []
    return tasks


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
    assert _tasks(_write(root / f"manifest{suffix}", rows)) == _expected(root)


def test_glob_gives_the_same_tasks(root: Path) -> None:
    assert _tasks(f"{root}/imgs/**/*.png") == _expected(root)


def test_ids_keep_subfolders_below_the_common_folder(tmp_path: Path) -> None:
    rows = [{"uri": "imgs/a/b/x.png"}, {"uri": "imgs/z.jpeg"}]
    tasks = _tasks(_write(tmp_path / "m.csv", rows))
    assert [t.id for t in tasks] == ["a/b/x", "z"]


def test_ids_of_object_store_uris_are_relative_to_their_common_folder(tmp_path: Path) -> None:
    rows = [{"uri": "gs://bucket/imgs/a/b/x.jpg"}, {"uri": "gs://bucket/imgs/c.jpg"}]
    tasks = _tasks(_write(tmp_path / "m.jsonl", rows))
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
    tasks = _tasks(_write(tmp_path / "m.jsonl", rows))
    assert sorted(tasks, key=lambda t: t.source_uri) == [
        # Empty id/output_key fall back to defaults (relative to the common folder, here "/");
        # absolute uris are kept as they are.
        ImageTask("abs/2", "/abs/2.png", "abs/2", None, (("shop", "y"), ("sku", ""))),
        ImageTask(
            "first",
            f"{tmp_path}/i/1.png",
            "shop/1",
            f"{tmp_path}/gt/1.png",
            (("shop", "x"), ("sku", "17")),
        ),
    ]


def test_relative_and_absolute_uris_mix_in_a_manifest_named_without_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    _write(tmp_path / "m.csv", [{"uri": "a.png"}, {"uri": "/abs/b.png"}])
    tasks = _tasks("m.csv")
    assert sorted(t.source_uri for t in tasks) == ["/abs/b.png", "a.png"]
    assert len({t.id for t in tasks}) == 2


def test_csv_with_byte_order_mark_still_finds_uri(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("uri,id\nimgs/1.png,one\n", encoding="utf-8-sig")
    assert [t.id for t in _tasks(str(path))] == ["one"]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_missing_uri_column_names_the_columns(tmp_path: Path, suffix: str) -> None:
    path = _write(tmp_path / f"m{suffix}", [{"path": "a.png", "shop": "x"}])
    with pytest.raises(ManifestError, match=r"no `uri` column \(columns: path, shop\)"):
        check_manifest(path)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("m.txt", b"uri\na.png\n", "unknown manifest type"),
        ("m.jsonl", b"{not json\n", "cannot read the manifest"),
        ("m.parquet", b"not parquet", "cannot read the manifest"),
    ],
)
def test_unreadable_manifests_fail_the_check(
    tmp_path: Path, name: str, content: bytes, message: str
) -> None:
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ManifestError, match=message) as info:
        check_manifest(str(tmp_path / name))
    assert name in str(info.value)


def test_missing_manifest_and_empty_glob_fail_the_check(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="cannot read the manifest"):
        check_manifest(str(tmp_path / "absent.csv"))
    with pytest.raises(ManifestError, match="matches no objects"):
        check_manifest(f"{tmp_path}/nothing/**/*.png")


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_count_rows(root: Path, suffix: str) -> None:
    rows = [{"uri": f"imgs/{name}"} for name in IMAGES]
    assert count_rows(_write(root / f"manifest{suffix}", rows)) == 2
    assert count_rows(f"{root}/imgs/**/*.png") == 2


def test_blank_lines_are_not_rows(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_text('\n{"uri": "a.png"}\n\n{"uri": "b.png"}\n\n')
    assert count_rows(str(path)) == 2
    assert [t.id for t in _tasks(str(path))] == ["a", "b"]


def test_unparsable_lines_fail_as_bad_rows(tmp_path: Path) -> None:
    csv_path = tmp_path / "m.csv"
    csv_path.write_text("uri,shop\na.png,x\nb.png,y,extra\n")
    tasks, failed = _read(str(csv_path))
    assert [t.id for t in tasks] == ["a"]
    assert [(f.stage, f.code) for f in failed] == [("manifest", "bad_row")]
    assert "3 fields, the header has 2" in failed[0].message
    jsonl_path = tmp_path / "m.jsonl"
    jsonl_path.write_text('{"uri": "a.png"}\n[1, 2]\n{broken\n')
    tasks, failed = _read(str(jsonl_path))
    assert [t.id for t in tasks] == ["a"]
    assert [(f.stage, f.code) for f in failed] == [("manifest", "bad_row")] * 2
    assert all(f.task.id.startswith("line:") for f in failed)


@pytest.mark.parametrize(
    ("rows", "code"),
    [
        ([{"uri": "a/x.png"}, {"uri": "b/x.png", "id": "a/x"}], "duplicate_id"),
        (
            [{"uri": "a.png", "output_key": "k"}, {"uri": "b.png", "output_key": "k"}],
            "duplicate_output_key",
        ),
    ],
)
def test_every_row_sharing_an_id_or_key_fails(
    tmp_path: Path, rows: list[dict[str, str]], code: str
) -> None:
    rows = [*rows, {"uri": "c.png"}]
    tasks, failed = _read(_write(tmp_path / "m.jsonl", rows))
    assert [t.id for t in tasks] == ["c"]
    assert [(f.stage, f.code) for f in failed] == [("manifest", code)] * 2
    assert "is shared by 2 rows" in failed[0].message


def test_rows_without_uri_or_with_unsafe_keys_fail(tmp_path: Path) -> None:
    rows = [
        {"uri": "", "id": "none", "output_key": ""},
        {"uri": "a.png", "id": "up", "output_key": "../a"},
        {"uri": "b.png", "id": "fine", "output_key": ""},
    ]
    tasks, failed = _read(_write(tmp_path / "m.csv", rows))
    assert [t.id for t in tasks] == ["fine"]
    assert [(f.task.id, f.code) for f in failed] == [("none", "missing_uri"), ("up", "unsafe_key")]


def test_allowed_row_settings_travel_with_the_task_and_bad_ones_fail(tmp_path: Path) -> None:
    rows = [
        {"uri": "a.png", "id": "a", "outputs": "mask,psd", "framing": "crop", "sku": "1"},
        {"uri": "b.png", "id": "b", "outputs": "", "framing": "", "sku": "2"},
        {"uri": "c.png", "id": "c", "outputs": "mask,movie", "framing": "", "sku": "3"},
        {"uri": "d.png", "id": "d", "outputs": "", "framing": "zoom", "sku": "4"},
    ]
    tasks, failed = _read(_write(tmp_path / "m.csv", rows))
    assert [(t.id, t.settings, t.metadata) for t in tasks] == [
        ("a", (("outputs", "mask,psd"), ("framing", "crop")), (("sku", "1"),)),
        ("b", (), (("sku", "2"),)),  # empty cells keep the run's settings
    ]
    assert [(f.task.id, f.code) for f in failed] == [("c", "bad_setting"), ("d", "bad_setting")]
    assert "outputs" in failed[0].message and "framing.mode" in failed[1].message


@pytest.mark.parametrize(
    "key",
    [
        "../x",
        "a/../../x",
        "..",
        "/abs",
        "gs://b/x",
        "file:///etc/passwd",
        "C:x",
        "c:/windows/x",
        "a\x00b",
        "a\nb",
        "a\x7fb",
        "a\u2028b",
        "a\\b",
        "..\\x",
        "",
        "a//b",
        "a/",
        "./a",
        "a/./b",
        "x" * 201,
    ],
)
def test_check_key_refuses_unsafe_keys(key: str) -> None:
    with pytest.raises(BadRow) as info:
        check_key(key)
    assert (info.value.stage, info.value.code) == ("manifest", "unsafe_key")


@pytest.mark.parametrize(
    "key", ["a", "shop/x-1", "deep/er/key.v2", "sku:123", "..a", "été/ü", "x" * 200]
)
def test_check_key_accepts_relative_keys(key: str) -> None:
    check_key(key)


def test_read_manifest_transform_yields_the_tasks(root: Path) -> None:
    uri = _write(root / "manifest.csv", [{"uri": f"imgs/{name}"} for name in IMAGES])
    with BeamPipeline(runner="FnApiRunner") as p:
        rows = p | "ReadManifest" >> ReadManifest(uri)
        assert_that(rows.ok, equal_to(_expected(root)), label="CheckTasks")
        assert_that(rows.failures, equal_to([]), label="CheckNoFailures")


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_ten_thousand_rows_are_read_by_the_runner(root: Path, suffix: str) -> None:
    # 10,000 rows over the two images: distinct ids and keys, shared sources.
    rows = [{"uri": f"imgs/{IMAGES[n % 2]}", "id": f"row-{n:05d}"} for n in range(10_000)]
    uri = _write(root / f"big{suffix}", rows)
    tasks, failed = _read(uri)
    assert failed == []
    assert [t.id for t in tasks] == [f"row-{n:05d}" for n in range(10_000)]
    assert count_rows(uri) == 10_000


@pytest.mark.parametrize("leading", ["\n", "\n\n", "\r\n  \n", "\ufeff\n"])
def test_blank_lines_before_the_csv_header_do_not_make_a_row(tmp_path: Path, leading: str) -> None:
    # Issue 17, item 1: the header line became a phantom failed row.
    path = tmp_path / "m.csv"
    path.write_text(f"{leading}uri,id\nimgs/1.png,one\n\nimgs/2.png,two\n")
    tasks, failed = _read(str(path))
    assert [t.id for t in tasks] == ["one", "two"]
    assert failed == []
    assert count_rows(str(path)) == 2


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("m.csv", b"uri,id,id\na.png,1,2\n"),
        ("m.csv", b"\nuri,shop,uri\na.png,x,b.png\n"),
    ],
)
def test_duplicate_header_names_refuse_the_manifest(
    tmp_path: Path, name: str, content: bytes
) -> None:
    # Issue 17, item 14: the last of two same-named columns used to win silently.
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ManifestError, match=r"column names repeat: (id|uri)"):
        check_manifest(str(tmp_path / name))


def test_duplicate_parquet_columns_refuse_the_manifest(tmp_path: Path) -> None:
    table = pa.Table.from_arrays([pa.array(["a.png"]), pa.array(["b.png"])], names=["uri", "uri"])
    pq.write_table(table, tmp_path / "m.parquet")
    with pytest.raises(ManifestError, match="column names repeat: uri"):
        check_manifest(str(tmp_path / "m.parquet"))


def test_jsonl_records_with_repeated_keys_fail_as_bad_rows(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_text('{"uri": "a.png"}\n{"uri": "b.png", "uri": "c.png"}\n')
    tasks, failed = _read(str(path))
    assert [t.id for t in tasks] == ["a"]
    assert [(f.stage, f.code) for f in failed] == [("manifest", "bad_row")]
    assert "repeats key 'uri'" in failed[0].message


def test_ids_from_uris_hold_no_credentials_or_tokens(tmp_path: Path) -> None:
    # Issue 17, item 12: without an `id` column, user info and signed-URL tokens became ids,
    # and so output, state and review names.
    rows = [
        {"uri": "gs://bucket/imgs/a.jpg?X-Goog-Signature=tok.secret"},
        {"uri": "gs://user:secret@bucket/imgs/b.jpg#frag.secret"},
    ]
    tasks, failed = _read(_write(tmp_path / "m.jsonl", rows))
    assert failed == []
    assert [(t.id, t.output_key) for t in tasks] == [("a", "a"), ("b", "b")]
    rows = [{"uri": "gs://one/x.jpg?sig=a.secret"}, {"uri": "gs://u:secret@two/y.jpg"}]
    tasks, failed = _read(_write(tmp_path / "n.jsonl", rows))  # no common folder: whole URIs
    assert failed == []  # the source keeps what it needs to be read; names never do
    assert [(t.id, t.output_key) for t in tasks] == [("one/x", "one/x"), ("two/y", "two/y")]


def test_cells_we_neutralised_read_back_as_they_were(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("uri,id,note\nimgs/1.png,'=one,'+x\n")
    [task] = _tasks(str(path))
    assert (task.id, task.metadata) == ("=one", (("note", "+x"),))


def test_a_glob_leaves_out_the_runs_own_outputs(root: Path) -> None:
    # Issue 17, item 14: outputs under the globbed folder came back as rows, more each run.
    out = root / "imgs" / "out"
    (out / "cutouts").mkdir(parents=True)
    (out / "cutouts" / "x.png").write_bytes(b"")
    glob = f"{root}/imgs/**/*.png"
    tags = f"{glob}#{len(_SEEN)}"
    with BeamPipeline(runner="FnApiRunner") as p:
        rows = p | "ReadManifest" >> ReadManifest(glob, exclude=str(out))
        _ = rows.ok | "KeepTasks" >> beam.Map(_keep, tags)
    assert sorted(t.id for t in _SEEN.pop(tags)) == ["a/b/x", "c/y"]
    assert count_rows(glob, str(out)) == 2
    assert count_rows(glob) == 3
