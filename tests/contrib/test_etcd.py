from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator

import aetcd
import aetcd.rpc
import anyio
import pytest

from graceshut import Coordinator, HandlerResult, Outcome, ShutdownReport
from graceshut.contrib.etcd import EtcdLeases

from ._servers import EtcdServer

# One worker, and one event loop for the whole module: grpc's asyncio poller stays bound
# to the loop it was started on while any grpc object lives, and a loop closed under it
# (a new one per test) fails a later test with "Event loop is closed", now and then.
pytestmark = [pytest.mark.anyio, pytest.mark.xdist_group("etcd")]


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    """aetcd is built on asyncio and grpc.aio: these tests run on asyncio only."""
    return "asyncio"


@pytest.fixture(scope="module", autouse=True)
async def one_event_loop() -> asyncio.AbstractEventLoop:
    """Holds anyio's runner, and so its event loop, from the first test to the last."""
    return asyncio.get_running_loop()


@pytest.fixture(autouse=True)
async def on_the_modules_loop(one_event_loop: asyncio.AbstractEventLoop) -> None:
    assert asyncio.get_running_loop() is one_event_loop


def coordinator() -> Coordinator:
    return Coordinator(grace_period=10, safety_margin=1, propagation_delay=0, environ={})


def result(report: ShutdownReport, name: str = "etcd-leases") -> HandlerResult:
    (found,) = [h for h in report.handlers if h.name == name]
    return found


def key() -> bytes:
    return f"/test/{uuid.uuid4().hex}".encode()


@contextlib.asynccontextmanager
async def connect(server: EtcdServer) -> AsyncIterator[aetcd.Client]:
    async with aetcd.Client(host="127.0.0.1", port=server.port) as client:
        yield client


async def alive(client: aetcd.Client, lease: aetcd.Lease) -> bool:
    # etcd answers TTL -1 for a lease that is gone (expired or revoked), and 0 for one
    # that has run out but whose keys the lessor has not deleted yet.
    return bool((await client.get_lease_info(lease.id, keys=False)).TTL != -1)


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="graceshut")
    return caplog


async def test_granted_lease_is_revoked_and_all_its_keys_vanish(etcd_server: EtcdServer) -> None:
    """Revoking a tracked lease at shutdown deletes every key attached to it."""
    async with connect(etcd_server) as client:
        shutdown = coordinator()
        leases = EtcdLeases(shutdown, client)
        lease = await leases.grant(30)
        keys = [key() for _ in range(3)]
        for k in keys:
            await client.put(k, b"pod-a", lease=lease)
        assert leases.held == (lease.id,)

        report = await shutdown.shutdown()

        assert result(report).outcome is Outcome.OK
        assert result(report).phase.value == "release"
        for k in keys:
            assert await client.get(k) is None
        assert not await alive(client, lease)
        assert leases.held == ()


async def test_lock_is_tracked_while_held_and_revoked_at_shutdown(
    etcd_server: EtcdServer,
) -> None:
    """A held lock's lease is revoked at shutdown: the lock key is gone for the next owner."""
    async with connect(etcd_server) as client:
        shutdown = coordinator()
        leases = EtcdLeases(shutdown, client)
        name = key()
        lock = leases.lock(name, ttl=30)
        assert await lock.acquire(timeout=1)
        lease = lock.lease
        assert leases.held == (lease.id,)

        report = await shutdown.shutdown()

        assert result(report).outcome is Outcome.OK
        assert await client.get(name) is None
        assert not await alive(client, lease)
        assert await client.lock(name, ttl=5).acquire(timeout=0)


async def test_lock_release_revokes_its_lease(etcd_server: EtcdServer) -> None:
    """The app's own release deletes the key and revokes the lease, and stops the tracking."""
    async with connect(etcd_server) as client:
        leases = EtcdLeases(coordinator(), client)
        name = key()
        async with leases.lock(name, ttl=30) as lock:
            lease = lock.lease
            assert leases.held == (lease.id,)
            assert await lock.is_acquired()
        assert await client.get(name) is None
        assert not await alive(client, lease)
        assert leases.held == ()
        assert not await lock.release()


async def test_async_with_refuses_to_run_without_the_lock(etcd_server: EtcdServer) -> None:
    """``async with`` raises TimeoutError instead of running the block unlocked."""
    async with connect(etcd_server) as client:
        leases = EtcdLeases(coordinator(), client)
        name = key()
        other_owner = client.lock(name, ttl=30)
        assert await other_owner.acquire(timeout=1)
        ran = False
        with pytest.raises(TimeoutError, match=r"not acquired within 0\.2s"):
            async with leases.lock(name, ttl=30, acquire_timeout=0.2):
                ran = True
        assert not ran
        assert leases.held == ()
        assert await other_owner.is_acquired()
        await other_owner.release()


async def lease_ids(client: aetcd.Client) -> set[int]:
    """Every lease the server holds (etcd's LeaseLeases, which aetcd does not wrap)."""
    answer = await client.leasestub.LeaseLeases(aetcd.rpc.LeaseLeasesRequest())
    return {lease.ID for lease in answer.leases}


async def test_a_contended_lock_leaves_no_lease_behind(etcd_server: EtcdServer) -> None:
    """aetcd grants a lease per try; the tries that lose are revoked, not left to expire."""
    async with connect(etcd_server) as client:
        leases = EtcdLeases(coordinator(), client)
        name = key()
        other_owner = client.lock(name, ttl=30)
        assert await other_owner.acquire(timeout=1)
        before = await lease_ids(client)
        lock = leases.lock(name, ttl=30)
        assert not await lock.acquire(timeout=0.3)
        with pytest.raises(TimeoutError):
            async with leases.lock(name, ttl=30, acquire_timeout=0.3):
                pass
        assert await lease_ids(client) == before, "no lease from the losing tries"
        await other_owner.release()
        assert await lock.acquire(timeout=1), "the lock is free again"
        assert lock.lease is not None
        assert lock.lease.id in await lease_ids(client), "the winning try keeps its lease"
        assert leases.held == (lock.lease.id,)
        await lock.release()
        assert lock.lease is None


async def test_expired_lock_is_reported_and_the_new_owners_key_kept(
    etcd_server: EtcdServer, logs: pytest.LogCaptureFixture
) -> None:
    """A lock whose lease expired and whose key another owner took is a warning, not a deletion."""
    async with connect(etcd_server) as client:
        shutdown = coordinator()
        leases = EtcdLeases(shutdown, client)
        name = key()
        lock = leases.lock(name, ttl=1)
        assert await lock.acquire(timeout=1)
        lease = lock.lease
        with anyio.fail_after(5):
            while await alive(client, lease):
                await anyio.sleep(0.1)
        other_owner = client.lock(name, ttl=30)
        assert await other_owner.acquire(timeout=1)

        report = await shutdown.shutdown()

        assert result(report).outcome is Outcome.OK
        assert await other_owner.is_acquired()
        (warning,) = [r for r in logs.records if getattr(r, "outcome", None) == "expired"]
        assert warning.levelno == logging.WARNING
        assert warning.lease == lease.id  # type: ignore[attr-defined]
        assert warning.lock == f"lock {name.decode()}"  # type: ignore[attr-defined]
        assert warning.handler == "etcd-leases"  # type: ignore[attr-defined]
        await other_owner.release()


async def test_server_down_fails_the_handler_and_the_rest_still_runs(
    private_etcd: EtcdServer,
) -> None:
    """Leases on a stopped server fail the handler at once; other handlers still run."""
    async with connect(private_etcd) as client:
        shutdown = coordinator()
        leases = EtcdLeases(shutdown, client, timeout=3)
        ran: list[str] = []
        shutdown.add_handler(lambda: ran.append("release"), phase="release", name="other")
        shutdown.add_handler(lambda: ran.append("report"), phase="report", name="metrics")
        first = await leases.grant(30, name="registration")
        await leases.grant(30)
        private_etcd.stop()

        report = await shutdown.shutdown()

    handler = result(report)
    # An error, not a timeout: a stopped server fails fast, within the handler's 3 s.
    assert handler.outcome is Outcome.ERROR
    assert handler.duration < 3
    assert handler.error is not None
    assert "ReleaseError: 2 of 2 etcd leases not revoked: registration" in handler.error
    assert "ConnectionFailedError" in handler.error
    assert sorted(ran) == ["release", "report"]
    assert result(report, "other").outcome is Outcome.OK
    assert result(report, "metrics").outcome is Outcome.OK
    assert first.id not in leases.held


async def test_frozen_server_times_out_within_the_handler_timeout(
    private_etcd: EtcdServer, logs: pytest.LogCaptureFixture
) -> None:
    """A server that stops answering cuts the handler at its timeout; later phases still run."""
    async with connect(private_etcd) as client:
        shutdown = coordinator()
        leases = EtcdLeases(shutdown, client, timeout=0.5)
        ran: list[str] = []
        shutdown.add_handler(lambda: ran.append("report"), phase="report", name="metrics")
        await leases.grant(30, name="registration")
        private_etcd.pause()
        try:
            report = await shutdown.shutdown()
        finally:
            private_etcd.resume()

    handler = result(report)
    assert handler.outcome is Outcome.TIMEOUT
    assert 0.4 < handler.duration < 3, "cut at its 0.5 s timeout, not held by the frozen server"
    assert ran == ["report"]
    (summary,) = [r for r in logs.records if "may still be alive" in r.getMessage()]
    assert "registration" in summary.getMessage()


async def test_revoke_and_untrack(etcd_server: EtcdServer) -> None:
    """revoke() revokes now (False the second time); an untracked lease outlives the shutdown."""
    async with connect(etcd_server) as client:
        shutdown = coordinator()
        leases = EtcdLeases(shutdown, client)
        revoked = await leases.grant(30)
        kept = await leases.grant(30)
        adopted = leases.track(await client.lease(30))

        assert await leases.revoke(revoked)
        assert not await leases.revoke(revoked)
        assert leases.untrack(kept)
        assert not leases.untrack(kept)
        assert leases.held == (adopted.id,)
        assert (await shutdown.shutdown()).ok

        assert not await alive(client, revoked)
        assert not await alive(client, adopted)
        assert await alive(client, kept)
        await kept.revoke()


async def test_failed_revoke_keeps_the_lease_tracked(private_etcd: EtcdServer) -> None:
    """When the app's revoke cannot reach etcd, the lease stays for the shutdown to retry."""
    async with connect(private_etcd) as client:
        leases = EtcdLeases(coordinator(), client)
        lease = await leases.grant(30)
        lock = leases.lock(key(), ttl=30)
        assert await lock.acquire(timeout=1)
        private_etcd.stop()

        with pytest.raises(aetcd.ConnectionFailedError):
            await leases.revoke(lease)
        with pytest.raises(aetcd.ConnectionFailedError):
            await lock.release()

        assert set(leases.held) == {lease.id, lock.lease.id}


async def test_lease_granted_after_the_release_phase_is_warned_about(
    etcd_server: EtcdServer, logs: pytest.LogCaptureFixture
) -> None:
    """A lease granted once the handler ran cannot be revoked by it: a warning says so."""
    async with connect(etcd_server) as client:
        shutdown = coordinator()
        leases = EtcdLeases(shutdown, client)
        await shutdown.shutdown()

        lease = await leases.grant(30)

        assert any("after the release phase began" in r.getMessage() for r in logs.records)
        assert await leases.revoke(lease)


async def test_hundred_locks_are_revoked_together(etcd_server: EtcdServer) -> None:
    """100 held locks are all released at shutdown, within the handler's timeout."""
    async with connect(etcd_server) as client:
        shutdown = coordinator()
        leases = EtcdLeases(shutdown, client)
        names = [key() for _ in range(100)]
        for name in names:
            assert await leases.lock(name, ttl=30).acquire(timeout=1)
        assert len(leases.held) == 100

        report = await shutdown.shutdown()

        assert result(report).outcome is Outcome.OK
        for name in names:
            assert await client.get(name) is None
