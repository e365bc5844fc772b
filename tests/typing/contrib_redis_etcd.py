"""Type-checked only: the Redis and etcd integrations as users write them."""

from __future__ import annotations

import aetcd  # type: ignore[import-untyped]
import redis
import redis.asyncio
import redis.asyncio.lock
import redis.lock
from typing_extensions import assert_type

import graceshut
from graceshut.contrib.etcd import EtcdLeases
from graceshut.contrib.redis import RedisLocks, Tracked

coordinator = graceshut.Coordinator()
locks = RedisLocks(coordinator, timeout=3, name="locks", concurrency=8)

sync_lock = locks.lock(redis.Redis(), "jobs:nightly", ttl=60, acquire_timeout=1)
assert_type(sync_lock, redis.lock.Lock)
async_lock = locks.lock(redis.asyncio.Redis(), "jobs:import", ttl=60, blocking=False)
assert_type(async_lock, redis.asyncio.lock.Lock)

assert_type(locks.track_keys(redis.Redis(), "leader", token="pod-a"), Tracked)
assert_type(locks.track("slot", lambda: None), Tracked)
assert_type(locks.held, tuple[str, ...])

leased = RedisLocks(coordinator, name="leased", lease=10.0)
assert_type(leased.lease, float)
assert_type(leased.lock(redis.Redis(), "jobs:long"), redis.lock.Lock)  # no ttl: a renewed lease


async def release_own() -> bool:
    return True


locks.track("own", release_own)


async def etcd(client: aetcd.Client) -> None:
    leases = EtcdLeases(coordinator, client, timeout=3)
    lease = await leases.grant(30, name="registration")
    await client.put(b"/services/api/pod-a", b"10.0.0.7:8000", lease=lease)
    async with leases.lock(b"/locks/import", ttl=60, acquire_timeout=5):
        pass
    assert_type(await leases.revoke(lease), bool)
    assert_type(leases.held, tuple[int, ...])
