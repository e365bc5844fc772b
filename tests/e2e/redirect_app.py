"""The demo app behind a moved shutdown route: ``/moved`` redirects (308) to ``/shutdown``.

As when a route was renamed and the old path kept as a redirect: the kubelet follows it
(same host, up to 10), with the hook's headers.
"""

from __future__ import annotations

from typing import Any

from examples.app import app as demo


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "http" and scope["path"] == "/moved":
        await send(
            {
                "type": "http.response.start",
                "status": 308,
                "headers": [(b"location", b"/shutdown"), (b"content-length", b"0")],
            }
        )
        await send({"type": "http.response.body", "body": b""})
        return
    await demo(scope, receive, send)
