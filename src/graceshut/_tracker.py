"""Counting in-flight work, and waking the drain the moment the last piece ends."""

from __future__ import annotations

from collections import Counter

import anyio


class InFlight:
    """A counter of running requests and jobs, with an O(1) enter and exit.

    The middleware bumps `count` directly on the event loop thread; no lock is needed
    because every change happens on that one thread. `wait_idle` parks on an event that
    the exit of the last piece of work sets, so the drain ends without polling.
    """

    __slots__ = ("_idle", "count", "named", "refused")

    def __init__(self) -> None:
        self.count = 0
        self.refused = 0
        """Requests and WebSocket handshakes refused during the drain."""
        self.named: Counter[str] = Counter()
        self._idle: anyio.Event | None = None

    def enter(self) -> None:
        """Count one more piece of work."""
        self.count += 1

    def exit(self) -> None:
        """Count one piece of work as ended; wake the waiters if it was the last."""
        self.count -= 1
        if self.count == 0 and self._idle is not None:
            self._idle.set()
            self._idle = None

    async def wait_idle(self) -> None:
        """Return once nothing is in flight (any number of waiters)."""
        while self.count:
            if self._idle is None:
                self._idle = anyio.Event()
            await self._idle.wait()
