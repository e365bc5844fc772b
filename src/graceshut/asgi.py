"""Framework-agnostic ASGI parts: the drain middleware and the probe and shutdown routes.

`graceshut.starlette.install` wires these for Starlette and FastAPI; use them directly
with any other ASGI framework.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import ipaddress
import math
from asyncio import CancelledError, current_task
from collections.abc import Awaitable, Callable, Mapping
from types import MethodType
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

import anyio

from ._config import resolve_token
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

if TYPE_CHECKING:
    from ._coordinator import Coordinator
    from ._tracker import InFlight

__all__ = [
    "GracefulShutdownMiddleware",
    "LivenessEndpoint",
    "ReadinessEndpoint",
    "ShutdownEndpoint",
]

GOING_AWAY = 1001
#: Any of these means a proxy relayed the request: it did not come from inside the pod.
_FORWARDING_HEADERS = frozenset(
    {
        b"forwarded",
        b"via",
        b"x-forwarded-for",
        b"x-forwarded-host",
        b"x-forwarded-proto",
        b"x-forwarded-client-cert",
        b"x-real-ip",
        b"x-envoy-external-address",
        b"x-envoy-original-path",
        b"x-request-id",
    }
)


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
        self._state = coordinator.in_flight
        self._send = _closing_send(self._state)
        self._websockets: set[_WebSocketSession] = set()
        coordinator.on_drain(self._close_websockets)

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
            elif "http_version" not in scope or scope["http_version"] != "2":
                # HTTP/2 has no Connection header: a GOAWAY does its work there.
                send = MethodType(self._send, send)
            state.count += 1
            try:
                await self.app(scope, receive, send)
            except CancelledError:
                if current_task() not in state.cut:
                    raise
                await self._answer_cut(send)
            else:
                if state.draining:
                    await _complete(send)
            finally:
                state.count -= 1
                if not state.count and state.waker is not None:
                    state.wake()
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
            if not (state.shutting_down and scope.get("http_version") == "2"):
                send = MethodType(self._send, send)
            await self._counted(scope, receive, send, raw_send)
        elif scope_type == "websocket":
            await self._websocket(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _counted(self, scope: Scope, receive: Receive, send: Send, raw_send: Send) -> None:
        """Run one counted connection off the hot path; on trio, inside a cancel scope."""
        state = self._state
        state.count += 1
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
                    if current_task() not in state.cut:
                        raise
                    await self._answer_cut(raw_send)
                    return
            if state.draining and scope["type"] == "http":
                await _complete(raw_send)
        finally:
            state.exit()

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
    """The send wrapper, built once per middleware and bound per request to ``send``.

    A plain function bound with `types.MethodType` (a small C object whose calls the
    interpreter specialises), not a `functools.partial` (never specialised on 3.11,
    and costlier to build): this is the largest part of the middleware's cost.
    """

    def send_closing(send: Send, message: Message) -> Awaitable[None]:
        # Connection: close on a response started after the trigger.
        if state.shutting_down and message["type"] == "http.response.start":
            message = _with_connection_close(message)
        return send(message)

    return send_closing


def _with_connection_close(message: Message) -> Message:
    # A copy: the app may send the same message (and header list) again. A loop, not a
    # comprehension: on 3.11 a comprehension is a function call of its own.
    old = message.get("headers", ())
    for name, _ in old:
        if name.lower() == b"connection":
            headers = [h for h in old if h[0].lower() != b"connection"]
            headers.append(CONNECTION_CLOSE)
            break
    else:
        headers = [*old, CONNECTION_CLOSE]
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


class ShutdownEndpoint:
    """``/shutdown``: starts the sequence (for a preStop ``httpGet`` hook) and reports.

    ``GET`` or ``POST``. It answers when the sequence is done, 200 with the report as
    JSON; ``?wait=0`` answers 202 at once. Calling it again, or concurrently, joins the
    run under way.

    With a *token* (or ``GRACESHUT_TOKEN``), it needs ``Authorization: Bearer <token>``,
    compared in constant time; without one, it accepts only loopback clients whose
    request was not forwarded by a proxy. A refused call gets 401 or 403 with a JSON
    body that says how to configure access, and starts nothing.
    """

    allowed = (b"GET", b"POST")

    def __init__(self, coordinator: Coordinator, *, token: str | None = None) -> None:
        self.coordinator = coordinator
        resolved = resolve_token(token)
        self._token_digest = _digest(resolved.encode()) if resolved is not None else None

    @property
    def protected_by_token(self) -> bool:
        """Whether a bearer token is required (else: loopback only)."""
        return self._token_digest is not None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one request to the route."""
        method = scope.get("method", "GET").encode()
        if method not in self.allowed:
            await _method_not_allowed(send, self.allowed)
            return
        refusal = self._refusal(scope)
        if refusal is not None:
            status, payload, headers = refusal
            await send_json(send, status, payload, headers)
            return
        wait = _parse_wait(scope.get("query_string", b""))
        if wait is None:
            await send_json(
                send, 400, {"error": "bad query", "detail": "wait must be 0 or 1 (or absent)"}
            )
            return
        coordinator = self.coordinator
        if not wait:
            already = coordinator.shutting_down
            coordinator.attach()
            coordinator.trigger("prestop", pod_wide=True)
            await send_json(
                send,
                202,
                {
                    "status": "already running" if already else "started",
                    "reason": coordinator.reason,
                },
            )
            return
        await coordinator.shutdown("prestop", pod_wide=True)
        await send_json(send, 200, await coordinator.pod_report())

    def _refusal(
        self, scope: Scope
    ) -> tuple[int, dict[str, str], list[tuple[bytes, bytes]]] | None:
        headers = scope.get("headers", ())
        if self._token_digest is not None:
            values = [v for k, v in headers if k.lower() == b"authorization"]
            challenge = [(b"www-authenticate", b'Bearer realm="graceshut"')]
            if len(values) != 1:
                return (
                    401,
                    {
                        "error": "missing credentials" if not values else "ambiguous credentials",
                        "detail": "send exactly one 'Authorization: Bearer <token>' header; in the "
                        "preStop hook, set lifecycle.preStop.httpGet.httpHeaders",
                    },
                    challenge,
                )
            scheme, _, credentials = values[0].strip().partition(b" ")
            credentials = credentials.strip()
            if scheme.lower() != b"bearer" or not credentials:
                return (
                    401,
                    {
                        "error": "malformed credentials",
                        "detail": "expected 'Authorization: Bearer <token>'",
                    },
                    challenge,
                )
            # Digests of equal length make the comparison constant-time whatever the input.
            if not hmac.compare_digest(_digest(credentials), self._token_digest):
                return (
                    403,
                    {
                        "error": "invalid token",
                        "detail": "the bearer token does not match GRACESHUT_TOKEN",
                    },
                    [],
                )
            return None
        if not _is_loopback(scope.get("client")) or any(
            k.lower() in _FORWARDING_HEADERS for k, _ in headers
        ):
            return (
                403,
                {
                    "error": "forbidden",
                    "detail": "without a token the shutdown route accepts loopback clients only; "
                    "set GRACESHUT_TOKEN and send it as 'Authorization: Bearer <token>' "
                    "(lifecycle.preStop.httpGet.httpHeaders), or call it from inside the pod "
                    "with 'graceshut prestop'",
                },
                [],
            )
        return None


def _digest(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


def _is_loopback(client: object) -> bool:
    if not isinstance(client, (tuple, list)) or not client:
        return False
    host = client[0]
    if not isinstance(host, str):
        return False
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def _parse_wait(query_string: bytes) -> bool | None:
    try:
        pairs = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)
    except ValueError:
        return None
    values = [v for k, v in pairs if k == "wait"]
    if not values:
        return True
    if len(values) > 1:
        return None
    return {"1": True, "true": True, "0": False, "false": False}.get(values[0].lower())


async def _method_not_allowed(send: Send, allowed: tuple[bytes, ...]) -> None:
    await send_json(
        send,
        405,
        {"error": "method not allowed", "allowed": [m.decode() for m in allowed]},
        [(b"allow", b", ".join(allowed))],
    )
