"""Tiny JSON responses written straight to ASGI ``send``: no framework on these paths."""

from __future__ import annotations

import json
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
