from __future__ import annotations

import importlib.util

import pytest

from .asgi_servers import start_server

__all__ = ["start_server"]

_BACKENDS = ["asyncio"] + (["trio"] if importlib.util.find_spec("trio") else [])


@pytest.fixture(params=_BACKENDS)
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Run every anyio test on asyncio and on trio."""
    return str(request.param)
