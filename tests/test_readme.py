"""The README's code is real: its Python block is the quick-start example, and it runs."""

from __future__ import annotations

import re
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
