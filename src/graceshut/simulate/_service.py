"""The Service: where kube-proxy sends a new connection once the pod is deleted.

On deletion the EndpointSlice controller keeps the pod in its slices with
``ready: false``, ``serving`` = its readiness and ``terminating: true`` (``ready`` stays
true with ``publishNotReadyAddresses``). kube-proxies learn of it a moment later (the
lag), then send new connections to the other ready pods; when there is none (one
replica, or every pod terminating) they fall back to the serving terminating ones, and
with no serving endpoint at all they reject the connection. Connections already open
keep going to the pod, as through conntrack, until one side closes them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from ._timeline import Timeline

POD = "pod"
"""The new connection goes to this pod."""
ELSEWHERE = "elsewhere"
"""To another ready pod: counted as rerouted, not sent."""
NOWHERE = "nowhere"
"""No endpoint can take it: kube-proxy rejects it (connection refused)."""
NO_ENDPOINT = "no endpoint: kube-proxy rejects the connection (the Service has no serving pod)"


class Endpoints:
    """The Service's view of the pod, as kube-proxy routes new connections.

    Args:
        lag: Seconds from a change (the deletion, the readiness probe's answer) to the
            moment kube-proxies route by it.
        replicas: Pods behind the Service, this one included.
        publish_not_ready: The Service's ``publishNotReadyAddresses``.
        serving: Whether the pod's readiness probe passed at a given moment.
    """

    def __init__(
        self,
        lag: float,
        timeline: Timeline,
        *,
        replicas: int = 2,
        publish_not_ready: bool = False,
        serving: Callable[[float], bool] | None = None,
    ) -> None:
        self.lag = lag
        self.replicas = replicas
        self.publish_not_ready = publish_not_ready
        self.removed_at: float | None = None
        self.kept = 0
        """New connections sent to the pod after the endpoint update."""
        self.rejected = 0
        """New connections rejected for want of a serving endpoint."""
        self._serving = serving or (lambda _: True)
        self._timeline = timeline
        self._lock = threading.Lock()

    @property
    def falls_back(self) -> bool:
        """Whether new connections still come once the update is known."""
        return self.publish_not_ready or self.replicas <= 1

    def deleted(self, at: float) -> None:
        """The pod was deleted at *at*: the kube-proxies know it *lag* seconds later."""
        self.removed_at = at + self.lag
        if self.publish_not_ready:
            detail = (
                "terminating, still ready (publishNotReadyAddresses): new connections "
                "keep coming to this pod"
            )
        elif self.replicas > 1:
            detail = "ready: false, terminating: true: new connections go to the other pods"
        else:
            detail = (
                "ready: false, terminating: true, and no other pod: kube-proxy falls back "
                "to this terminating pod while it is serving (its readiness passes)"
            )
        self._timeline.add("endpoints updated", detail, at=self.removed_at)

    def route(self) -> str:
        """Where a new connection goes now: `POD`, `ELSEWHERE` or `NOWHERE`."""
        now = time.monotonic()
        if self.removed_at is None or now < self.removed_at:
            return POD
        if self.publish_not_ready:
            where = POD
        elif self.replicas > 1:
            return ELSEWHERE
        else:
            where = POD if self._serving(now - self.lag) else NOWHERE
        with self._lock:
            if where == POD:
                self.kept += 1
            else:
                self.rejected += 1
        return where
