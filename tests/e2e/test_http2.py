"""HTTP/2 under graceshut's hypercorn runner: a GOAWAY from the announcement on, nothing cut."""

from __future__ import annotations

import concurrent.futures
import signal
import socket
import time
from collections.abc import Callable

import h2.config
import h2.connection
import h2.events
import pytest

from graceshut.cli._run import call_shutdown_route

from ..asgi_servers import Server

pytestmark = pytest.mark.e2e

StartServer = Callable[..., Server]


class Http2Client:
    """One HTTP/2 connection with prior knowledge, frames read as h2 events."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.h2.initiate_connection()
        self.sock.sendall(self.h2.data_to_send())
        self.events: list[tuple[float, h2.events.Event]] = []

    def get(self, path: str) -> int:
        stream_id: int = self.h2.get_next_available_stream_id()
        headers = [(":method", "GET"), (":path", path), (":scheme", "http")]
        self.h2.send_headers(stream_id, [*headers, (":authority", "127.0.0.1")], end_stream=True)
        self.sock.sendall(self.h2.data_to_send())
        return stream_id

    def read_until(self, kind: type[h2.events.Event], timeout: float) -> float:
        """Read until an event of *kind* arrives; the monotonic time it came."""
        deadline = time.monotonic() + timeout
        while True:
            for at, event in self.events:
                if isinstance(event, kind):
                    return at
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no {kind.__name__} in {timeout}s: {self.events}"
            self.sock.settimeout(remaining)
            data = self.sock.recv(65536)
            assert data, f"closed before {kind.__name__}: {self.events}"
            now = time.monotonic()
            self.events.extend((now, event) for event in self.h2.receive_data(data))
            if self.h2.state_machine.state != h2.connection.ConnectionState.CLOSED:
                self.sock.sendall(self.h2.data_to_send())

    def body(self, stream_id: int) -> bytes:
        return b"".join(
            e.data
            for _, e in self.events
            if isinstance(e, h2.events.DataReceived) and e.stream_id == stream_id
        )

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize("kind", ["hypercorn-asyncio", "hypercorn-trio"])
def test_http2_connections_get_a_goaway_at_the_announcement(
    kind: str, start_server: StartServer
) -> None:
    """GOAWAY in the delay: to an idle connection at once, to a busy one with its response."""
    server = start_server(kind, {"GRACESHUT_PROPAGATION_DELAY": "3"})
    idle, busy = Http2Client(server.port), Http2Client(server.port)
    late: Http2Client | None = None
    try:
        first = idle.get("/")
        idle.read_until(h2.events.StreamEnded, 10)
        slow = busy.get("/slow?seconds=2")
        time.sleep(0.3)
        triggered = time.monotonic()
        # Authenticated as the kubelet's exec hook would be (`graceshut prestop`'s client).
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            hook = pool.submit(call_shutdown_route, f"{server.url}/shutdown")
            goaway_at = idle.read_until(h2.events.ConnectionTerminated, 10)
            # The delay is 3 s: a GOAWAY before its end came with the announcement.
            assert goaway_at - triggered < 3.0, "sent at the announcement, not after the delay"
            goaway = next(
                e for _, e in idle.events if isinstance(e, h2.events.ConnectionTerminated)
            )
            assert goaway.error_code == 0
            assert goaway.last_stream_id == first
            # A connection opened after the announcement: no GOAWAY before its first
            # request (it would name stream 0, which httpx takes as a failure), one with
            # its first response.
            late = Http2Client(server.port)
            late_stream = late.get("/")
            late_ended_at = late.read_until(h2.events.StreamEnded, 10)
            assert late.read_until(h2.events.ConnectionTerminated, 10) == late_ended_at
            late_goaway = next(
                e for _, e in late.events if isinstance(e, h2.events.ConnectionTerminated)
            )
            assert late_goaway.last_stream_id == late_stream
            ended_at = busy.read_until(h2.events.StreamEnded, 10)
            assert busy.body(slow) == b"slow ok", "the request in flight was served whole"
            busy_goaway_at = busy.read_until(h2.events.ConnectionTerminated, 10)
            # Read at once with the END_STREAM (one write): a client's next request cannot
            # cross it, however quickly it follows the response.
            assert busy_goaway_at == ended_at, busy.events
            assert busy_goaway_at - triggered < 3.0, "still in the delay, not as hypercorn closes"
            assert hook.result(timeout=20) == 0
    finally:
        idle.close()
        busy.close()
        if late is not None:
            late.close()
    server.signal(signal.SIGTERM)  # the sequence is over: the runner exits at once
    assert server.wait_exit() == 0, server.output()
