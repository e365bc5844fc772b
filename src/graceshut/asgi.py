"""Framework-agnostic ASGI parts: the drain middleware and the probe and shutdown routes.

`graceshut.starlette.install` wires these for Starlette and FastAPI; use them directly
with any other ASGI framework.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Awaitable, Mapping
from typing import TYPE_CHECKING

import anyio

from ._responses import (
    CONNECTION_CLOSE,
    ASGIApp,
    Message,
    Receive,
    Scope,
    Send,
    json_body,
    send_json,
)
from ._shutdown_route import ShutdownEndpoint

if TYPE_CHECKING:
    from ._coordinator import Coordinator

__all__ = [
    "GracefulShutdownMiddleware",
    "LivenessEndpoint",
    "ReadinessEndpoint",
    "ShutdownEndpoint",
]

GOING_AWAY = 1001


class GracefulShutdownMiddleware:
    """Counts in-flight requests and WebSockets, and sheds traffic during shutdown.

    - From the first trigger, responses carry ``Connection: close``.
    - From the drain step, new requests get 503 with ``Retry-After`` and
      ``Connection: close``; open WebSockets are closed with 1001 (going away).
    - Requests to *routes* (probes, the shutdown route) are answered by those apps,
      are never refused and never count as in-flight work.

    Per request it does O(1) work: a dict lookup, two counter updates, one send wrapper
    (a `functools.partial`, no closure and no coroutine of its own per message).

    Args:
        app: The application to wrap.
        coordinator: The coordinator whose drain step waits for the requests counted here.
        routes: Exact paths answered by their own ASGI app, outside the count.
        retry_after: Seconds for ``Retry-After`` on refused requests; by default the
            propagation delay rounded up, at least 1.
    """

    def __init__(
        self,
        app: ASGIApp,
        coordinator: Coordinator,
        *,
        routes: Mapping[str, ASGIApp] | None = None,
        retry_after: int | None = None,
    ) -> None:
        self.app = app
        self.coordinator = coordinator
        self.routes = dict(routes or {})
        seconds = retry_after
        if seconds is None:
            seconds = max(1, math.ceil(coordinator.settings.propagation_delay))
        self._refusal_headers = [
            (b"content-type", b"application/json"),
            CONNECTION_CLOSE,
            (b"retry-after", str(seconds).encode()),
        ]
        self._refusal_body = json_body(
            {"error": "shutting down", "detail": "this instance is draining; retry elsewhere"}
        )
        self._refusal_headers.append((b"content-length", str(len(self._refusal_body)).encode()))
        self._websockets: set[_WebSocketSession] = set()
        coordinator._add_drain_hook(self._close_websockets)  # noqa: SLF001 - same package

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection."""
        scope_type = scope["type"]
        if scope_type == "http":
            route = self.routes.get(scope["path"])
            if route is not None:
                await route(scope, receive, send)
                return
            coordinator = self.coordinator
            if coordinator._draining:  # noqa: SLF001 - the hot path reads the attribute
                coordinator.in_flight.refused += 1
                await send(
                    {"type": "http.response.start", "status": 503, "headers": self._refusal_headers}
                )
                await send({"type": "http.response.body", "body": self._refusal_body})
                return
            in_flight = coordinator.in_flight
            in_flight.count += 1
            try:
                await self.app(scope, receive, functools.partial(_send_closing, coordinator, send))
            finally:
                in_flight.exit()
        elif scope_type == "websocket":
            await self._websocket(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        coordinator = self.coordinator
        if coordinator._draining:  # noqa: SLF001
            coordinator.in_flight.refused += 1
            # Closing before accept makes the server refuse the handshake.
            await receive()
            await send({"type": "websocket.close", "code": GOING_AWAY})
            return
        session = _WebSocketSession(send)
        self._websockets.add(session)
        coordinator.in_flight.enter()
        try:
            await self.app(scope, receive, session.send)
        finally:
            self._websockets.discard(session)
            coordinator.in_flight.exit()

    async def _close_websockets(self) -> None:
        # All at once: a server whose close waits for the client's answer must not make
        # the drain wait for each socket in turn.
        async with anyio.create_task_group() as tg:
            for session in list(self._websockets):
                tg.start_soon(session.going_away)


class _WebSocketSession:
    """One open WebSocket: what the app sent so far, and closing it on shutdown."""

    __slots__ = ("_send", "accepted", "closed", "closed_by_shutdown")

    def __init__(self, send: Send) -> None:
        self._send = send
        self.accepted = False
        self.closed = False
        self.closed_by_shutdown = False

    async def send(self, message: Message) -> None:
        message_type = message["type"]
        if self.closed_by_shutdown:
            if message_type == "websocket.close":
                return
            from starlette.websockets import WebSocketDisconnect  # noqa: PLC0415 - rare

            raise WebSocketDisconnect(code=GOING_AWAY, reason="server shutting down")
        if message_type == "websocket.accept":
            self.accepted = True
        elif message_type == "websocket.close":
            self.closed = True
        await self._send(message)

    async def going_away(self) -> None:
        if self.closed or not self.accepted:
            return
        self.closed_by_shutdown = True
        # If the client is gone already, the app learns it from receive().
        with contextlib.suppress(Exception):
            await self._send(
                {"type": "websocket.close", "code": GOING_AWAY, "reason": "server shutting down"}
            )


def _send_closing(coordinator: Coordinator, send: Send, message: Message) -> Awaitable[None]:
    """Forward *message*, with ``Connection: close`` on a response started after the trigger.

    A plain function returning the server's awaitable: no coroutine of our own per message.
    """
    if coordinator._shutting_down and message["type"] == "http.response.start":  # noqa: SLF001
        message = _with_connection_close(message)
    return send(message)


def _with_connection_close(message: Message) -> Message:
    headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != b"connection"]
    headers.append(CONNECTION_CLOSE)
    return {**message, "headers": headers}


class _ProbeEndpoint:
    allowed = (b"GET", b"HEAD")

    def __init__(self, coordinator: Coordinator) -> None:
        self.coordinator = coordinator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope.get("method", "GET").encode()
        if method not in self.allowed:
            await _method_not_allowed(send, self.allowed)
            return
        status, payload = self.answer()
        await send_json(send, status, payload, head=method == b"HEAD")

    def answer(self) -> tuple[int, dict[str, object]]:
        raise NotImplementedError


class ReadinessEndpoint(_ProbeEndpoint):
    """``/readyz``: 200 while serving, 503 from the first shutdown trigger on."""

    def answer(self) -> tuple[int, dict[str, object]]:
        """The status code and JSON body for the probe."""
        coordinator = self.coordinator
        if coordinator.pod_triggered():
            phase = coordinator.phase
            return 503, {
                "status": "shutting down",
                "reason": coordinator.reason,
                "phase": phase.value if phase else None,
            }
        return 200, {"status": "ready"}


class LivenessEndpoint(_ProbeEndpoint):
    """``/livez``: 200 for as long as the process serves, shutdown included."""

    def answer(self) -> tuple[int, dict[str, object]]:
        """The status code and JSON body for the probe."""
        return 200, {"status": "alive", "shutting_down": self.coordinator.shutting_down}


async def _method_not_allowed(send: Send, allowed: tuple[bytes, ...]) -> None:
    await send_json(
        send,
        405,
        {"error": "method not allowed", "allowed": [m.decode() for m in allowed]},
        [(b"allow", b", ".join(allowed))],
    )
