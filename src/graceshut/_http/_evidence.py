"""What the traffic says, for ``propagation_delay="auto"``: the rate before, arrivals since.

Nothing here runs per request while serving. The rate before the trigger comes from
the middleware's own count of started requests (`InFlight.arrived`), sampled once a
second by one daemon thread for every app; after the trigger the middleware is off
its fast path anyway, and tells `arrived` about each request. The connections already
open at the trigger are read once from the kernel (`_sockets`): a request on one of
them is not new routing, since each of them was told to close.
"""

from __future__ import annotations

import collections
import threading
import time
import weakref
from collections.abc import Mapping
from typing import Any

from .._core._tracker import InFlight
from .._process._sockets import Peer, established_peers, peer

#: Seconds before the trigger over which the rate is measured.
RATE_WINDOW = 10.0
_EVERY = 1.0


class TrafficEvidence:
    """The `_propagation.Evidence` of an HTTP app, fed by its middleware."""

    def __init__(self, in_flight: InFlight) -> None:
        self._in_flight = in_flight
        self._samples: collections.deque[tuple[float, int]] = collections.deque(
            maxlen=int(RATE_WINDOW / _EVERY) + 2
        )
        self.reset()
        _sampler.add(self)

    def reset(self) -> None:
        """Forget a run; the samples of the traffic go on."""
        self._rate = 0.0
        self._open: frozenset[Peer] | None = None
        self._last: float | None = None

    def sample(self, now: float) -> None:
        """Note how many requests came so far (the sampler thread, once a second)."""
        self._samples.append((now, self._in_flight.arrived))

    def triggered(self) -> None:
        """Measure the rate before now, and note the connections open now."""
        now = time.monotonic()
        arrived = self._in_flight.arrived
        since = [s for s in self._samples if now - s[0] <= RATE_WINDOW + _EVERY]
        if since and now - since[0][0] >= _EVERY:
            self._rate = (arrived - since[0][1]) / (now - since[0][0])
        self._open = established_peers()

    def rate_before(self) -> float:
        """Requests per second over the `RATE_WINDOW` before the trigger."""
        return self._rate

    def last_arrival(self) -> float | None:
        """When the last new request came since the trigger."""
        return self._last

    def arrived(self, client: object, server: object) -> None:
        """A request after the trigger, from *client* to *server* (ASGI's pairs)."""
        known = self._open
        if known is not None and known and _peer_of(client, server) in known:
            return  # on a connection open at the trigger: told to close, not new routing
        self._last = time.monotonic()


def client_and_server(environ: Mapping[str, Any]) -> tuple[object, object]:
    """ASGI's ``client`` and ``server`` pairs of a WSGI request, where the server says."""
    try:
        client = (environ["REMOTE_ADDR"], int(environ["REMOTE_PORT"]))
        server = (environ.get("SERVER_NAME", ""), int(environ["SERVER_PORT"]))
    except (KeyError, TypeError, ValueError):
        return None, None
    return client, server


def _peer_of(client: object, server: object) -> Peer | None:
    if not isinstance(client, (tuple, list)) or not isinstance(server, (tuple, list)):
        return None
    if len(client) < 2 or len(server) < 2:  # noqa: PLR2004 - (host, port)
        return None
    return peer(client[0], client[1], server[1])


class _Sampler:
    """One daemon thread that samples every app's count, started with the first app."""

    def __init__(self) -> None:
        self._evidence: weakref.WeakSet[TrafficEvidence] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def add(self, evidence: TrafficEvidence) -> None:
        evidence.sample(time.monotonic())
        with self._lock:
            self._evidence.add(evidence)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="graceshut-traffic-sampler", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(_EVERY)
            now = time.monotonic()
            for evidence in list(self._evidence):
                evidence.sample(now)


_sampler = _Sampler()
