"""The WSGI side of the probe and shutdown routes: the same answers as for ASGI.

The probes answer on the request's own thread; the shutdown route is the ASGI
endpoint itself, run on the sequence thread's loop, so that its rules (authentication,
``wait``, the pod's report) have one implementation.
"""

from __future__ import annotations

import http
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ._responses import json_body

if TYPE_CHECKING:
    from ._responses import Message
    from ._shutdown_route import ShutdownEndpoint
    from ._wsgi_runtime import SequenceThread

Environ = dict[str, Any]
StartResponse = Callable[..., Any]

_NO_STORE = ("Cache-Control", "no-store")


class ProbeRoute:
    """A readiness or liveness probe, answered on the request's own thread."""

    def __init__(self, answer: Callable[[], tuple[int, dict[str, object]]]) -> None:
        self.answer = answer

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        if method not in ("GET", "HEAD"):
            return _json(
                start_response,
                405,
                {"error": "method not allowed", "allowed": ["GET", "HEAD"]},
                [("Allow", "GET, HEAD")],
            )
        status, payload = self.answer()
        body = _json(start_response, status, payload)
        return [] if method == "HEAD" else body


class ShutdownRoute:
    """The ASGI shutdown route itself, run on the sequence thread's loop.

    One implementation of the route's rules (authentication, ``wait``, the pod's
    report) for ASGI and WSGI: the WSGI request is handed over as an ASGI scope.
    """

    def __init__(self, endpoint: ShutdownEndpoint, runtime: SequenceThread) -> None:
        self.endpoint = endpoint
        self.runtime = runtime

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        scope = _asgi_scope(environ)
        sent: list[Message] = []

        async def receive() -> Message:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: Message) -> None:
            sent.append(message)

        async def call() -> None:
            await self.endpoint(scope, receive, send)

        self.runtime.run(call)
        start = sent[0]
        status = int(start["status"])
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in start["headers"]]
        start_response(f"{status} {http.HTTPStatus(status).phrase}", headers)
        return [b"".join(m.get("body", b"") for m in sent[1:])]


def _asgi_scope(environ: Environ) -> dict[str, Any]:
    headers = [
        (key[5:].replace("_", "-").lower().encode("latin-1"), str(value).encode("latin-1"))
        for key, value in environ.items()
        if key.startswith("HTTP_")
    ]
    query = environ.get("QUERY_STRING", "")
    if not environ.get("wsgi.multithread") and "wait=" not in query:
        # One request at a time per worker: do not hold it (see the middleware's doc).
        query = f"{query}&wait=0" if query else "wait=0"
    try:
        port = int(environ.get("REMOTE_PORT") or 0)
    except ValueError:
        port = 0
    return {
        "type": "http",
        "method": environ.get("REQUEST_METHOD", "GET"),
        "path": environ.get("PATH_INFO", ""),
        "query_string": query.encode("latin-1"),
        "headers": headers,
        "client": (environ["REMOTE_ADDR"], port) if environ.get("REMOTE_ADDR") else None,
    }


def _json(
    start_response: StartResponse,
    status: int,
    payload: object,
    headers: list[tuple[str, str]] | None = None,
) -> list[bytes]:
    body = json_body(payload)
    start_response(
        f"{status} {http.HTTPStatus(status).phrase}",
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            _NO_STORE,
            *(headers or []),
        ],
    )
    return [body]
