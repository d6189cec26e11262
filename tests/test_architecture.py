"""Imports follow the data flow (docs/architecture.md): a stage of matteflow.transforms imports
only the shared helpers and the stages before it; helpers import only helpers; transforms never
import pipelines, and models import nothing else of ours."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

# The stages in the order an image passes them; arrivals is the streaming alternative to the
# manifest (it makes tasks with the manifest's to_task).
STAGES = ("manifest", "arrivals", "decode", "inference", "refine", "score", "write", "metrics")
# Below every stage: records, errors, storage and the plain functions stages share.
HELPERS = (
    "types",
    "coders",
    "failures",
    "sources",
    "storage",
    "csvfile",
    "reader",
    "layout",
    "resume",
    "settings",
    "framing",
    "encode",
    "colour",
    "resize",
    "matte",
    "foreground",
    "quality",
    "routing",
    "psd",
    "xcf",
    "shadow",
    "raw",
)


def _modules(folder: str) -> list[str]:
    return sorted(p.stem for p in (REPO / folder).glob("*.py") if p.stem != "__init__")


def _imports(path: Path) -> set[str]:
    """Every matteflow module that `path` imports (module-level, in functions, for typing)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.startswith("matteflow.")}


def _rank(module: str) -> int:
    """-1 for a helper, else the stage's place in the flow."""
    return -1 if module in HELPERS else STAGES.index(module)


def test_every_transforms_module_has_a_place_in_the_flow() -> None:
    assert set(_modules("transforms")) == set(STAGES) | set(HELPERS)


@pytest.mark.parametrize("module", _modules("transforms"))
def test_a_module_imports_nothing_later_in_the_flow(module: str) -> None:
    imported = _imports(REPO / "transforms" / f"{module}.py")
    assert not {m for m in imported if m.startswith("matteflow.pipelines")}
    ours = {m.removeprefix("matteflow.transforms.") for m in imported}
    ours = {m for m in ours if "." not in m and m != module}  # transforms modules only
    later = sorted(
        m for m in ours if _rank(m) > _rank(module) or (_rank(module) == -1 and _rank(m) != -1)
    )
    assert later == [], f"{module} imports {later}, which come later in the flow"


@pytest.mark.parametrize("module", _modules("models"))
def test_models_import_nothing_else_of_ours(module: str) -> None:
    imported = _imports(REPO / "models" / f"{module}.py")
    assert {m for m in imported if not m.startswith("matteflow.models")} == set()
