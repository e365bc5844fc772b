"""Framework-agnostic ASGI parts: the drain middleware and the probe and shutdown routes.

`graceshut.starlette.install` wires these for Starlette and FastAPI; use them directly
with any other ASGI framework.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

from ._config import resolve_token
from ._middleware import GracefulShutdownMiddleware
from ._responses import Receive, Scope, Send, send_json

if TYPE_CHECKING:
    from ._coordinator import Coordinator

__all__ = [
    "GracefulShutdownMiddleware",
    "LivenessEndpoint",
    "ReadinessEndpoint",
    "ShutdownEndpoint",
]

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
