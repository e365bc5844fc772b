"""Steady load from keep-alive clients, counting every request that did not get an answer.

Each client is a thread with one HTTP/1.1 connection (``http.client``), sending at its
share of the rate. It behaves like a careful production client and no better: it reuses
its connection until the server says ``Connection: close``, checks that an idle
connection has not been closed by the server before reusing it (as urllib3 and httpcore
do), and never retries. A request fails when the connection is refused, reset or closed
without a whole response, when it times out, or when the answer is a 5xx.
"""

from __future__ import annotations

import collections
import dataclasses
import http.client
import select
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from ._actions import describe_error
from ._service import ELSEWHERE, NO_ENDPOINT, POD

USER_AGENT = "graceshut-simulate"
_SAMPLES = 100

REFUSED = "refused"
RESET = "reset"
TIMEOUT = "timeout"
STATUS = "5xx"
ERROR = "error"
KINDS = (REFUSED, RESET, TIMEOUT, STATUS, ERROR)


@dataclasses.dataclass(frozen=True)
class LoadSpec:
    """What load to put on the app."""

    host: str
    port: int
    paths: tuple[str, ...] = ("/",)
    rate: float = 50.0
    """Requests per second over all clients; 0 sends as fast as each client can."""
    concurrency: int = 4
    keep_alive: bool = True
    timeout: float = 10.0
    grpc_unary: tuple[str, ...] = ()
    """gRPC methods (``/package.Service/Method``) called instead of HTTP requests."""
    grpc_stream: tuple[str, ...] = ()
    """Server-streaming gRPC methods, each kept open by a client of its own."""


@dataclasses.dataclass(frozen=True)
class Failure:
    """One failed request."""

    at: float
    kind: str
    detail: str
    path: str


class LoadStats:
    """Counters shared by the clients; read them through `snapshot`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.sent = 0
        self.ok = 0
        self.rerouted = 0
        self.connections = 0
        self.closed_by_server = 0
        self.stale = 0
        self.failures: collections.Counter[str] = collections.Counter()
        self.statuses: collections.Counter[int] = collections.Counter()
        self.samples: list[Failure] = []
        self.latencies: list[float] = []
        self.series: dict[int, collections.Counter[str]] = {}
        """Outcomes per tenth of a second (`time.monotonic` * 10): the timeline picture's."""

    def tick(self, outcome: str) -> None:
        """Count one outcome (ok, refused, failed, rerouted) in the current tenth of a second."""
        with self._lock:
            self.series.setdefault(int(time.monotonic() * 10), collections.Counter())[outcome] += 1

    @property
    def failed(self) -> int:
        """Requests that got no proper answer."""
        with self._lock:
            return sum(self.failures.values())

    def add(self, **counts: int) -> None:
        """Add to the plain counters (``sent``, ``rerouted``, ``connections``...)."""
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)

    def answered(self, status: int, latency: float) -> None:
        """Count a whole response; a 5xx counts as failed too (in `fail`)."""
        with self._lock:
            self.statuses[status] += 1
            if status < 500:  # noqa: PLR2004
                self.ok += 1
                self.latencies.append(latency)
        if status < 500:  # noqa: PLR2004
            self.tick("ok")

    def fail(self, kind: str, detail: str, path: str) -> None:
        """Count a failed request, keeping the first few as samples."""
        with self._lock:
            self.failures[kind] += 1
            if len(self.samples) < _SAMPLES:
                self.samples.append(Failure(time.monotonic(), kind, detail, path))
        self.tick(REFUSED if kind == REFUSED else "failed")

    def snapshot(self) -> dict[str, Any]:
        """A consistent copy of the counters."""
        with self._lock:
            latencies = sorted(self.latencies)
            return {
                "sent": self.sent,
                "ok": self.ok,
                "failed": sum(self.failures.values()),
                "rerouted": self.rerouted,
                "failures": {kind: self.failures[kind] for kind in KINDS},
                "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
                "connections": self.connections,
                "closed_by_server": self.closed_by_server,
                "stale_connections": self.stale,
                "latency_ms": _percentiles(latencies),
            }


class LoadGenerator:
    """Runs the clients until `stop`.

    Args:
        spec: Where and how to send.
        route: Asked before each new connection, where the Service sends it
            (`graceshut.simulate._service`): to this pod; elsewhere, counted as
            ``rerouted`` (answered by another pod) and not sent; or nowhere, a refused
            request (no endpoint).
    """

    def __init__(self, spec: LoadSpec, *, route: Callable[[], str] | None = None) -> None:
        self.spec = spec
        self.stats = LoadStats()
        self._route = route or (lambda: POD)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Start the clients."""
        start = time.monotonic()
        for index in range(self.spec.concurrency):
            thread = threading.Thread(
                target=self._client, args=(index, start), name=f"load-{index}", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def stop(self) -> None:
        """Stop the clients and wait for their last request."""
        self._stop.set()
        for thread in self._threads:
            thread.join(self.spec.timeout + 1)

    def _client(self, index: int, start: float) -> None:
        spec = self.spec
        interval = spec.concurrency / spec.rate if spec.rate > 0 else 0.0
        scheduled = start + index / spec.rate if spec.rate > 0 else start
        connection: http.client.HTTPConnection | None = None
        turn = index
        try:
            while not self._stop.is_set():
                if interval:
                    delay = scheduled - time.monotonic()
                    if delay > 0 and self._stop.wait(delay):
                        break
                    # A client that fell behind sends now, without a burst to catch up.
                    scheduled = max(scheduled + interval, time.monotonic())
                path = spec.paths[turn % len(spec.paths)]
                turn += 1
                if connection is not None and _closed_by_peer(connection):
                    self.stats.add(stale=1)
                    connection.close()
                    connection = None
                if connection is None:
                    if not self._connects(path):
                        if not interval and self._stop.wait(0.01):  # no spinning
                            break
                        continue
                    connection = http.client.HTTPConnection(
                        spec.host, spec.port, timeout=spec.timeout
                    )
                    self.stats.add(connections=1)
                if not self._request(connection, path):
                    connection.close()
                    connection = None
        finally:
            if connection is not None:
                connection.close()

    def _connects(self, path: str) -> bool:
        """Whether the Service sends a new connection to this pod; count it if not."""
        where = self._route()
        if where == ELSEWHERE:
            self.stats.add(rerouted=1)
            self.stats.tick("rerouted")
        elif where != POD:
            self.stats.add(sent=1)
            self.stats.fail(REFUSED, NO_ENDPOINT, path)
        return where == POD

    def _request(self, connection: http.client.HTTPConnection, path: str) -> bool:
        """Send one request; True when the connection can be used again."""
        stats = self.stats
        stats.add(sent=1)
        started = time.monotonic()
        if connection.sock is None:
            try:
                connection.connect()
            except OSError as exc:
                kind = REFUSED if isinstance(exc, ConnectionRefusedError) else _kind(exc)
                stats.fail(kind, describe_error(exc), path)
                return False
        try:
            connection.putrequest("GET", path, skip_accept_encoding=True)
            connection.putheader("User-Agent", USER_AGENT)
            if not self.spec.keep_alive:
                connection.putheader("Connection", "close")
            connection.endheaders()
            response = connection.getresponse()
            response.read()
        except (OSError, http.client.HTTPException) as exc:
            stats.fail(_kind(exc), describe_error(exc), path)
            return False
        stats.answered(response.status, time.monotonic() - started)
        if response.status >= 500:  # noqa: PLR2004
            stats.fail(STATUS, f"HTTP {response.status}", path)
        closing = bool(response.will_close)
        if closing and self.spec.keep_alive:
            stats.add(closed_by_server=1)
        return not closing


def _kind(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return TIMEOUT
    if isinstance(exc, ConnectionRefusedError):
        return REFUSED
    if isinstance(exc, (ConnectionError, http.client.HTTPException)):
        return RESET
    return ERROR


def _closed_by_peer(connection: http.client.HTTPConnection) -> bool:
    """Whether an idle connection is readable: the server closed it (or broke protocol)."""
    sock: socket.socket | None = connection.sock
    if sock is None:
        return True
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    readable, _, _ = select.select([sock], [], [], 0)  # pragma: no cover - no poll()
    return bool(readable)


def _percentiles(ordered: list[float]) -> dict[str, float | None]:
    if not ordered:
        return {"p50": None, "p99": None, "max": None}

    def at(fraction: float) -> float:
        return round(1000 * ordered[min(len(ordered) - 1, int(fraction * len(ordered)))], 1)

    return {"p50": at(0.5), "p99": at(0.99), "max": round(1000 * ordered[-1], 1)}
