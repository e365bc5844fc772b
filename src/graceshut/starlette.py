"""One call to wire graceshut into a Starlette or FastAPI app."""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
import weakref
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Any

from ._http._admin import AdminListener, parse_admin_address, prometheus_metrics
from ._http._arguments import check_install
from .asgi import GracefulShutdownMiddleware, LivenessEndpoint, ReadinessEndpoint, ShutdownEndpoint

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from ._core._coordinator import Coordinator
    from ._http._responses import ASGIApp

__all__ = ["Installation", "install"]


@dataclasses.dataclass(frozen=True)
class Installation:
    """What `install` added to an app: the coordinator, and each route by path."""

    coordinator: Coordinator
    routes: Mapping[str, ASGIApp]
    """The graceshut routes by path; they answer before the app's own routes."""
    shutdown: ShutdownEndpoint | None
    readiness: ReadinessEndpoint | None
    liveness: LivenessEndpoint | None
    signals: bool
    """Whether SIGTERM and SIGINT handlers are installed at lifespan startup."""
    admin: AdminListener | None = None
    """The admin listener, if one was asked for (``serving``: whether this process holds it)."""


_installed: weakref.WeakKeyDictionary[Any, Installation] = weakref.WeakKeyDictionary()


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
) -> Installation:
    """Add graceful shutdown to *app*: middleware, routes, signal handlers and lifespan.

    Call it once, before the server starts (Starlette builds its middleware stack on the
    first call). The app's own lifespan keeps working: its startup runs first, and its
    shutdown runs after graceshut's sequence, so handlers can still use what it opened.
    graceshut's routes answer before the app's: a route of the app on the same path is
    shadowed, with a warning.

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

    Returns:
        What was installed, for tests and for wiring the routes elsewhere.

    Raises:
        RuntimeError: graceshut is already installed on *app*, or the app has started.
        graceshut.ConfigError: An argument (or ``GRACESHUT_*`` variable) that cannot
            work, named in the message: a path without a leading ``/``, two routes on
            one path, a ``retry_after`` that is not a whole number of seconds...

    Example::

        app = FastAPI()
        coordinator = graceshut.Coordinator()
        graceshut.starlette.install(app, coordinator)
    """
    if app in _installed:
        raise RuntimeError(
            "graceshut is already installed on this app: call install() once per app "
            "(a second middleware would count every request twice)"
        )
    # Every argument is checked before anything is added to the app: the middleware
    # itself is only built at the first request.
    check_install(
        shutdown_path=shutdown_path,
        readiness_path=readiness_path,
        liveness_path=liveness_path,
        retry_after=retry_after,
        signals=signals,
        token=token,
        trust_loopback=trust_loopback,
    )
    address = parse_admin_address(admin_address)
    guarded = None  # one endpoint, one pod secret, for the app's route and the admin listener
    if shutdown_path is not None or address is not None:
        guarded = ShutdownEndpoint(coordinator, token=token, trust_loopback=trust_loopback)
    shutdown = guarded if shutdown_path is not None else None
    readiness = ReadinessEndpoint(coordinator) if readiness_path is not None else None
    liveness = LivenessEndpoint(coordinator) if liveness_path is not None else None
    routes: dict[str, Any] = {
        path: endpoint
        for path, endpoint in (
            (shutdown_path, shutdown),
            (readiness_path, readiness),
            (liveness_path, liveness),
        )
        if path is not None
    }
    _warn_about_shadowed_routes(app, routes)
    app.add_middleware(
        GracefulShutdownMiddleware,
        coordinator=coordinator,
        routes=routes,
        retry_after=retry_after,
    )
    admin = None
    if address is not None:
        assert guarded is not None  # noqa: S101 - made above for the listener
        admin = AdminListener(
            coordinator, guarded, address, metrics=prometheus_metrics(admin_registry)
        )
    app.router.lifespan_context = _wrap_lifespan(
        app.router.lifespan_context, coordinator, signals=signals, admin=admin
    )
    installation = Installation(coordinator, routes, shutdown, readiness, liveness, signals, admin)
    _installed[app] = installation
    return installation


def _warn_about_shadowed_routes(app: Starlette, paths: Mapping[str, object]) -> None:
    found = (getattr(route, "path", None) for route in app.routes)
    shadowed = sorted({path for path in found if isinstance(path, str) and path in paths})
    if shadowed:
        warnings.warn(
            f"the app already has routes on {', '.join(shadowed)}: graceshut's answer "
            "first and the app's are never reached; pass other paths to install() "
            "(readiness_path=..., or None to leave one out) to keep the app's",
            UserWarning,
            stacklevel=3,
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
