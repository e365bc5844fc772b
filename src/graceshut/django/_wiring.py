"""Django's WSGI and ASGI applications with graceshut around them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._settings import get_coordinator, options

if TYPE_CHECKING:
    from .._core._coordinator import Coordinator
    from .._http._admin import AdminListener
    from .._http._responses import ASGIApp, Receive, Scope, Send
    from ..wsgi import GracefulShutdownMiddleware as WSGIMiddleware


def get_wsgi_application() -> WSGIMiddleware:
    """Django's ``get_wsgi_application()`` inside `graceshut.wsgi`'s middleware.

    Under gunicorn, run with ``-c python:graceshut.gunicorn``.
    """
    from django.core.wsgi import get_wsgi_application as django_wsgi  # noqa: PLC0415

    from ..wsgi import GracefulShutdownMiddleware  # noqa: PLC0415

    application = django_wsgi()  # sets Django up: settings and apps are ready after it
    config = options()
    return GracefulShutdownMiddleware(
        application,
        get_coordinator(),
        token=config["TOKEN"],
        shutdown_path=config["SHUTDOWN_PATH"],
        readiness_path=config["READINESS_PATH"],
        liveness_path=config["LIVENESS_PATH"],
        retry_after=config["RETRY_AFTER"],
        trust_loopback=config["TRUST_LOOPBACK"],
        admin_address=config["ADMIN_ADDRESS"],
    )


def get_asgi_application() -> ASGIApp:
    """Django's ``get_asgi_application()`` inside `graceshut.asgi`'s middleware and routes.

    The returned app also speaks the ASGI lifespan protocol (Django itself refuses it):
    the server's startup installs graceshut's signal handlers, chained to its own, and
    its shutdown runs (or joins) the sequence, as `graceshut.starlette.install` does.
    """
    from django.core.asgi import get_asgi_application as django_asgi  # noqa: PLC0415

    from .._http._admin import AdminListener, parse_admin_address, prometheus_metrics  # noqa: PLC0415
    from ..asgi import (  # noqa: PLC0415
        GracefulShutdownMiddleware,
        LivenessEndpoint,
        ReadinessEndpoint,
        ShutdownEndpoint,
    )

    application = django_asgi()
    config = options()
    coordinator = get_coordinator()
    address = parse_admin_address(config["ADMIN_ADDRESS"])
    guarded = ShutdownEndpoint(
        coordinator, token=config["TOKEN"], trust_loopback=config["TRUST_LOOPBACK"]
    )
    routes: dict[str, Any] = {}
    if config["SHUTDOWN_PATH"] is not None:
        routes[config["SHUTDOWN_PATH"]] = guarded
    if config["READINESS_PATH"] is not None:
        routes[config["READINESS_PATH"]] = ReadinessEndpoint(coordinator)
    if config["LIVENESS_PATH"] is not None:
        routes[config["LIVENESS_PATH"]] = LivenessEndpoint(coordinator)
    middleware = GracefulShutdownMiddleware(
        application, coordinator, routes=routes, retry_after=config["RETRY_AFTER"]
    )
    admin = None
    if address is not None:
        admin = AdminListener(coordinator, guarded, address, metrics=prometheus_metrics())
    return _Lifespan(middleware, coordinator, admin)


class _Lifespan:
    """The lifespan protocol around an app that has none: graceshut's own lifespan."""

    def __init__(self, app: ASGIApp, coordinator: Coordinator, admin: AdminListener | None) -> None:
        self.app = app
        self.coordinator = coordinator
        self.admin = admin

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        await receive()  # lifespan.startup
        try:
            async with self.coordinator.lifespan():
                if self.admin is not None:
                    self.admin.start()  # after the worker group is joined
                await send({"type": "lifespan.startup.complete"})
                await receive()  # lifespan.shutdown
        finally:
            if self.admin is not None:
                self.admin.stop()
        await send({"type": "lifespan.shutdown.complete"})
