"""The package's layers, as DESIGN.md draws them, checked on the imports themselves.

The core knows no framework, server, integration or tool; the process layer and the
HTTP edge use the core; adapters and contrib use all three. Imports under
``TYPE_CHECKING`` are for the type checker only and do not count.
"""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

import graceshut

PACKAGE = Path(graceshut.__file__).parent
#: The one import across the layers' direction, documented in `_core/_coordinator.py`:
#: the coordinator's lifespan is the process layer's `serving` block.
ALLOWED_UPWARD = {("graceshut._core._coordinator", "graceshut._process._serving")}
MAX_LINES = 400


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(name: str) -> bool:
    return (PACKAGE.parent / name.replace(".", "/")).with_suffix(".py").exists()


def _runtime_imports(path: Path) -> set[str]:
    """Modules of graceshut imported when *path* is imported (not in functions)."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        for item in ast.walk(node):
            if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                break
            if isinstance(item, ast.ImportFrom):
                if item.level:
                    base = package.split(".")[: len(package.split(".")) - item.level + 1]
                    target = ".".join([*base, item.module] if item.module else base)
                else:
                    target = item.module or ""
                if target.startswith("graceshut"):
                    found.add(target)
                    found.update(
                        f"{target}.{alias.name}"
                        for alias in item.names
                        if (PACKAGE.parent / f"{target}.{alias.name}".replace(".", "/"))
                        .with_suffix(".py")
                        .exists()
                    )
            elif isinstance(item, ast.Import):
                found.update(a.name for a in item.names if a.name.startswith("graceshut"))
    return found - {module}


def _graph() -> dict[str, set[str]]:
    return {_module_name(p): _runtime_imports(p) for p in PACKAGE.rglob("*.py")}


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) >= 2 and parts[1] in {"_core", "_process", "_http"} else "outer"


def test_the_core_imports_no_other_layer() -> None:
    """The core imports nothing above it but the one documented tie."""
    wrong = {
        (module, target)
        for module, targets in _graph().items()
        if _layer(module) == "_core"
        for target in targets
        if _layer(target) != "_core" and target != "graceshut"
    }
    assert wrong == ALLOWED_UPWARD


def test_the_process_layer_and_the_edge_do_not_import_upwards() -> None:
    """The process layer uses only the core; the edge only the core and the process."""
    allowed = {"_process": {"_core", "_process"}, "_http": {"_core", "_process", "_http"}}
    wrong = {
        (module, target)
        for module, targets in _graph().items()
        if _layer(module) in allowed
        for target in targets
        if _layer(target) not in allowed[_layer(module)]
    }
    assert wrong == set()


def test_no_import_cycle_at_run_time() -> None:
    """Importing any module never goes round back to itself."""
    graph = _graph()
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if nxt not in graph:
                continue
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    # A package's __init__ re-exporting its own modules is not a cycle of behaviour.
    real = [
        cycle
        for cycle in cycles
        if not any(
            a.startswith(b + ".") or b.startswith(a + ".") for a, b in itertools.pairwise(cycle)
        )
    ]
    assert real == []


def test_no_module_is_over_400_lines() -> None:
    """Each module stays small enough to read in one sitting."""
    long = {
        str(p.relative_to(PACKAGE)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}
