"""bench/photos.py and bench/profile.py's call-graph arithmetic, on real files and a real
profile layout (pstats' dict: key -> (calls, calls, own, cumulative, callers))."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from PIL import Image

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    path = list(sys.path)
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path[:] = path  # profile.py puts bench/ on the path for its own imports
    return module


def test_upscaled_writes_jpegs_of_the_asked_size_and_reuses_them(tmp_path: Path) -> None:
    photos = _load("photos")
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    Image.new("RGB", (200, 100), (10, 20, 30)).save(data / "images" / "a.png")
    (data / "manifest.csv").write_text("id,image\na,images/a.png\n")
    paths = photos.upscaled(data, 2, 0.5, tmp_path / "out")
    assert [p.name for p in paths] == ["000-a.jpg", "001-a.jpg"]
    with Image.open(paths[0]) as img:
        assert img.format == "JPEG"
        assert img.size == (1000, 500)
    before = paths[0].stat().st_mtime_ns
    photos.upscaled(data, 2, 0.5, tmp_path / "out")
    assert paths[0].stat().st_mtime_ns == before


def _stats() -> dict:
    model = ("/x/matteflow/models/registry.py", 151, "__call__")
    block = ("/x/matteflow/models/isnet.py", 62, "forward")
    conv = ("~", 0, "<built-in method torch.conv2d>")
    interpolate = ("/x/torch/nn/functional.py", 1, "interpolate")
    pre = ("/x/matteflow/transforms/inference.py", 36, "preprocess")
    infer = ("/x/matteflow/transforms/inference.py", 124, "_infer")
    return {
        infer: (1, 1, 0.1, 5.0, {}),
        pre: (1, 1, 0.1, 0.5, {infer: ()}),
        model: (1, 1, 0.0, 4.0, {infer: ()}),
        block: (3, 2, 0.5, 4.0, {model: (), block: ()}),  # recursive, as nested modules are
        conv: (9, 9, 3.0, 3.0, {block: ()}),
        interpolate: (2, 2, 0.6, 0.6, {block: (), pre: ()}),
    }


def test_model_only_keeps_what_is_also_called_outside_the_model() -> None:
    profile = _load("profile")
    inside = {key[2] for key in profile._model_only(_stats())}
    assert inside == {"__call__", "forward", "<built-in method torch.conv2d>"}


def test_cumulative_counts_nested_matches_once() -> None:
    profile = _load("profile")
    stats = _stats()
    assert profile._cumulative(stats, profile._is("models/isnet.py", "forward")) == 4.0
    assert profile._cumulative(stats, profile._is("transforms/inference.py", "preprocess")) == 0.5
