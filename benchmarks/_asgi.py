"""Raw ASGI pieces for the in-process measures: a trivial app, scopes, and the wrappers.

Every app here is called the way a server calls it (a fresh scope dict per request,
with a fresh path string, so the route lookup hashes it as it would in production),
and each wrapper is built the way its library's users build it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from types import MethodType
from typing import Any

import peers
from starlette.applications import Starlette
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import Response

import graceshut
from graceshut.asgi import (
    GracefulShutdownMiddleware,
    LivenessEndpoint,
    ReadinessEndpoint,
    ShutdownEndpoint,
)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

START: Message = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"text/plain"), (b"content-length", b"2")],
}
BODY: Message = {"type": "http.response.body", "body": b"ok"}
REQUEST: Message = {"type": "http.request", "body": b"", "more_body": False}

#: Holds the app's state for the wrappers that keep their counter there (svc-infra).
STATE_APP = Starlette()


def make_scope(path: str = "/items/42") -> Scope:
    """A fresh HTTP scope, as a server makes one per request."""
    fresh_path = "".join(path)  # a new str object: its hash is not cached yet
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": fresh_path,
        "raw_path": fresh_path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"bench"), (b"user-agent", b"bench")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "app": STATE_APP,
        "state": {},
    }


async def bare_app(scope: Scope, receive: Receive, send: Send) -> None:
    """The trivial route: a 2-byte response, nothing else."""
    await send(START)
    await send(BODY)


async def receive() -> Message:
    """A request without a body."""
    return REQUEST


async def discard(message: Message) -> None:
    """A server's send that costs nothing."""


class PassThrough:
    """The floor: a pure-ASGI middleware that only calls the app."""

    def __init__(self, app: App) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


class PureCounter:
    """The counter a careful user writes by hand: pure ASGI, no drain, no shedding."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1


class ClosingCounter:
    """The hand counter plus the smallest send wrapper that can say ``Connection: close``.

    The floor of any middleware that keeps the contract's promise that a response started
    after the trigger tells its keep-alive client to reconnect: it must stand between the
    app and the server's ``send`` from the first request on, since the trigger may come
    while a request runs. Built the cheapest way measured (a plain function bound per
    request with `types.MethodType`); no routes, no drain, no shedding.
    """

    def __init__(self, app: App) -> None:
        self.app = app
        self.in_flight = 0
        closing = self.closing = [False]

        def send_closing(send: Send, message: Message) -> Awaitable[None]:
            if closing[0] and message["type"] == "http.response.start":
                message = {**message, "headers": [*message["headers"], (b"connection", b"close")]}
            return send(message)

        self.send_closing = send_closing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, MethodType(self.send_closing, send))
        finally:
            self.in_flight -= 1


class CountingMiddleware(BaseHTTPMiddleware):
    """The counter most users write today: Starlette's BaseHTTPMiddleware."""

    in_flight = 0

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        CountingMiddleware.in_flight += 1
        try:
            return await call_next(request)
        finally:
            CountingMiddleware.in_flight -= 1


def new_coordinator(**settings: float) -> graceshut.Coordinator:
    """A coordinator that ignores GRACESHUT_* variables, for repeatable numbers."""
    values: dict[str, float] = {
        "grace_period": 30.0,
        "safety_margin": 1.0,
        "propagation_delay": 0.0,
    }
    values.update(settings)
    return graceshut.Coordinator(**values, environ={})


def graceshut_middleware(
    app: App,
    coordinator: graceshut.Coordinator | None = None,
    cls: type[GracefulShutdownMiddleware] = GracefulShutdownMiddleware,
) -> GracefulShutdownMiddleware:
    """The middleware (or *cls*, a variant of it) with the routes that `install` adds."""
    coordinator = coordinator or new_coordinator()
    routes: dict[str, Any] = {
        "/shutdown": ShutdownEndpoint(coordinator),
        "/readyz": ReadinessEndpoint(coordinator),
        "/livez": LivenessEndpoint(coordinator),
    }
    return cls(app, coordinator, routes=routes)


def wrappers(app: App) -> dict[str, tuple[App, str]]:
    """Every wrapper measured in-process, by table label: (wrapped app, note)."""
    found: dict[str, tuple[App, str]] = {
        "pass-through middleware": (PassThrough(app), "the floor: calls the app, nothing else"),
        "pure-ASGI counter (by hand)": (PureCounter(app), "counts only: no drain, no shedding"),
        "counter + closing send (by hand)": (
            ClosingCounter(app),
            "the floor of counting with Connection: close",
        ),
        "BaseHTTPMiddleware counter": (CountingMiddleware(app), "the common way today"),
    }
    svc = peers.svc_infra_shutdown()
    if svc is not None:
        STATE_APP.state._inflight_requests = 0  # noqa: SLF001 - what its lifespan sets
        found[f"{peers.label(peers.SVC_INFRA)} InflightTrackerMiddleware"] = (
            svc.InflightTrackerMiddleware(app),
            "pure ASGI, counter on app.state",
        )
    lifecycle = peers.asgi_lifecycle_middleware()
    if lifecycle is not None:
        found[f"{peers.label(peers.ASGI_LIFECYCLE)} LifespanMiddleware"] = (
            lifecycle.LifespanMiddleware(app),
            "passes HTTP through: counts nothing",
        )
    return found


def missing_wrappers() -> list[str]:
    """Peers whose wrapper could not be measured, with how to install them."""
    return [
        peers.missing(name)
        for name, module in (
            (peers.SVC_INFRA, peers.svc_infra_shutdown),
            (peers.ASGI_LIFECYCLE, peers.asgi_lifecycle_middleware),
        )
        if module() is None
    ]
