"""Graceful-shutdown libraries from PyPI, measured beside graceshut where their API allows.

They are installed in the benchmark's own environment (`python benchmarks/run.py setup`,
pinned in `requirements.txt`), never in the project's. Each is imported lazily: a
measure says "not installed" rather than failing when one is missing.

- svc-infra: `install_graceful_shutdown(app)` adds a pure-ASGI in-flight counter
  (`InflightTrackerMiddleware`, on `app.state`) and a lifespan shutdown that polls it
  every 100 ms until it is zero or the grace period is over. Comparable: middleware
  cost, throughput, drain latency, memory per request.
- asgi-lifecycle: `LifespanMiddleware` plus `@lifespan.on_shutdown` hooks, awaited one
  after the other, each under its own timeout. Comparable: middleware cost (it passes
  HTTP through), the handler sequence, concurrency, deadline overshoot.

Looked at and left out, because they are not about ASGI apps: graceful-shutdown 0.1.2
(a context manager that delays SIGINT/SIGTERM for blocking code, through signal.signal)
and graceful-shutdown-py 0.3.0 (a SIGTERM flag object). Neither counts requests, drains,
or runs handlers, so no measure here applies to them.
"""

from __future__ import annotations

import importlib
import logging
from types import ModuleType

from _harness import version_of

SVC_INFRA = "svc-infra"
ASGI_LIFECYCLE = "asgi-lifecycle"
NOT_ASGI = {
    "graceful-shutdown 0.1.2": "signal-delaying context manager for blocking code; no ASGI",
    "graceful-shutdown-py 0.3.0": "a SIGTERM flag object; no requests, drain or handlers",
}


def label(distribution: str) -> str:
    """The peer's name and installed version, for the table."""
    return f"{distribution} {version_of(distribution) or '(missing)'}"


def missing(distribution: str) -> str:
    """What a row says when a peer is not installed."""
    return f"{distribution} not installed: python benchmarks/run.py setup"


def installed() -> list[str]:
    """The peers importable here, with their versions."""
    return [label(name) for name in (SVC_INFRA, ASGI_LIFECYCLE) if version_of(name)]


def svc_infra_shutdown() -> ModuleType | None:
    """svc-infra's graceful-shutdown module, or None when svc-infra is not installed."""
    if version_of(SVC_INFRA) is None:
        return None
    return importlib.import_module("svc_infra.api.fastapi.middleware.graceful_shutdown")


def asgi_lifecycle() -> ModuleType | None:
    """asgi-lifecycle's lifespan module, or None when it is not installed."""
    if version_of(ASGI_LIFECYCLE) is None:
        return None
    # graceshut's logger has a NullHandler and nothing else; give the peer the same, or
    # its records would reach stderr through logging's last-resort handler.
    quiet = logging.getLogger("asgi_lifecycle")
    if not quiet.handlers:
        quiet.addHandler(logging.NullHandler())
        quiet.propagate = False
    return importlib.import_module("asgi_lifecycle.lifespan")


def asgi_lifecycle_middleware() -> ModuleType | None:
    """asgi-lifecycle's middleware module, or None when it is not installed."""
    if version_of(ASGI_LIFECYCLE) is None:
        return None
    return importlib.import_module("asgi_lifecycle.middleware")
