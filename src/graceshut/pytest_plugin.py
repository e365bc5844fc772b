"""pytest fixtures for apps that use graceshut; loaded automatically by pytest.

- ``graceshut_serve``: `graceshut.testing.serve`, to run an app's lifespan in a test.
- ``graceshut_fast_env``: test-sized ``GRACESHUT_*`` variables for coordinators created
  during the test (grace period 10 s, safety margin 0.5 s, no propagation delay).

Both are plain (sync) fixtures, so they work with anyio's plugin and with pytest-asyncio.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from . import testing


@pytest.fixture
def graceshut_serve() -> Callable[..., Any]:
    """`graceshut.testing.serve`, to run an app's lifespan in a test (``async with``)."""
    return testing.serve


@pytest.fixture
def graceshut_fast_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Set test-sized ``GRACESHUT_*`` variables for the test; returns what was set."""
    values = {
        "GRACESHUT_GRACE_PERIOD": "10",
        "GRACESHUT_SAFETY_MARGIN": "0.5",
        "GRACESHUT_PROPAGATION_DELAY": "0",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values
