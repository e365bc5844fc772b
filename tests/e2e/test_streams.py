"""Long-lived traffic under real servers: streams, SSE, long-polls and background work
end on time, and the process exits inside the grace period with its lifespan shutdown.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.asgi_servers import Server, free_port

pytestmark = pytest.mark.e2e

GRACE = 6.0
PROPAGATION = 1.5
STREAM_GRACE = 1.0
SETTINGS = {
    "GRACESHUT_GRACE_PERIOD": str(GRACE),
    "GRACESHUT_SAFETY_MARGIN": "1",
    "GRACESHUT_PROPAGATION_DELAY": str(PROPAGATION),
    "GRACESHUT_STREAM_GRACE": str(STREAM_GRACE),
}
APP = "tests.e2e.streams_app:app"


def _argv(kind: str, port: int) -> list[str]:
    python = sys.executable
    return {
        "uvicorn": [python, "-m", "uvicorn", APP, "--port", str(port)],
        "gunicorn": [
            python, "-m", "gunicorn", APP, "-k", "uvicorn_worker.UvicornWorker",
            "-w", "1", "-b", f"127.0.0.1:{port}",
        ],
        "hypercorn-asyncio": [python, "-m", "tests.e2e.streams_app", str(port), "asyncio"],
        "hypercorn-trio": [python, "-m", "tests.e2e.streams_app", str(port), "trio"],
    }[kind]  # fmt: skip


class Reader(threading.Thread):
    """Reads one response to its end in the background: how it ended, and when."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.status: int | None = None
        self.chunks = 0
        self.ended_at: float | None = None
        self.error: str | None = None
        self.started = threading.Event()
        self.start()

    def run(self) -> None:
        try:
            with httpx.stream("GET", self.url, timeout=httpx.Timeout(30, connect=5)) as response:
                self.status = response.status_code
                self.started.set()
                for _ in response.iter_raw():
                    self.chunks += 1
        except httpx.HTTPError as exc:
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.ended_at = time.monotonic()
            self.started.set()

    def complete(self) -> bool:
        return self.ended_at is not None and self.error is None


def _events(path: Path) -> list[tuple[str, float]]:
    if not path.exists():
        return []
    lines = [line.split() for line in path.read_text().splitlines() if line]
    return [(name, float(at)) for name, at in lines]


@pytest.fixture
def streams_server(tmp_path: Path) -> Iterator[Callable[[str], Server]]:
    servers: list[Server] = []

    def start(kind: str) -> Server:
        port = free_port()
        server = Server(_argv(kind, port), port, tmp_path / f"{kind}.events", SETTINGS)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.mark.parametrize("kind", ["uvicorn", "gunicorn", "hypercorn-asyncio", "hypercorn-trio"])
def test_long_lived_traffic_ends_and_the_process_exits_inside_the_grace_period(
    streams_server: Callable[[str], Server], kind: str
) -> None:
    """Streams, SSE, a long-poll and background work end on time; exit before the grace period."""
    server = streams_server(kind)
    stream = Reader(f"{server.url}/stream")
    sse = Reader(f"{server.url}/sse")
    poll = Reader(f"{server.url}/poll")
    for reader in (stream, sse):
        assert reader.started.wait(10), f"{reader.url} did not start:\n{server.output()}"
    assert httpx.get(f"{server.url}/background?seconds=3").status_code == 200
    assert httpx.get(f"{server.url}/spawn?seconds=3").status_code == 200
    time.sleep(0.3)  # the long-poll's request is in

    server.signal(signal.SIGTERM)
    sent = time.monotonic()
    status = server.wait_exit(timeout=GRACE + 10)
    exited = time.monotonic() - sent
    for reader in (stream, sse, poll):
        reader.join(5)
    events = dict(_events(server.events))
    order = [name for name, _ in _events(server.events)]
    output = server.output()
    timings = {
        "exit": exited,
        "stream": (stream.ended_at or 0) - sent,
        "sse": (sse.ended_at or 0) - sent,
        "poll": (poll.ended_at or 0) - sent,
    }
    print(f"{kind}: " + ", ".join(f"{k} {v:.2f}s" for k, v in timings.items()))

    assert exited < GRACE, f"exited {exited:.2f}s after SIGTERM:\n{output}"
    assert status in (0, 1), output
    assert "lifespan-shutdown" in events, output
    assert {"stream-finally", "sse-finally", "poll-finally"} <= events.keys(), order
    # The endless stream ignored the drain: cut after stream_grace, and it shows.
    assert stream.error is not None, "a stream cut by graceshut looked complete"
    # After its grace, before the deadline (the budget: GRACE less the margin).
    assert PROPAGATION + STREAM_GRACE - 0.5 < timings["stream"] < GRACE - 1
    # The long-poll was answered (503) or cut at the drain's end, before the flush.
    assert order.index("poll-finally") < order.index("flush"), order
    # Background work finished before the flush phase, not cut as a stream.
    assert order.index("background-done") < order.index("flush"), order
    assert order.index("spawned-done") < order.index("flush"), order
    assert "abandoned" in output or "ended" in output
    if kind == "hypercorn-trio":
        # sse-starlette watches for the shutdown with asyncio only: on trio its stream
        # is one more stream, ended after stream_grace, in the drain.
        assert order.index("sse-finally") < order.index("flush"), order
    else:
        # sse-starlette saw the drain begin and ended its stream cleanly (a stream cut
        # after stream_grace would not be complete).
        assert sse.complete(), sse.error
        assert order.index("sse-finally") < order.index("flush"), order
    assert timings["sse"] < GRACE - 1, "before the deadline"
