"""What `graceshut.contrib.redis` adds to redis-py: the registry of what is held, and the locks.

`RedisLocks` (in `graceshut.contrib.redis`) hands these out; they are redis-py's own lock
classes, made with ``thread_local=False``, that add and remove their entry in the
registry as they are acquired and released, from any thread or task.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any, cast

import redis
import redis.asyncio
import redis.asyncio.lock
import redis.lock
from redis.exceptions import LockError

from ._redis_lease import Lease

logger = logging.getLogger("graceshut")

SyncClient = redis.Redis | redis.RedisCluster
AsyncClient = redis.asyncio.Redis | redis.asyncio.RedisCluster

#: Deletes each key only while it still holds the token; answers 1 or 0 per key.
_COMPARE_AND_DELETE = """
local deleted = {}
for i, key in ipairs(KEYS) do
    if redis.call('get', key) == ARGV[1] then
        redis.call('del', key)
        deleted[i] = 1
    else
        deleted[i] = 0
    end
end
return deleted
"""


class Entry:
    """One release to run at shutdown: a lock's compare-and-delete, or the app's own."""

    __slots__ = ("by_shutdown", "client", "is_async", "lease", "name", "release")

    def __init__(
        self, name: str, release: Callable[[], Any], *, is_async: bool, client: object = None
    ) -> None:
        self.name = name
        self.release = release
        self.is_async = is_async
        self.client = client
        self.by_shutdown = False
        self.lease: Lease | None = None


class Registry:
    """What is held now; shared by sync and async locks, safe from any thread."""

    def __init__(self, handler: str) -> None:
        self.handler = handler
        self._mutex = threading.Lock()
        self._entries: dict[Entry, None] = {}
        self._closed = False

    def add(self, entry: Entry) -> None:
        with self._mutex:
            self._entries[entry] = None
            closed = self._closed
        if closed:
            logger.warning(
                "%s: %s taken after the release phase began: it is not released at shutdown "
                "and stays until it expires",
                self.handler,
                entry.name,
                extra={"handler": self.handler, "lock": entry.name, "outcome": "untracked"},
            )

    def discard(self, entry: Entry) -> bool:
        with self._mutex:
            return self._entries.pop(entry, _MISSING) is not _MISSING

    def take_all(self) -> list[Entry]:
        with self._mutex:
            self._closed = True
            entries = list(self._entries)
            self._entries.clear()
            for entry in entries:
                entry.by_shutdown = True
        for entry in entries:  # released now, or left to expire if Redis cannot be reached
            if entry.lease is not None:
                entry.lease.stop()
        return entries

    def names(self) -> tuple[str, ...]:
        with self._mutex:
            return tuple(entry.name for entry in self._entries)


_MISSING: Any = object()


class Tracked:
    """A release that the shutdown runs unless `untrack` is called first."""

    def __init__(self, registry: Registry, entry: Entry) -> None:
        self._registry = registry
        self._entry = entry

    @property
    def name(self) -> str:
        """The name in logs and in `RedisLocks.held`."""
        return self._entry.name

    def untrack(self) -> bool:
        """Stop tracking: call it once the app has released the thing itself.

        Returns:
            False when the shutdown has already taken the release over.
        """
        return self._registry.discard(self._entry)


class LockTracking:
    """What graceshut adds to a redis-py lock: its registry entry and lease while held."""

    __slots__ = ("_entry", "_is_async", "_lease", "_name", "_pending", "_registry")

    def __init__(
        self, registry: Registry, name: str, *, is_async: bool, lease: float | None
    ) -> None:
        self._registry = registry
        self._name = name
        self._is_async = is_async
        self._lease = lease
        self._entry: Entry | None = None
        self._pending: Entry | None = None

    @property
    def lease(self) -> Lease | None:
        """The lease being renewed now, while held (None for a lock with a TTL)."""
        return None if self._entry is None else self._entry.lease

    def acquired(
        self, release: Callable[[], Any], client: object, renew: Callable[[], object]
    ) -> None:
        """Track the lock just acquired; start renewing its lease, if it has one.

        *renew* is the lock's ``reacquire``: blocking for a sync lock, a coroutine
        function for an asyncio one.
        """
        if self._entry is not None:  # re-acquired after expiring: the old token is dead
            self._registry.discard(self._entry)
            if self._entry.lease is not None:
                self._entry.lease.stop()
        entry = Entry(self._name, release, is_async=self._is_async, client=client)
        if self._lease is not None:
            entry.lease = Lease(self._registry.handler, self._name, self._lease)
            if self._is_async:
                entry.lease.start_task(cast("Callable[[], Awaitable[object]]", renew))
            else:
                entry.lease.start_thread(renew)
        self._entry = entry
        self._registry.add(entry)

    def begin_release(self) -> bool:
        """Take the entry back before the app releases the lock itself.

        Returns False when the shutdown took it first: the shutdown releases it with
        the same token, so the app's release has nothing left to do.
        """
        entry, self._entry = self._entry, None
        if entry is not None and entry.lease is not None:
            entry.lease.stop()  # a release that fails leaves the key to expire
        if entry is not None and not self._registry.discard(entry) and entry.by_shutdown:
            return False
        self._pending = entry
        return True

    def end_release(self, *, still_held: bool) -> None:
        """Keep tracking a lock whose release failed for a reason other than ownership."""
        entry, self._pending = self._pending, None
        if still_held and entry is not None:
            self._entry = entry
            self._registry.add(entry)


class SyncLock(redis.lock.Lock):
    """A redis-py `~redis.lock.Lock` tracked by a `RedisLocks` while held."""

    def __init__(self, client: Any, name: str, tracking: LockTracking, **kwargs: Any) -> None:
        super().__init__(client, name, thread_local=False, **kwargs)
        self._graceshut = tracking

    def acquire(self, *args: Any, **kwargs: Any) -> bool:
        """Acquire the lock as redis-py does (its arguments, passed on); once acquired, tracked."""
        if not super().acquire(*args, **kwargs):
            return False
        release = functools.partial(self.do_release, self.local.token)
        self._graceshut.acquired(release, self.redis, self.reacquire)
        return True

    def release(self, *args: Any, **kwargs: Any) -> None:
        """Release the lock as redis-py does, from any thread; then it is no longer tracked."""
        if not self._graceshut.begin_release():
            self.local.token = None
            return
        try:
            # redis-py before 8.2 forgets the token before the round trip: if that
            # fails, the tracked entry still holds it, so the shutdown can retry.
            super().release(*args, **kwargs)
        except BaseException as exc:
            self._graceshut.end_release(still_held=not isinstance(exc, LockError))
            raise
        self._graceshut.end_release(still_held=False)


class AsyncLock(redis.asyncio.lock.Lock):
    """A `redis.asyncio.lock.Lock` tracked by a `RedisLocks` while held."""

    def __init__(self, client: Any, name: str, tracking: LockTracking, **kwargs: Any) -> None:
        super().__init__(client, name, thread_local=False, **kwargs)
        self._graceshut = tracking

    async def acquire(self, *args: Any, **kwargs: Any) -> bool:
        """Acquire the lock as redis-py does (its arguments, passed on); once acquired, tracked."""
        if not await super().acquire(*args, **kwargs):
            return False
        release = functools.partial(self.do_release, self.local.token)
        self._graceshut.acquired(release, self.redis, self.reacquire)
        return True

    async def release(self, *args: Any, **kwargs: Any) -> None:
        """Release the lock as redis-py does, from any task; then it is no longer tracked."""
        if not self._graceshut.begin_release():
            self.local.token = None
            return
        try:
            await super().release(*args, **kwargs)
        except BaseException as exc:  # cancelled or failed: the key may still be held
            self._graceshut.end_release(still_held=not isinstance(exc, LockError))
            raise
        self._graceshut.end_release(still_held=False)


def keys_release(
    client: SyncClient | AsyncClient,
    keys: tuple[str, ...],
    token: str | bytes | None,
    *,
    is_async: bool,
) -> Callable[[], object]:
    """The release of `RedisLocks.track_keys`: True when every key was deleted."""
    delete: Callable[[], object]
    if token is None:
        delete = functools.partial(client.delete, *keys)
    else:
        script = client.register_script(_COMPARE_AND_DELETE)
        delete = functools.partial(script, keys=list(keys), args=[token])

    def check(answer: object) -> bool:
        # DEL answers how many keys it deleted, the script a 1 or 0 per key.
        return answer == len(keys) if token is None else all(cast("list[int]", answer))

    if is_async:

        async def release_async() -> bool:
            return check(await cast("Awaitable[object]", delete()))

        return release_async

    def release_sync() -> bool:
        return check(delete())

    return release_sync
