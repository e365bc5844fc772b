"""The lease of a tracked Redis lock made without a TTL: renewed while the lock is held.

A key that never expires outlives a pod whose release at shutdown did not get through
(Redis unreachable in a partition or a failover): every other pod then waits forever.
So a lock without ``ttl`` gets a lease instead (30 s unless told otherwise, as
Redisson's lock watchdog), and a `Lease` renews it every third of that while the
lock is held, with redis-py's ``Lock.reacquire`` (the TTL back to the whole lease,
only while the key still holds this lock's token). It stops when the lock is released,
by the app or by the shutdown, and with the process: a holder killed with SIGKILL
leaves a key that expires within one lease. Two renewals may fail in a row (a slow
server) before the lock is lost.

Sync locks renew from a daemon thread of their own (it never holds the process open),
asyncio locks from a task on the loop that acquired them; both run the same steps.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable

from redis.exceptions import LockError

logger = logging.getLogger("graceshut")

#: Renewals per lease: the TTL is set back to the whole lease every third of it.
RENEWALS_PER_LEASE = 3


class Lease:
    """Renews one held lock's TTL every `interval` seconds until `stop` (any thread)."""

    def __init__(self, handler: str, lock: str, lease: float) -> None:
        self.handler = handler
        self.lock = lock
        self.lease = lease
        self.interval = lease / RENEWALS_PER_LEASE
        self._stopped = threading.Event()
        self._task: tuple[asyncio.AbstractEventLoop, asyncio.Task[None]] | None = None

    def start_thread(self, renew: Callable[[], object]) -> None:
        """Renew with a blocking *renew* (a sync lock's ``reacquire``) from a daemon thread."""

        def run() -> None:
            while not self._stopped.wait(self.interval):
                try:
                    renew()
                except Exception as exc:
                    if not self._failed(exc):
                        return

        threading.Thread(target=run, name=f"graceshut lease {self.lock}", daemon=True).start()

    def start_task(self, renew: Callable[[], Awaitable[object]]) -> None:
        """Renew with an awaitable *renew* (an asyncio lock's ``reacquire``) on this loop."""

        async def run() -> None:
            while True:
                await asyncio.sleep(self.interval)
                if self._stopped.is_set():
                    return
                try:
                    await renew()
                except Exception as exc:
                    if not self._failed(exc):
                        return

        loop = asyncio.get_running_loop()
        self._task = (loop, loop.create_task(run(), name=f"graceshut lease {self.lock}"))

    def stop(self) -> None:
        """Renew no more: the lock is being released. Safe from any thread, and twice."""
        self._stopped.set()
        if self._task is not None:
            loop, task = self._task
            # A loop that has closed took its tasks with it.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(task.cancel)

    def _failed(self, exc: Exception) -> bool:
        """Log a renewal that failed; False when renewing is over."""
        if self._stopped.is_set():  # released meanwhile: the key is meant to go
            return False
        fields = {"handler": self.handler, "lock": self.lock, "lease": self.lease}
        if isinstance(exc, LockError):  # LockNotOwnedError: another token, or no key
            logger.error(
                "%s: lock %s was lost: its lease of %gs ran out before it was renewed "
                "(the process or the server stalled); another owner may hold it now",
                self.handler,
                self.lock,
                self.lease,
                extra={**fields, "outcome": "lost"},
            )
            return False
        logger.warning(
            "%s: lease of lock %s not renewed, tried again in %gs: %s: %s",
            self.handler,
            self.lock,
            self.interval,
            type(exc).__name__,
            exc,
            extra={**fields, "outcome": "not_renewed"},
        )
        return True
