"""Tiny JSON responses written straight to ASGI ``send``: no framework on these paths."""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

from .._core._config import ConfigError

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


def check_retry_after(retry_after: object, source: str = "retry_after") -> int | None:
    """*retry_after* if it can be sent as ``Retry-After``: a whole number of seconds, >= 0.

    HTTP allows only digits there (RFC 9110, section 10.2.3): a client reads ``abc``,
    ``-5`` or ``True`` as no header at all, or retries at once. One rule for ASGI and
    WSGI, checked where the argument is given rather than when the first refusal is sent.

    Raises:
        ConfigError: Anything else, naming *source* and the value.
    """
    if retry_after is None:
        return None
    if isinstance(retry_after, bool) or not isinstance(retry_after, int):
        raise ConfigError(
            f"{source}={retry_after!r} must be a whole number of seconds (an int), or None"
        )
    if retry_after < 0:
        raise ConfigError(f"{source}={retry_after!r} must be 0 or more seconds")
    return retry_after


def retry_after_seconds(retry_after: int | None, propagation_delay: float) -> int:
    """``Retry-After`` for a refused request: *retry_after*, else the delay rounded up, >= 1.

    Raises:
        ConfigError: *retry_after* is not a whole number of seconds, 0 or more.
    """
    checked = check_retry_after(retry_after)
    if checked is not None:
        return checked
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
