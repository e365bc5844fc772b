"""One call to wire graceshut into a Starlette or FastAPI app."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from ._admin import AdminListener, parse_admin_address, prometheus_metrics
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
    trust_loopback: bool | None = None,
    admin_address: str | None = None,
    admin_registry: Any = None,
) -> None:
    """Add graceful shutdown to *app*: middleware, routes, signal handlers and lifespan.

    Call it before the server starts (Starlette builds its middleware stack on the
    first call). The app's own lifespan keeps working: its startup runs first, and its
    shutdown runs after graceshut's sequence, so handlers can still use what it opened.

    Args:
        app: A `starlette.applications.Starlette` or `fastapi.FastAPI` app.
        coordinator: The coordinator that runs the sequence.
        token: Bearer token for the shutdown route; default ``GRACESHUT_TOKEN``, and
            without either the route asks for the pod secret, which ``graceshut
            prestop`` finds and sends by itself (see the security page).
        shutdown_path: Path of the shutdown route, or None for no route.
        readiness_path: Path of the readiness probe, or None.
        liveness_path: Path of the liveness probe, or None.
        signals: Install SIGTERM and SIGINT handlers at lifespan startup, chained to the
            server's own.
        retry_after: ``Retry-After`` seconds on requests refused while draining.
        trust_loopback: Also let loopback clients without credentials call the shutdown
            route; default ``GRACESHUT_TRUST_LOOPBACK``, else off. Unsafe behind a
            proxy in the pod that relays over loopback (a plain nginx ``proxy_pass``).
        admin_address: Serve ``/readyz``, ``/livez``, ``/shutdown`` and ``/metrics``
            also on this port (``"9901"``, ``"127.0.0.1:9901"``) or Unix socket
            (``"unix:/run/app/admin.sock"``), one per pod, answering through the whole
            shutdown; default ``GRACESHUT_ADMIN_ADDRESS``, else none.
        admin_registry: The prometheus-client registry that the admin listener's
            ``/metrics`` serves; default the global one.

    Example::

        app = FastAPI()
        coordinator = graceshut.Coordinator()
        graceshut.starlette.install(app, coordinator)
    """
    routes: dict[str, Any] = {}
    address = parse_admin_address(admin_address)
    shutdown = None
    if shutdown_path is not None or address is not None:
        shutdown = ShutdownEndpoint(coordinator, token=token, trust_loopback=trust_loopback)
    if shutdown_path is not None:
        routes[shutdown_path] = shutdown
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
    admin = None
    if address is not None:
        assert shutdown is not None  # noqa: S101 - made above for the listener
        admin = AdminListener(
            coordinator, shutdown, address, metrics=prometheus_metrics(admin_registry)
        )
    app.router.lifespan_context = _wrap_lifespan(
        app.router.lifespan_context, coordinator, signals=signals, admin=admin
    )


def _wrap_lifespan(
    original: Callable[[Any], contextlib.AbstractAsyncContextManager[Any]],
    coordinator: Coordinator,
    *,
    signals: bool,
    admin: AdminListener | None,
) -> Callable[[Any], contextlib.AbstractAsyncContextManager[Any]]:
    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[Any]:
        try:
            async with original(app) as state, coordinator.lifespan(signals=signals):
                if admin is not None:
                    # After the worker group is joined: its answers are pod-wide.
                    admin.start()
                yield state
        finally:
            # Last: it answers through the sequence and the app's own lifespan shutdown,
            # while the server's own listener is already closed.
            if admin is not None:
                admin.stop()

    return lifespan
