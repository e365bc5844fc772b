"""The drain middleware: counts requests, sheds them in the drain, and lets them be ended.

Its HTTP path runs for every request for the life of the pod: it is kept to a few
operations (docs/benchmarks.md has their cost), and everything else is off it.
"""

from __future__ import annotations

import contextlib
import sys
from asyncio import CancelledError, current_task
from collections.abc import Awaitable, Callable, Mapping
from types import MethodType
from typing import TYPE_CHECKING

import anyio

from ._arguments import check_route_path
from ._ending import end_requests
from ._evidence import TrafficEvidence
from ._responses import (
    CONNECTION_CLOSE,
    DRAINING_BODY,
    ASGIApp,
    Message,
    Receive,
    Scope,
    Send,
    retry_after_seconds,
)

if TYPE_CHECKING:
    from .._core._coordinator import Coordinator
    from .._core._tracker import InFlight

GOING_AWAY = 1001
_CONNECTION_LENGTH = len(b"connection")


class GracefulShutdownMiddleware:
    """Counts in-flight requests and WebSockets, and sheds traffic during shutdown.

    - From the first trigger, responses carry ``Connection: close`` (HTTP/1; HTTP/2 has
      no such header).
    - From the drain step, new requests get 503 with ``Retry-After`` and
      ``Connection: close``; open WebSockets are closed with 1001 (going away).
    - What still runs when the coordinator ends it (a stream after ``stream_grace``,
      anything at the drain's deadline) is cancelled: the app's code unwinds, a response
      not yet started is answered 503, one cut mid-body is left incomplete.
    - Requests to *routes* (probes, the shutdown route) are answered by those apps,
      are never refused and never count as in-flight work.

    While serving on asyncio a request costs a dict lookup, two counter updates and one
    send wrapper (a plain function bound to the server's ``send``: no closure, no
    coroutine of its own per message). Everything else takes a slower path.

    Args:
        app: The application to wrap.
        coordinator: The coordinator whose drain step waits for the requests counted here.
        routes: Exact paths answered by their own ASGI app, outside the count.
        retry_after: Seconds for ``Retry-After`` on refused requests; by default the
            propagation delay rounded up, at least 1.

    Raises:
        graceshut.ConfigError: A route's path does not start with ``/``, or
            *retry_after* is not a whole number of seconds, 0 or more.
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
        for path in self.routes:
            check_route_path(path, "routes: path")
        seconds = retry_after_seconds(retry_after, coordinator.settings.propagation_delay)
        self._refusal_headers = [
            (b"content-type", b"application/json"),
            CONNECTION_CLOSE,
            (b"retry-after", str(seconds).encode()),
        ]
        self._refusal_body = DRAINING_BODY
        self._refusal_headers.append((b"content-length", str(len(self._refusal_body)).encode()))
        self._state = coordinator.in_flight
        self._send = _closing_send(self._state)
        self._websockets: set[_WebSocketSession] = set()
        coordinator.on_drain(self._close_websockets)
        coordinator.on_deadline(_end_requests)
        if coordinator.settings.propagation_auto and self._state.evidence is None:
            self._state.evidence = TrafficEvidence(self._state)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection."""
        state = self._state
        # The hot path: an HTTP request while serving on asyncio. Kept to the few
        # operations in the class docstring (docs/benchmarks.md has their cost); the
        # propagation delay's requests take it too, with one more check.
        if scope["type"] == "http" and scope["path"] not in self.routes:
            if state.fast:
                send = MethodType(self._send, send)
            elif state.draining or state.on_trio:
                await self._other(scope, receive, send)
                return
            else:
                # Started after the trigger, in the propagation delay.
                if state.evidence is not None:
                    state.evidence.arrived(scope.get("client"), scope.get("server"))
                if "http_version" not in scope or scope["http_version"] != "2":
                    # Every response closes. (HTTP/2 has no Connection header: a GOAWAY
                    # does its work there.)
                    send = MethodType(_send_closed, send)
            state.started += 1
            try:
                await self.app(scope, receive, send)
            except CancelledError:
                if not _was_cut(state):
                    raise
                await self._answer_cut(send)
            finally:
                state.ended += 1
                if state.watched:
                    await self._settle(send)
            return
        await self._other(scope, receive, send)

    async def _other(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Everything off the hot path: routes, refusals, trio, WebSockets, lifespan."""
        scope_type = scope["type"]
        if scope_type == "http":
            route = self.routes.get(scope["path"])
            if route is not None:
                await route(scope, receive, send)
                return
            state = self._state
            if state.draining:
                state.refused += 1
                await self._refuse(send)
                return
            raw_send = send
            if not state.shutting_down:
                send = MethodType(self._send, send)
            else:
                if state.evidence is not None:
                    state.evidence.arrived(scope.get("client"), scope.get("server"))
                if scope.get("http_version") != "2":
                    send = MethodType(_send_closed, send)
            await self._counted(scope, receive, send, raw_send)
        elif scope_type == "websocket":
            await self._websocket(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _counted(self, scope: Scope, receive: Receive, send: Send, raw_send: Send) -> None:
        """Run one counted connection off the hot path; on trio, inside a cancel scope."""
        state = self._state
        state.enter()
        try:
            if state.on_trio:
                import trio  # noqa: PLC0415 - only reached on trio

                # trio cannot cancel a task from outside: the coordinator finds this
                # scope (by the local's name) when it ends the request.
                with trio.CancelScope() as graceshut_cancel:
                    await self.app(scope, receive, send)
                if graceshut_cancel.cancelled_caught:
                    await self._answer_cut(raw_send)
                    return
            else:
                try:
                    await self.app(scope, receive, send)
                except CancelledError:
                    if not _was_cut(state):
                        raise
                    await self._answer_cut(raw_send)
                    return
            if state.draining and scope["type"] == "http":
                await _complete(raw_send)
        finally:
            state.exit()

    async def _settle(self, send: Send) -> None:
        """After a request on the hot path ended while the drain watches the count."""
        state = self._state
        # Returned (no exception under way) in the drain, and not ended by graceshut.
        if state.draining and sys.exc_info()[0] is None and not _was_cut(state):
            await _complete(send)
        if not state.count and state.waker is not None:
            state.wake()

    async def _refuse(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": 503, "headers": self._refusal_headers})
        await send({"type": "http.response.body", "body": self._refusal_body})

    async def _answer_cut(self, send: Send) -> None:
        """After the coordinator ended this request: 503 if nothing was sent yet.

        A response already under way is left incomplete on purpose: the server closes
        the connection without the end of the body, so the client sees a cut stream,
        not a complete one. Starting a second response raises; that is the signal.
        """
        with contextlib.suppress(Exception):
            await self._refuse(send)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = self._state
        if state.draining:
            state.refused += 1
            # Closing before accept makes the server refuse the handshake.
            await receive()
            await send({"type": "websocket.close", "code": GOING_AWAY})
            return
        session = _WebSocketSession(send)
        self._websockets.add(session)
        try:
            await self._counted(scope, receive, session.send, _ignore)
        finally:
            self._websockets.discard(session)

    async def _close_websockets(self) -> None:
        # All at once: a server whose close waits for the client's answer must not make
        # the drain wait for each socket in turn.
        async with anyio.create_task_group() as tg:
            for session in list(self._websockets):
                tg.start_soon(session.going_away)


def _end_requests(state: InFlight, *, streams_only: bool) -> list[str]:
    """The middleware's ender (`Coordinator.on_deadline`): its requests, found by frame."""
    return end_requests(
        state, GracefulShutdownMiddleware.__call__.__code__, streams_only=streams_only
    )


def _was_cut(state: InFlight) -> bool:
    """Whether graceshut ended the asyncio task running now."""
    if not state.cut:
        return False
    try:
        return current_task() in state.cut
    except RuntimeError:  # on trio, served before the coordinator was attached
        return False


async def _complete(send: Send) -> None:
    """End a response that the app returned from in the drain without ending it.

    A stream that stops on its own when the drain begins (sse-starlette's does) often
    just returns: its client would see a cut stream, and the server log an error.
    Returning was the app's choice, so the body is ended properly. When the response
    was complete (or never started), the server refuses the message: nothing to do.
    """
    with contextlib.suppress(Exception):
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _ignore(message: Message) -> None:
    """Nothing to answer on a WebSocket that was ended: it is closed already."""


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


def _closing_send(state: InFlight) -> Callable[[Send, Message], Awaitable[None]]:
    """The send wrapper of a request started while serving, bound per request to ``send``.

    A plain function bound with `types.MethodType` (a small C object whose calls the
    interpreter specialises), not a `functools.partial` (never specialised on 3.11,
    and costlier to build): this is the largest part of the middleware's cost. The
    trigger may come while the request runs, so the flag is read on every message.
    """

    def send_closing(send: Send, message: Message) -> Awaitable[None]:
        if state.shutting_down:
            return _send_closed(send, message)
        return send(message)

    return send_closing


def _send_closed(send: Send, message: Message) -> Awaitable[None]:
    """The send of a request started after the trigger: its response closes the connection.

    The start message is copied with ``Connection: close`` in place of any Connection
    header of the app's (the app may send the same message, and header list, again).
    This runs for every response while shutting down, so it is written for speed: one
    frame (no helper call), a loop and not a comprehension (a function call of its own
    on 3.11), and only a name of the right length is lowered (ASGI names are lowercase
    already, but not always).
    """
    if message["type"] == "http.response.start":
        old = message.get("headers", ())
        for name, _ in old:
            if len(name) == _CONNECTION_LENGTH and name.lower() == b"connection":
                headers = [h for h in old if h[0].lower() != b"connection"]
                headers.append(CONNECTION_CLOSE)
                break
        else:
            headers = [*old, CONNECTION_CLOSE]
        message = dict(message)
        message["headers"] = headers
    return send(message)
