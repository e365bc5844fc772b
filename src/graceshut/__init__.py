"""Graceful shutdown for Python apps on Kubernetes (ASGI and WSGI).

One idempotent, deadline-aware sequence (announce, drain, flush, release, report) that
starts on the first of a preStop call, SIGTERM, SIGINT or the lifespan shutdown.
"""

from __future__ import annotations

import logging
from typing import Any

from ._core._config import ConfigError as ConfigError
from ._core._config import EnvDefault as EnvDefault
from ._core._config import env_default as env_default
from ._core._context import ShutdownContext as ShutdownContext
from ._core._coordinator import Coordinator as Coordinator
from ._core._final import FinalFlushResult as FinalFlushResult
from ._core._logs import install_fallback as _install_fallback
from ._core._phases import Phase as Phase
from ._core._report import FallbackResult as FallbackResult
from ._core._report import HandlerResult as HandlerResult
from ._core._report import Outcome as Outcome
from ._core._report import PhaseResult as PhaseResult
from ._core._report import ShutdownReport as ShutdownReport

__all__ = [
    "ConfigError",
    "Coordinator",
    "EnvDefault",
    "FallbackResult",
    "FinalFlushResult",
    "HandlerResult",
    "Outcome",
    "Phase",
    "PhaseResult",
    "ShutdownContext",
    "ShutdownReport",
    "env_default",
]

# Instead of a NullHandler: warnings, errors and the report reach stderr while the app
# configures no logging, and nothing more once it does (see _logs).
_install_fallback(logging.getLogger("graceshut"))


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from importlib.metadata import version  # noqa: PLC0415 - only when asked

        return version("graceshut")
    raise AttributeError(f"module 'graceshut' has no attribute {name!r}")
