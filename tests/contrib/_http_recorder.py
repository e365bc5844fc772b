"""A real HTTP server on 127.0.0.1 that records what it receives, for contrib tests.

It runs `http.server.ThreadingHTTPServer` in a thread, so it answers whatever event
loop (asyncio, trio) or blocking client the code under test uses.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclasses.dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    def json(self) -> Any:
        return json.loads(self.body)


class Recorder:
    """What the server received, and how it should answer the next requests."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.fail_times = 0  # answer the next N requests with fail_status
        self.fail_status = 503
        self.fail_headers: dict[str, str] = {}
        self.status = 200
        self.hang = False  # hold every request until the server stops
        self.released = threading.Event()
        self.lock = threading.Lock()
        self.url = ""

    def answer(self, request: Received) -> tuple[int, dict[str, str]]:
        with self.lock:
            self.received.append(request)
            if self.fail_times:
                self.fail_times -= 1
                return self.fail_status, self.fail_headers
        return self.status, {}


def _handler(recorder: Recorder) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _handle(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            request = Received(
                self.command,
                self.path,
                {k.lower(): v for k, v in self.headers.items()},
                body,
                time.monotonic(),
            )
            status, headers = recorder.answer(request)
            if recorder.hang:
                recorder.released.wait(30)
                return
            reply = json.dumps({"status": status}).encode()
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        do_GET = do_POST = do_PUT = do_DELETE = _handle  # noqa: N815 - http.server's names

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

    return Handler


@contextlib.contextmanager
def serving() -> Iterator[Recorder]:
    """Run a recording server on a free port of 127.0.0.1 until the block ends."""
    recorder = Recorder()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(recorder))
    server.daemon_threads = True
    recorder.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield recorder
    finally:
        recorder.released.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens: connections are refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"
