"""Framework-agnostic ASGI parts: the drain middleware and the probe and shutdown routes.

`graceshut.starlette.install` wires these for Starlette and FastAPI; use them directly
with any other ASGI framework.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._http import _probes
from ._http._middleware import GracefulShutdownMiddleware
from ._http._responses import Receive, Scope, Send, send_json
from ._http._shutdown_route import ShutdownEndpoint

if TYPE_CHECKING:
    from ._core._coordinator import Coordinator

__all__ = [
    "GracefulShutdownMiddleware",
    "LivenessEndpoint",
    "ReadinessEndpoint",
    "ShutdownEndpoint",
]


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
        return _probes.readiness(self.coordinator)


class LivenessEndpoint(_ProbeEndpoint):
    """``/livez``: 200 for as long as the process serves, shutdown included."""

    def answer(self) -> tuple[int, dict[str, object]]:
        """The status code and JSON body for the probe."""
        return _probes.liveness(self.coordinator)


async def _method_not_allowed(send: Send, allowed: tuple[bytes, ...]) -> None:
    await send_json(
        send,
        405,
        {"error": "method not allowed", "allowed": [m.decode() for m in allowed]},
        [(b"allow", b", ".join(allowed))],
    )
