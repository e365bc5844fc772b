"""The state every request reads, and waking the drain the moment the last piece ends."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

import anyio

if TYPE_CHECKING:
    from ._propagation import Evidence


class InFlight:
    """The hot state of one coordinator: its flags and its count of running work.

    The middleware reads and bumps these slots directly on the event loop thread, once
    per request: one slotted object read through one attribute, no properties and no
    calls on the way. No lock is needed because every change happens on that one
    thread. `wait_idle` parks on an event that the end of the last piece of work sets,
    so the drain ends without polling.
    """

    __slots__ = (
        "cut",
        "draining",
        "ended",
        "evidence",
        "fast",
        "finished",
        "jobs",
        "jobs_started",
        "named",
        "on_trio",
        "refused",
        "shutting_down",
        "started",
        "waker",
        "watched",
    )

    def __init__(self) -> None:
        self.evidence: Evidence | None = None
        """What tells the propagation delay that routers stopped sending (``auto``)."""
        self.reset()

    def reset(self) -> None:
        """Forget everything, in place: the middleware keeps a reference to this object."""
        # Two counters that only grow, rather than one that goes up and down: the same
        # work per request, and `started` doubles as the count of requests that came,
        # which the propagation delay's evidence reads.
        self.started = 0
        """Requests, WebSockets and tracked jobs started so far."""
        self.ended = 0
        """The same, ended so far."""
        self.jobs_started = 0
        """Tracked jobs started so far: not traffic from a router."""
        self.refused = 0
        """Requests and WebSocket handshakes refused during the drain."""
        self.named: Counter[str] = Counter()
        self.shutting_down = False
        """True from the first trigger on."""
        self.draining = False
        """True from the start of the drain step on."""
        self.on_trio = False
        """Serving on trio: each request gets a cancel scope, so that it can be ended."""
        self.fast = True
        """Neither of the above: the middleware takes its shortest path."""
        self.waker: anyio.Event | None = None
        self.watched = False
        """Someone waits for the count (the drain, `wait_idle`): the end of a request
        takes a slower path that wakes them."""
        #: What graceshut ended on purpose (asyncio tasks, trio cancel scopes): their
        #: cancellation is answered, not propagated.
        self.cut: set[Any] = set()
        #: Cancel scopes of tracked jobs, by scope: ended at the drain's deadline.
        self.jobs: dict[anyio.CancelScope, str] = {}
        #: Tracked jobs that ended by themselves after the first trigger, by name.
        self.finished: Counter[str] = Counter()
        if self.evidence is not None:
            self.evidence.reset()

    @property
    def count(self) -> int:
        """Requests, WebSockets and tracked jobs running now."""
        return self.started - self.ended

    @property
    def arrived(self) -> int:
        """Requests and WebSockets that came so far (tracked jobs left out)."""
        return self.started - self.jobs_started

    def refresh(self) -> None:
        """Recompute `fast` after a flag changed (never on the request path)."""
        self.fast = not (self.shutting_down or self.on_trio)
        self.watched = self.draining or self.waker is not None

    def enter(self) -> None:
        """Count one more piece of work."""
        self.started += 1

    def exit(self) -> None:
        """Count one piece of work as ended; wake the waiters if it was the last."""
        self.ended += 1
        if self.started == self.ended and self.waker is not None:
            self.wake()

    def start_job(self, name: str) -> anyio.CancelScope:
        """Count a tracked job from now; enter the returned scope around its work.

        The drain cancels the scope at its deadline (`_draining`).
        """
        self.enter()
        self.jobs_started += 1
        self.named[name] += 1
        scope = anyio.CancelScope()
        self.jobs[scope] = name
        return scope

    def end_job(self, scope: anyio.CancelScope) -> None:
        """Count the job of *scope* as ended."""
        name = self.jobs.pop(scope)
        if self.shutting_down and not scope.cancel_called:
            self.finished[name] += 1
        self.named[name] -= 1
        if not self.named[name]:
            del self.named[name]
        self.exit()

    def wake(self) -> None:
        """Wake whoever waits for nothing to be in flight (the drain)."""
        waker, self.waker = self.waker, None
        self.watched = self.draining
        if waker is not None:
            waker.set()

    async def wait_idle(self) -> None:
        """Return once nothing is in flight (any number of waiters)."""
        while self.count:
            if self.waker is None:
                self.waker = anyio.Event()
                self.watched = True
            await self.waker.wait()
