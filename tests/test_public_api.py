"""Every public module's ``__all__`` matches what it defines and re-exports."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from types import ModuleType

import pytest

import graceshut

#: Entry points for other programs, not APIs to import from: the command line's API is
#: the command (docs/cli.md), the plugin's is its fixtures.
_NOT_AN_API = {"graceshut.cli", "graceshut.cli.__main__", "graceshut.pytest_plugin"}


def _public_modules() -> list[str]:
    names = ["graceshut"]
    for info in pkgutil.walk_packages(graceshut.__path__, "graceshut."):
        if any(part.startswith("_") for part in info.name.split(".")):
            continue
        if info.name not in _NOT_AN_API:
            names.append(info.name)
    return sorted(names)


def _is_ours(module: ModuleType, value: object) -> bool:
    """Defined in *module*, or (for a package) in one of its private modules."""
    origin = getattr(value, "__module__", None)
    name = module.__name__
    if origin == name:
        return True
    return hasattr(module, "__path__") and str(origin).startswith(f"{name}._")


@pytest.mark.parametrize("name", _public_modules())
def test_all_lists_exactly_the_public_names(name: str) -> None:
    """``__all__`` exists, is sorted, names only what exists, and misses no public name."""
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    assert isinstance(exported, list), f"{name} has no __all__"
    assert exported == sorted(exported), f"{name}.__all__ is not sorted"
    missing = [n for n in exported if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ names what it does not define: {missing}"
    defined = {
        n
        for n, value in vars(module).items()
        if not n.startswith("_")
        and (inspect.isclass(value) or inspect.isfunction(value))
        and _is_ours(module, value)
    }
    unlisted = sorted(defined - set(exported))
    assert not unlisted, f"{name} defines public names missing from __all__: {unlisted}"


def test_the_package_walk_finds_the_integrations() -> None:
    """The walk above reaches the contrib modules (so the drift test covers them)."""
    modules = _public_modules()
    assert "graceshut.contrib.redis" in modules
    assert "graceshut.asgi" in modules
