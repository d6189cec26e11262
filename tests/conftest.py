"""Shared fixtures: where ../shared is, and a model search path and cache for every test."""

from __future__ import annotations

import csv
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
# ../shared beside the checkout; a git worktree elsewhere names it in MATTEFLOW_SHARED_DIR.
SHARED = Path(os.environ.get("MATTEFLOW_SHARED_DIR") or REPO.parent / "shared")
EVAL_DEV = SHARED / "data" / "eval-dev"
SHARED_MODELS = SHARED / "models"
SAMPLE = REPO / "examples" / "sample"  # the bundled photos


def shrunk_sample(root: Path, names: Sequence[str], width: int = 96) -> Path:
    """A manifest in `root` of the bundled photos `names` shrunk to `width` px wide as PNGs
    (a model sees its own input size whatever the size; small images keep decode, refinement
    and encoding cheap)."""
    for name in names:
        image = Image.open(SAMPLE / name).convert("RGB")
        image.resize((width, width * image.height // image.width)).save(root / f"{name}.png")
    path = root / "manifest.csv"
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([["uri"], *[[f"{name}.png"] for name in names]])
    return path


def model_manifest(path: Path, rows: list[dict[str, str]]) -> str:
    """A CSV manifest at `path` with columns uri, id and model (a row's own model)."""
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["uri", "id", "model"])
        writer.writeheader()
        writer.writerows(rows)
    return str(path)


@pytest.fixture(scope="session")
def calibration(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two bundled photos in a folder of their own: an int8 calibration set."""
    folder = tmp_path_factory.mktemp("calibration")
    for name in ("astronaut.jpg", "coffee.jpg"):
        shutil.copy(SAMPLE / name, folder / name)
    return folder


@pytest.fixture(scope="session", autouse=True)
def model_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Point the model search path at ../shared/models and the cache at a session folder,
    unless the caller (e.g. .ci/run) already set them; the user's own models.toml is never
    read (an empty config folder)."""
    with pytest.MonkeyPatch.context() as mp:
        if not os.environ.get("MATTEFLOW_MODEL_PATH") and SHARED_MODELS.is_dir():
            mp.setenv("MATTEFLOW_MODEL_PATH", str(SHARED_MODELS))
        if not os.environ.get("MATTEFLOW_CACHE_DIR"):
            mp.setenv("MATTEFLOW_CACHE_DIR", str(tmp_path_factory.mktemp("model-cache")))
        mp.setenv("MATTEFLOW_CONFIG_DIR", str(tmp_path_factory.mktemp("config")))
        yield


@pytest.fixture(scope="session")
def real_weights() -> None:
    """Skip unless the real IS-Net weights can be found locally (never downloads)."""
    from matteflow.models.registry import get_spec
    from matteflow.models.weights import find_file

    path, notes = find_file(get_spec("isnet-general-use"))
    if path is None:
        pytest.skip("real IS-Net weights not found locally: " + "; ".join(notes))


@pytest.fixture(scope="session")
def eval_dev() -> Path:
    """The labelled eval-dev folder, or skip."""
    if not (EVAL_DEV / "manifest.csv").is_file():
        pytest.skip(f"{EVAL_DEV} not present")
    return EVAL_DEV
