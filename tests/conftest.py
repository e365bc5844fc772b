from __future__ import annotations

import importlib.util

import pytest

from .asgi_servers import start_server

__all__ = ["start_server"]

_BACKENDS = ["asyncio"] + (["trio"] if importlib.util.find_spec("trio") else [])


@pytest.fixture(autouse=True)
def _pod_secret_of_its_own(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each test is its own pod: its servers and clients share a pod secret of their own."""
    monkeypatch.setenv("GRACESHUT_SECRET_DIR", str(tmp_path_factory.mktemp("secret")))


@pytest.fixture(params=_BACKENDS)
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Run every anyio test on asyncio and on trio."""
    return str(request.param)
