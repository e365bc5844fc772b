"""Tiny JSON responses written straight to ASGI ``send``: no framework on these paths."""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Headers = Sequence[tuple[bytes, bytes]]

NO_STORE = (b"cache-control", b"no-store")
CONNECTION_CLOSE = (b"connection", b"close")


def json_body(payload: object) -> bytes:
    """Encode *payload* compactly, as every graceshut route answers."""
    return json.dumps(payload, separators=(",", ":")).encode()


DRAINING_BODY = json_body(
    {"error": "shutting down", "detail": "this instance is draining; retry elsewhere"}
)
"""The body of a request refused during the drain, ASGI or WSGI."""


def retry_after_seconds(retry_after: int | None, propagation_delay: float) -> int:
    """``Retry-After`` for a refused request: *retry_after*, else the delay rounded up, >= 1."""
    if retry_after is not None:
        return retry_after
    return max(1, math.ceil(propagation_delay))


async def send_json(
    send: Send, status: int, payload: object, headers: Headers = (), *, head: bool = False
) -> None:
    """Send a whole JSON response (the body left out for HEAD)."""
    body = json_body(payload)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                NO_STORE,
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": b"" if head else body})
