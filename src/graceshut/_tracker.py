"""The state every request reads, and waking the drain the moment the last piece ends."""

from __future__ import annotations

from collections import Counter
from typing import Any

import anyio


class InFlight:
    """The hot state of one coordinator: its flags and its count of running work.

    The middleware reads and bumps these slots directly on the event loop thread, once
    per request: one slotted object read through one attribute, no properties and no
    calls on the way. No lock is needed because every change happens on that one
    thread. `wait_idle` parks on an event that the end of the last piece of work sets,
    so the drain ends without polling.
    """

    __slots__ = (
        "count",
        "cut",
        "draining",
        "fast",
        "finished",
        "jobs",
        "named",
        "on_trio",
        "refused",
        "shutting_down",
        "waker",
        "watched",
    )

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget everything, in place: the middleware keeps a reference to this object."""
        self.count = 0
        """Requests, WebSockets and tracked jobs running now."""
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

    def refresh(self) -> None:
        """Recompute `fast` after a flag changed (never on the request path)."""
        self.fast = not (self.shutting_down or self.on_trio)
        self.watched = self.draining or self.waker is not None

    def enter(self) -> None:
        """Count one more piece of work."""
        self.count += 1

    def exit(self) -> None:
        """Count one piece of work as ended; wake the waiters if it was the last."""
        self.count -= 1
        if not self.count and self.waker is not None:
            self.wake()

    def start_job(self, name: str) -> anyio.CancelScope:
        """Count a tracked job from now; enter the returned scope around its work.

        The drain cancels the scope at its deadline (`graceshut._ending`).
        """
        self.enter()
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
