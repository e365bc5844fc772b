"""One call to wire graceshut into a Starlette or FastAPI app."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from .asgi import GracefulShutdownMiddleware, LivenessEndpoint, ReadinessEndpoint, ShutdownEndpoint

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from ._coordinator import Coordinator

__all__ = ["install"]


def install(
    app: Starlette,
    coordinator: Coordinator,
    *,
    token: str | None = None,
    shutdown_path: str | None = "/shutdown",
    readiness_path: str | None = "/readyz",
    liveness_path: str | None = "/livez",
    signals: bool = True,
    retry_after: int | None = None,
) -> None:
    """Add graceful shutdown to *app*: middleware, routes, signal handlers and lifespan.

    Call it before the server starts (Starlette builds its middleware stack on the
    first call). The app's own lifespan keeps working: its startup runs first, and its
    shutdown runs after graceshut's sequence, so handlers can still use what it opened.

    Args:
        app: A `starlette.applications.Starlette` or `fastapi.FastAPI` app.
        coordinator: The coordinator that runs the sequence.
        token: Bearer token for the shutdown route; default ``GRACESHUT_TOKEN``, and
            without either the route accepts loopback clients only.
        shutdown_path: Path of the shutdown route, or None for no route.
        readiness_path: Path of the readiness probe, or None.
        liveness_path: Path of the liveness probe, or None.
        signals: Install SIGTERM and SIGINT handlers at lifespan startup, chained to the
            server's own.
        retry_after: ``Retry-After`` seconds on requests refused while draining.

    Example::

        app = FastAPI()
        coordinator = graceshut.Coordinator()
        graceshut.starlette.install(app, coordinator)
    """
    routes: dict[str, Any] = {}
    if shutdown_path is not None:
        routes[shutdown_path] = ShutdownEndpoint(coordinator, token=token)
    if readiness_path is not None:
        routes[readiness_path] = ReadinessEndpoint(coordinator)
    if liveness_path is not None:
        routes[liveness_path] = LivenessEndpoint(coordinator)
    app.add_middleware(
        GracefulShutdownMiddleware,
        coordinator=coordinator,
        routes=routes,
        retry_after=retry_after,
    )
    app.router.lifespan_context = _wrap_lifespan(
        app.router.lifespan_context, coordinator, signals=signals
    )


def _wrap_lifespan(
    original: Callable[[Any], contextlib.AbstractAsyncContextManager[Any]],
    coordinator: Coordinator,
    *,
    signals: bool,
) -> Callable[[Any], contextlib.AbstractAsyncContextManager[Any]]:
    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[Any]:
        async with original(app) as state, coordinator.lifespan(signals=signals):
            yield state

    return lifespan
