"""Tracked Redis locks made without a TTL: a lease renewed while held, gone with the holder.

Leases of 2 s here (renewed every 0.67 s) so that a test lasts a few of them; the
assertions are about what Redis holds (the token, a TTL within the lease), never about
how long something took.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
import sys
import threading
import time
import uuid

import pytest
import redis
import redis.asyncio
import redis.retry
from redis.backoff import NoBackoff

from graceshut import Coordinator
from graceshut.contrib.redis import RedisLocks

from ._servers import RedisServer, Relay

pytestmark = pytest.mark.anyio

LEASE = 2.0


@pytest.fixture
def anyio_backend() -> str:
    """redis.asyncio runs on asyncio only."""
    return "asyncio"


def coordinator() -> Coordinator:
    return Coordinator(grace_period=10, safety_margin=1, propagation_delay=0, environ={})


def key() -> str:
    return f"test:lease:{uuid.uuid4().hex}"


def lease_threads(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"graceshut lease {name}"]


def test_a_lock_without_ttl_expires_within_its_lease(redis_server: RedisServer) -> None:
    """No ttl: the key gets the lease as its TTL (30 s by default), never no expiry."""
    with redis.Redis(port=redis_server.port) as client:
        name = key()
        lock = RedisLocks(coordinator()).lock(client, name)
        assert lock.acquire()
        try:
            assert 0 < client.pttl(name) <= 30_000
        finally:
            lock.release()
        for thread in lease_threads(name):  # told to stop; on a loaded machine, not gone yet
            thread.join(5)
        assert lease_threads(name) == [], "the lease ends with the release"
        with_ttl = RedisLocks(coordinator(), name="with-ttl").lock(client, name, ttl=300)
        assert with_ttl.acquire()
        assert 30_000 < client.pttl(name) <= 300_000, "an explicit ttl is kept as it is"
        assert lease_threads(name) == [], "a lock with a ttl is not renewed"
        with_ttl.release()


def test_a_sync_job_holding_a_lock_for_several_leases_never_loses_it(
    redis_server: RedisServer,
) -> None:
    """Held for three leases: the key keeps our token, nobody else gets it; released, it goes."""
    with redis.Redis(port=redis_server.port) as client:
        locks = RedisLocks(coordinator(), lease=LEASE)
        name = key()
        lock = locks.lock(client, name)
        assert lock.acquire()
        token = lock.local.token
        other = client.lock(name, timeout=60)
        end = time.monotonic() + 3 * LEASE
        while time.monotonic() < end:
            assert client.get(name) == token
            assert 0 < client.pttl(name) <= LEASE * 1000
            assert not other.acquire(blocking=False)
            time.sleep(0.1)

        (renewer,) = lease_threads(name)
        lock.release()

        renewer.join(timeout=10)
        assert not renewer.is_alive(), "renewing stops with the release"
        assert not client.exists(name)
        assert locks.held == ()


async def test_an_asyncio_job_holding_a_lock_for_several_leases_never_loses_it(
    redis_server: RedisServer,
) -> None:
    """The same for an asyncio lock, renewed by a task on the loop that stops on release."""
    async with redis.asyncio.Redis(port=redis_server.port) as client:
        locks = RedisLocks(coordinator(), lease=LEASE)
        name = key()
        async with locks.lock(client, name) as lock:
            token = lock.local.token
            other = client.lock(name, timeout=60)
            end = time.monotonic() + 3 * LEASE
            while time.monotonic() < end:
                assert await client.get(name) == token
                assert 0 < await client.pttl(name) <= LEASE * 1000
                assert not await other.acquire(blocking=False)
                await asyncio.sleep(0.1)
            (renewer,) = [t for t in asyncio.all_tasks() if t.get_name().endswith(name)]

        await asyncio.wait_for(asyncio.gather(renewer, return_exceptions=True), timeout=10)
        assert renewer.done(), "renewing stops with the release"
        assert not await client.exists(name)


async def test_the_shutdown_stops_renewing_so_an_unreleased_lock_expires(
    redis_server: RedisServer,
) -> None:
    """The release at shutdown cannot reach Redis: renewing stops too, the key expires."""
    shutdown = Coordinator(grace_period=10, safety_margin=1, propagation_delay=0, environ={})
    locks = RedisLocks(shutdown, lease=LEASE)
    name = key()
    partition = Relay(redis_server.port)
    through = redis.Redis(port=partition.port, retry=redis.retry.Retry(NoBackoff(), 0))
    with through, redis.Redis(port=redis_server.port) as direct:
        lock = locks.lock(through, name)
        assert lock.acquire()
        (renewer,) = lease_threads(name)
        partition.cut()

        report = await shutdown.shutdown()

        assert not report.ok, "the release could not reach Redis"
        renewer.join(timeout=10)
        assert not renewer.is_alive(), "renewing stops when the shutdown takes the lock"
        assert direct.get(name) == lock.local.token
        assert 0 < direct.pttl(name) <= LEASE * 1000, "left to expire within the lease"
        successor = direct.lock(name, timeout=30, blocking_timeout=LEASE + 30)
        assert successor.acquire()
        successor.release()


async def test_a_lost_lock_is_logged_and_no_longer_renewed(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Another owner took the key (it expired while the process stalled): an error, then quiet."""
    caplog.set_level(logging.WARNING, logger="graceshut")
    with redis.Redis(port=redis_server.port) as client:
        locks = RedisLocks(coordinator(), lease=LEASE)
        name = key()
        lock = locks.lock(client, name)
        assert lock.acquire()
        (renewer,) = lease_threads(name)
        client.set(name, "another owner", px=60_000)  # as if it had expired and been taken

        renewer.join(timeout=10)

        assert not renewer.is_alive()
        assert client.get(name) == b"another owner"
        (lost,) = [r for r in caplog.records if getattr(r, "outcome", None) == "lost"]
        assert name in lost.getMessage()
        assert "was lost" in lost.getMessage()


#: A pod's process: holds a sync and an asyncio lock without ttl until it is killed.
HOLDER = """
import asyncio, sys, redis, redis.asyncio
from graceshut import Coordinator
from graceshut.contrib.redis import RedisLocks

port, sync_name, async_name, lease = int(sys.argv[1]), sys.argv[2], sys.argv[3], float(sys.argv[4])
locks = RedisLocks(Coordinator(environ={}), lease=lease)
assert locks.lock(redis.Redis(port=port), sync_name).acquire()

async def main():
    async with redis.asyncio.Redis(port=port) as client:
        assert await locks.lock(client, async_name).acquire()
        print("held", flush=True)
        await asyncio.sleep(3600)

asyncio.run(main())
"""


def test_a_holder_killed_with_sigkill_frees_its_locks_within_the_lease(
    redis_server: RedisServer,
) -> None:
    """Renewed while the holder lives (past one lease); after SIGKILL they expire within one."""
    sync_name, async_name = key(), key()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(redis_server.port), sync_name, async_name, str(LEASE)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "held\n"
        with redis.Redis(port=redis_server.port) as client:
            tokens = client.mget(sync_name, async_name)
            time.sleep(2 * LEASE)  # two leases: only renewals keep the keys
            assert client.mget(sync_name, async_name) == tokens
            assert None not in tokens

            holder.send_signal(signal.SIGKILL)
            holder.wait(timeout=30)

            ttls = [client.pttl(sync_name), client.pttl(async_name)]
            assert all(0 < ttl <= LEASE * 1000 for ttl in ttls), ttls
            # Nothing renews them now: another pod gets both once they expire.
            for name in (sync_name, async_name):
                successor = client.lock(name, timeout=30, blocking_timeout=LEASE + 30)
                assert successor.acquire()
                successor.release()
    finally:
        holder.kill()
        holder.wait()
