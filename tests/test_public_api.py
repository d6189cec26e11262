"""Every public module of the package declares `__all__`, and every name in it exists."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

PACKAGES = ["matteflow.pipelines", "matteflow.transforms", "matteflow.models"]


def _modules() -> list[str]:
    names = []
    for package in PACKAGES:
        path = importlib.import_module(package).__path__
        names += [f"{package}.{m.name}" for m in pkgutil.iter_modules(path)]
    return sorted(names)


def test_every_package_has_modules() -> None:
    assert {m.rsplit(".", 1)[0] for m in _modules()} == set(PACKAGES)


@pytest.mark.parametrize("name", _modules())
def test_module_declares_all(name: str) -> None:
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    assert exported, f"{name} has no __all__"
    missing = [n for n in exported if not hasattr(module, n)]
    assert missing == []
