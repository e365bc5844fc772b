"""Redis locks that are released at shutdown with their own token (redis-py, sync and asyncio).

Install with ``pip install 'graceshut[redis]'``. A pod that dies holding a lock makes
every other pod wait for the lock's TTL; `RedisLocks` releases what the app still
holds in the ``release`` phase, so the next owner can take it at once::

    locks = RedisLocks(coordinator)

    with locks.lock(redis_client, "jobs:nightly"):
        ...  # held: released at shutdown if the block is still running

    async with locks.lock(async_redis_client, "jobs:import", ttl=60):
        ...

What it guarantees:

- Every lock expires. One made without ``ttl`` gets a lease (``lease=``, 30 s by
  default) that graceshut renews every third of it while the lock is held, and stops
  renewing when it is released or the process dies: a pod killed holding it, or whose
  release at shutdown cannot reach Redis, frees it within one lease, and a job that
  holds it for hours keeps it. A lock made with ``ttl`` expires after it, as in redis-py.

- A lock is tracked from a successful ``acquire`` to its ``release`` (or the shutdown).
  Locks are made with ``thread_local=False`` and each one's token is recorded at
  acquire time, so the release works from whatever thread or task runs it; with
  redis-py's default thread-local token a release from another thread fails and leaves
  the key held.
- Releases are compare-and-delete (redis-py's own Lua script): a lock that expired, or
  that another owner has taken since, is reported in a warning and never deleted. It is
  not a failure: the lock is not held by this process, which is what a release is for.
- Real errors (server down, timeouts) fail the handler, after every other release was
  attempted. After a connection error on one client, its remaining locks are not tried
  again (each try would wait out redis-py's retry policy) and are reported as failed.
- Apps with their own lock scheme hand over a release with `RedisLocks.track_keys`
  (delete keys, optionally only while they still hold a token) or `RedisLocks.track`
  (any callable).
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast, overload

from .._core._handlers import is_async_callable, refuse_awaitable
from .._core._phases import Phase
from .._core._threads import run_in_daemon_thread
from ._errors import ReleaseError
from ._release import Terms, release_all

try:
    import redis
    import redis.asyncio
    import redis.asyncio.lock
    import redis.lock
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import LockNotOwnedError
    from redis.exceptions import TimeoutError as RedisTimeoutError
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "graceshut.contrib.redis needs redis-py: pip install 'graceshut[redis]'"
    ) from exc

from ._redis_tracking import (
    AsyncClient,
    AsyncLock,
    Entry,
    LockTracking,
    Registry,
    SyncClient,
    SyncLock,
    Tracked,
    keys_release,
)

if TYPE_CHECKING:
    from .._core._context import ShutdownContext
    from .._core._coordinator import Coordinator

__all__ = ["RedisLocks", "ReleaseError", "Tracked"]

logger = logging.getLogger("graceshut")

#: The shortest lease: redis-py sets a TTL in whole milliseconds, and renews a third of it.
_MIN_LEASE = 0.1


class RedisLocks:
    """Tracks the Redis locks the app holds and releases them in the ``release`` phase.

    Registers one handler on construction. At shutdown every tracked lock is released
    with its own token, up to *concurrency* at a time, within the handler's timeout: sync
    locks in daemon worker threads (an unreachable server cannot hold up the process
    exit), asyncio locks on the event loop. See the module docs for what is reported.

    Args:
        coordinator: Where to register the handler.
        timeout: Seconds the handler may take. With the server down, redis-py's default
            retry policy (redis-py 8: 10 retries, about 4 s) decides how long the first
            release on a client takes to fail; a client made with
            ``retry=Retry(NoBackoff(), 0)`` fails at once.
        name: The handler's name in logs and the report.
        concurrency: Releases in flight at once (connections or threads used).
        phase: The phase it runs in; ``release`` by default.
        lease: Seconds a lock made without ``ttl`` lives unless renewed; graceshut
            renews it every third of that while the lock is held (from a daemon thread
            for a sync lock, a task on its loop for an asyncio one), so a holder that
            dies frees it within *lease*. Keep it above the longest stall of the
            process or of Redis that the lock must survive (two renewals may fail).

    Example::

        locks = RedisLocks(coordinator)

        lock = locks.lock(redis_client, "reports:rebuild", blocking=False)
        if lock.acquire():
            try:
                rebuild_reports()
            finally:
                lock.release()
    """

    def __init__(
        self,
        coordinator: Coordinator,
        *,
        timeout: float = 5.0,
        name: str = "redis-locks",
        concurrency: int = 16,
        phase: Phase | str = Phase.RELEASE,
        lease: float = 30.0,
    ) -> None:
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(f"concurrency={concurrency!r} must be a positive integer")
        if (
            isinstance(lease, bool)
            or not isinstance(lease, int | float)
            or not math.isfinite(lease)
            or lease < _MIN_LEASE
        ):
            raise ValueError(f"lease={lease!r} must be a number of seconds, {_MIN_LEASE} or more")
        self.name = name
        self.lease = lease
        self._concurrency = concurrency
        self._registry = Registry(name)
        coordinator.add_handler(self.release_all, phase=phase, timeout=timeout, name=name)

    @property
    def held(self) -> tuple[str, ...]:
        """Names of the locks (and other releases) that the shutdown would release now."""
        return self._registry.names()

    @overload
    def lock(
        self,
        client: AsyncClient,
        name: str,
        *,
        ttl: float | None = ...,
        sleep: float = ...,
        blocking: bool = ...,
        acquire_timeout: float | None = ...,
    ) -> redis.asyncio.lock.Lock: ...

    @overload
    def lock(
        self,
        client: SyncClient,
        name: str,
        *,
        ttl: float | None = ...,
        sleep: float = ...,
        blocking: bool = ...,
        acquire_timeout: float | None = ...,
    ) -> redis.lock.Lock: ...

    def lock(
        self,
        client: SyncClient | AsyncClient,
        name: str,
        *,
        ttl: float | None = None,
        sleep: float = 0.1,
        blocking: bool = True,
        acquire_timeout: float | None = None,
    ) -> redis.lock.Lock | redis.asyncio.lock.Lock:
        """A lock like ``client.lock(name, ...)``, tracked while held.

        A `redis.lock.Lock` for a sync client, a `redis.asyncio.lock.Lock` for an asyncio
        one, made with ``thread_local=False``: acquire and release it (or use it as a
        context manager) as usual. Make one lock object per holder; share the name, not
        the object, between threads or tasks.

        Args:
            client: A redis-py client, sync or asyncio (``Redis`` or ``RedisCluster``).
            name: The key of the lock.
            ttl: The lock's time to live in seconds (redis-py's ``timeout``): it expires
                then, held or not. None (the default) gives it a lease instead, renewed
                while it is held (see *lease* on `RedisLocks`).
            sleep: Seconds between tries while blocking.
            blocking: Whether ``acquire`` waits for the lock.
            acquire_timeout: Longest wait in ``acquire`` (redis-py's
                ``blocking_timeout``); None waits forever.

        Returns:
            The lock, not yet acquired.
        """
        is_async = isinstance(client, redis.asyncio.Redis | redis.asyncio.RedisCluster)
        lease = self.lease if ttl is None else None
        tracking = LockTracking(self._registry, name, is_async=is_async, lease=lease)
        options = {
            "timeout": lease if ttl is None else ttl,
            "sleep": sleep,
            "blocking": blocking,
            "blocking_timeout": acquire_timeout,
        }
        if is_async:
            return AsyncLock(client, name, tracking, **options)
        return SyncLock(client, name, tracking, **options)

    def track_keys(
        self,
        client: SyncClient | AsyncClient,
        *keys: str,
        token: str | bytes | None = None,
        name: str | None = None,
    ) -> Tracked:
        """Delete *keys* at shutdown: for apps with a lock scheme of their own.

        Without *token* the keys are deleted outright (one ``DEL``). With it, each key is
        deleted only while its value is still *token* (one Lua script, atomic): a key
        that expired or holds another owner's value is left alone and reported, as for
        locks. In Redis Cluster, keys released together must share a hash slot.

        Args:
            client: A redis-py client, sync or asyncio.
            keys: The keys to delete.
            token: The value that proves the keys are still this process's.
            name: The name in logs; the keys joined by commas by default.

        Returns:
            A `Tracked` handle: `~Tracked.untrack` it once the app deleted the keys itself.

        Example::

            if redis_client.set("leader", POD_NAME, nx=True, ex=30):
                leadership = locks.track_keys(redis_client, "leader", token=POD_NAME)
        """
        if not keys:
            raise ValueError("track_keys() needs at least one key")
        is_async = isinstance(client, redis.asyncio.Redis | redis.asyncio.RedisCluster)
        release = keys_release(client, keys, token, is_async=is_async)
        entry = Entry(name or ",".join(keys), release, is_async=is_async, client=client)
        self._registry.add(entry)
        return Tracked(self._registry, entry)

    def track(self, name: str, release: Callable[[], object]) -> Tracked:
        """Run *release* at shutdown, together with the locks: any release of the app's own.

        *release* takes no argument and may be a plain function (run in a thread) or an
        ``async def`` (on the event loop); a plain function that returns a coroutine, such
        as a lambda around an asyncio client, released nothing and fails the handler.
        It returns False (or raises `~redis.exceptions.LockNotOwnedError`) when the thing
        was no longer held (expired, taken over): that is reported as a warning, not a
        failure. Any other exception fails the handler.

        Returns:
            A `Tracked` handle: `~Tracked.untrack` it once the app released it itself.
        """
        if not callable(release):
            raise TypeError(f"release must be callable, got {release!r}")
        entry = Entry(name, release, is_async=is_async_callable(release))
        self._registry.add(entry)
        return Tracked(self._registry, entry)

    async def release_all(self, ctx: ShutdownContext) -> None:
        """Release everything tracked now; the handler registered on construction.

        A lock taken after this started is not released by it (a warning says so).

        Raises:
            ReleaseError: Some releases failed; every other one was attempted.
        """
        entries = self._registry.take_all()
        fields: dict[str, Any] = {"handler": self.name, "phase": ctx.phase.value}
        if not entries:
            ctx.logger.debug("%s: no lock held", self.name, extra={**fields, "outcome": "ok"})
            return
        unreachable: dict[int, str] = {}
        await release_all(
            [
                (entry.name, functools.partial(self._release_one, entry, unreachable, ctx, fields))
                for entry in entries
            ],
            handler=self.name,
            ctx=ctx,
            fields=fields,
            terms=_TERMS,
            concurrency=self._concurrency,
        )

    async def _release_one(
        self,
        entry: Entry,
        unreachable: dict[int, str],
        ctx: ShutdownContext,
        fields: dict[str, Any],
    ) -> tuple[str, str | None]:
        """Release one entry and log how it went; raises nothing but cancellation."""
        extra = {**fields, "lock": entry.name}
        client = id(entry.client) if entry.client is not None else None
        result: object = None
        error = None
        if client in unreachable:
            error = f"not tried: {unreachable[client]}"
        else:
            try:
                if entry.is_async:
                    result = await cast("Awaitable[object]", entry.release())
                else:
                    result = await run_in_daemon_thread(
                        entry.release, name=f"graceshut release {entry.name}"
                    )
                    refuse_awaitable(result, f"the release {entry.release!r}")
            except LockNotOwnedError:
                result = False
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                if client is not None and isinstance(exc, RedisConnectionError | RedisTimeoutError):
                    unreachable.setdefault(client, f"an earlier release failed with {error}")
        if error is not None:
            # One line per lock, no traceback: a server that is down fails them all alike.
            ctx.logger.error(
                "%s: %s not released: %s",
                self.name,
                entry.name,
                error,
                extra={**extra, "outcome": "error", "error": error},
            )
            return "error", error
        if result is False:
            ctx.logger.warning(
                "%s: %s had expired or was taken over by another owner: left alone",
                self.name,
                entry.name,
                extra={**extra, "outcome": "not_owned"},
            )
            return "not_owned", None
        ctx.logger.debug(
            "%s: released %s", self.name, entry.name, extra={**extra, "outcome": "released"}
        )
        return "released", None


_TERMS = Terms(
    things="redis locks",
    done="released",
    gone="not_owned",
    gone_words="no longer held",
    not_done="not released",
    still_held="may still be held",
)
