from __future__ import annotations

import inspect
import logging
import threading
import time
import uuid
from collections.abc import Iterator

import anyio
import pytest
import redis
import redis.asyncio
import redis.asyncio.lock
import redis.asyncio.retry
import redis.lock
import redis.retry
from redis.backoff import ConstantBackoff, NoBackoff

from graceshut import Coordinator, HandlerResult, Outcome, ShutdownReport
from graceshut.contrib.redis import RedisLocks

from ._servers import RedisServer, free_port

pytestmark = pytest.mark.anyio

BOTH_LOOPS = pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
"""For sync clients: the release runs in a thread, so it works under trio as well."""


@pytest.fixture
def anyio_backend() -> str:
    """redis.asyncio runs on asyncio only; sync-client tests ask for trio too."""
    return "asyncio"


def coordinator() -> Coordinator:
    return Coordinator(grace_period=10, safety_margin=1, propagation_delay=0, environ={})


def result(report: ShutdownReport, name: str = "redis-locks") -> HandlerResult:
    (found,) = [h for h in report.handlers if h.name == name]
    return found


def key() -> str:
    return f"test:{uuid.uuid4().hex}"


def no_retry(port: int) -> redis.Redis:
    return redis.Redis(port=port, retry=redis.retry.Retry(NoBackoff(), 0))


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    with redis.Redis(port=redis_server.port) as client:
        yield client


@pytest.fixture
def aclient(redis_server: RedisServer) -> redis.asyncio.Redis:
    # Closed by the test (async with): its connections belong to the test's event loop.
    return redis.asyncio.Redis(port=redis_server.port)


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="graceshut")
    return caplog


def records(caplog: pytest.LogCaptureFixture, outcome: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "outcome", None) == outcome]


@BOTH_LOOPS
async def test_sync_lock_is_released_at_shutdown(client: redis.Redis) -> None:
    """A held sync lock is tracked, then deleted by the release handler; the report says ok."""
    shutdown = coordinator()
    locks = RedisLocks(shutdown)
    name = key()
    lock = locks.lock(client, name, ttl=30)
    assert lock.acquire(blocking=False)
    assert locks.held == (name,)
    assert client.exists(name)

    report = await shutdown.shutdown()

    assert result(report).outcome is Outcome.OK
    assert result(report).phase.value == "release"
    assert not client.exists(name)
    assert locks.held == ()


async def test_async_lock_is_released_at_shutdown(aclient: redis.asyncio.Redis) -> None:
    """A held asyncio lock is tracked, then deleted by the release handler on the loop."""
    async with aclient:
        shutdown = coordinator()
        locks = RedisLocks(shutdown)
        name = key()
        lock = locks.lock(aclient, name, ttl=30)
        assert isinstance(lock, redis.asyncio.lock.Lock)
        assert await lock.acquire(blocking=False)
        assert locks.held == (name,)

        report = await shutdown.shutdown()

        assert result(report).outcome is Outcome.OK
        assert not await aclient.exists(name)
        assert locks.held == ()


@BOTH_LOOPS
async def test_lock_taken_in_a_thread_is_released_by_the_shutdown(client: redis.Redis) -> None:
    """A lock acquired in a thread that is gone by shutdown is still released with its token."""
    shutdown = coordinator()
    locks = RedisLocks(shutdown)
    name = key()
    lock = locks.lock(client, name, ttl=30)
    worker = threading.Thread(target=lock.acquire)
    worker.start()
    worker.join()
    assert client.exists(name)

    report = await shutdown.shutdown()

    assert result(report).outcome is Outcome.OK
    assert not client.exists(name)


def test_app_releases_a_lock_from_another_thread(client: redis.Redis) -> None:
    """The token is not thread-local: a release from another thread works and stops tracking."""
    locks = RedisLocks(coordinator())
    name = key()
    lock = locks.lock(client, name, ttl=30)
    assert lock.acquire()
    errors: list[BaseException] = []

    def release() -> None:
        try:
            lock.release()
        except BaseException as exc:
            errors.append(exc)

    worker = threading.Thread(target=release)
    worker.start()
    worker.join()

    assert errors == []
    assert not client.exists(name)
    assert locks.held == ()


async def test_context_managers_track_only_while_held(
    client: redis.Redis, aclient: redis.asyncio.Redis
) -> None:
    """``with`` and ``async with`` track the lock inside the block and release it on exit."""
    locks = RedisLocks(coordinator())
    sync_name, async_name = key(), key()
    async with aclient:
        with locks.lock(client, sync_name, ttl=30):
            assert locks.held == (sync_name,)
            async with locks.lock(aclient, async_name, ttl=30):
                assert locks.held == (sync_name, async_name)
            assert locks.held == (sync_name,)
            assert not await aclient.exists(async_name)
        assert locks.held == ()
        assert not client.exists(sync_name)


def every_argument(method: object) -> dict[str, object]:
    """A value for each parameter that redis-py's own *method* takes, by name."""
    values: dict[str, object] = {
        "sleep": 0.01,
        "blocking": True,
        "blocking_timeout": 5,
        "token": "the-token",
    }
    names = list(inspect.signature(method).parameters)[1:]  # type: ignore[arg-type]
    assert set(names) <= set(values), f"redis-py's acquire has new parameters: {names}"
    return {name: values[name] for name in names}


async def test_acquire_takes_every_argument_of_the_installed_redis_py(
    client: redis.Redis, aclient: redis.asyncio.Redis
) -> None:
    """acquire() passes on whatever redis-py's own takes (redis 8.2's asyncio ``sleep=`` too)."""
    locks = RedisLocks(coordinator())
    sync_name, async_name = key(), key()
    async with aclient:
        sync_lock = locks.lock(client, sync_name, ttl=30)
        assert sync_lock.acquire(**every_argument(redis.lock.Lock.acquire))
        async_lock = locks.lock(aclient, async_name, ttl=30)
        assert await async_lock.acquire(**every_argument(redis.asyncio.lock.Lock.acquire))
        assert locks.held == (sync_name, async_name)
        assert client.get(sync_name) == b"the-token"
        assert await aclient.get(async_name) == b"the-token"
        sync_lock.release()
        await async_lock.release()
    assert locks.held == ()


async def test_expired_lock_is_reported_and_the_new_owners_key_kept(
    client: redis.Redis, logs: pytest.LogCaptureFixture
) -> None:
    """A lock that expired and was taken by another owner is a warning, not a deletion."""
    shutdown = coordinator()
    locks = RedisLocks(shutdown)
    name, kept = key(), key()
    expired = locks.lock(client, name, ttl=0.1)
    assert expired.acquire()
    held = locks.lock(client, kept, ttl=30)
    assert held.acquire()
    time.sleep(0.2)
    assert client.set(name, "other-owner", nx=True)

    report = await shutdown.shutdown()

    assert result(report).outcome is Outcome.OK
    assert client.get(name) == b"other-owner"
    assert not client.exists(kept)
    (warning,) = records(logs, "not_owned")
    assert warning.levelno == logging.WARNING
    assert warning.lock == name  # type: ignore[attr-defined]
    assert warning.handler == "redis-locks"  # type: ignore[attr-defined]
    assert warning.phase == "release"  # type: ignore[attr-defined]


async def test_async_lock_taken_over_is_reported_not_deleted(
    aclient: redis.asyncio.Redis, logs: pytest.LogCaptureFixture
) -> None:
    """An asyncio lock whose key now holds another token is left to its new owner."""
    async with aclient:
        shutdown = coordinator()
        locks = RedisLocks(shutdown)
        name = key()
        lock = locks.lock(aclient, name, ttl=0.1)
        assert await lock.acquire()
        await anyio.sleep(0.2)
        thief = aclient.lock(name, timeout=30)
        assert await thief.acquire(blocking=False)

        report = await shutdown.shutdown()

        assert result(report).outcome is Outcome.OK
        assert await thief.owned()
        assert [r.lock for r in records(logs, "not_owned")] == [name]  # type: ignore[attr-defined]


@BOTH_LOOPS
async def test_server_down_fails_the_handler_and_the_rest_still_runs(
    client: redis.Redis, private_redis: RedisServer
) -> None:
    """Locks on a stopped server fail the handler; locks elsewhere and other handlers go on."""
    shutdown = coordinator()
    locks = RedisLocks(shutdown, timeout=3)
    ran: list[str] = []
    shutdown.add_handler(lambda: ran.append("release"), phase="release", name="other-release")
    shutdown.add_handler(lambda: ran.append("report"), phase="report", name="metrics")
    doomed_client = no_retry(private_redis.port)
    doomed, alive = key(), key()
    assert locks.lock(doomed_client, doomed, ttl=30).acquire()
    assert locks.lock(client, alive, ttl=30).acquire()
    private_redis.stop()

    report = await shutdown.shutdown()
    doomed_client.close()

    handler = result(report)
    assert handler.outcome is Outcome.ERROR
    assert handler.duration < 3
    assert handler.error is not None
    assert "ReleaseError: 1 of 2 redis locks not released" in handler.error
    assert doomed in handler.error
    assert "ConnectionError" in handler.error
    assert not client.exists(alive)
    assert sorted(ran) == ["release", "report"]
    assert result(report, "other-release").outcome is Outcome.OK
    assert result(report, "metrics").outcome is Outcome.OK


async def test_unreachable_client_is_not_retried_for_every_lock(
    private_redis: RedisServer, logs: pytest.LogCaptureFixture
) -> None:
    """After a connection error, the other locks of that client fail at once, not one by one."""
    shutdown = coordinator()
    locks = RedisLocks(shutdown, timeout=5, concurrency=2)
    # Each command against the stopped server takes ~0.3 s of retries: 20 locks two at a
    # time would take 3 s if every one were tried.
    slow_retry = redis.Redis(
        port=private_redis.port, retry=redis.retry.Retry(ConstantBackoff(0.15), 2)
    )
    names = [key() for _ in range(20)]
    for name in names:
        assert locks.lock(slow_retry, name, ttl=30).acquire()
    private_redis.stop()

    report = await shutdown.shutdown()
    slow_retry.close()

    handler = result(report)
    assert handler.outcome is Outcome.ERROR
    assert handler.error is not None
    assert "20 of 20 redis locks not released" in handler.error
    # Only the two releases already under way met the dead server; the rest were not tried.
    not_tried = [r for r in logs.records if "not tried" in r.getMessage()]
    assert len(not_tried) == 18


@pytest.mark.parametrize("kind", ["sync", "asyncio"])
async def test_frozen_server_times_out_within_the_handler_timeout(
    private_redis: RedisServer, kind: str, logs: pytest.LogCaptureFixture
) -> None:
    """A server that stops answering cuts the handler at its timeout; later phases still run."""
    shutdown = coordinator()
    locks = RedisLocks(shutdown, timeout=0.5)
    ran: list[str] = []
    shutdown.add_handler(lambda: ran.append("report"), phase="report", name="metrics")
    name = key()
    sync_client = redis.Redis(port=private_redis.port)
    async_client = redis.asyncio.Redis(port=private_redis.port)
    try:
        if kind == "sync":
            assert locks.lock(sync_client, name, ttl=30).acquire()
        else:
            assert await locks.lock(async_client, name, ttl=30).acquire()
        private_redis.pause()

        report = await shutdown.shutdown()
    finally:
        private_redis.resume()
        sync_client.close()
        await async_client.aclose()

    handler = result(report)
    assert handler.outcome is Outcome.TIMEOUT
    assert 0.4 < handler.duration < 3, "cut at its 0.5 s timeout, not held by the frozen server"
    assert ran == ["report"]
    assert result(report, "metrics").outcome is Outcome.OK
    (summary,) = [r for r in logs.records if "may still be held" in r.getMessage()]
    assert name in summary.getMessage()
    assert summary.timeout == 1  # type: ignore[attr-defined]


async def test_failed_app_release_keeps_the_lock_tracked(private_redis: RedisServer) -> None:
    """When the app's own release cannot reach the server, the shutdown still owns the retry."""
    locks = RedisLocks(coordinator())
    name = key()
    with no_retry(private_redis.port) as client:
        lock = locks.lock(client, name, ttl=30)
        assert lock.acquire()
        private_redis.stop()
        with pytest.raises(redis.exceptions.ConnectionError):
            lock.release()
    assert locks.held == (name,)


async def test_app_release_after_the_shutdown_released_it_is_a_no_op(
    client: redis.Redis, aclient: redis.asyncio.Redis
) -> None:
    """A block still holding a lock when the shutdown released it exits without an error."""
    shutdown = coordinator()
    locks = RedisLocks(shutdown)
    async with aclient:
        sync_lock = locks.lock(client, key(), ttl=30)
        async_lock = locks.lock(aclient, key(), ttl=30)
        assert sync_lock.acquire()
        assert await async_lock.acquire()

        assert (await shutdown.shutdown()).ok

        sync_lock.release()
        await async_lock.release()
        assert sync_lock.local.token is None
        assert async_lock.local.token is None


async def test_lock_taken_after_the_release_phase_is_warned_about(
    client: redis.Redis, logs: pytest.LogCaptureFixture
) -> None:
    """A lock acquired once the release handler ran cannot be released by it: a warning says so."""
    shutdown = coordinator()
    locks = RedisLocks(shutdown)
    await shutdown.shutdown()
    name = key()
    lock = locks.lock(client, name, ttl=30)

    assert lock.acquire()

    assert any(
        r.levelno == logging.WARNING and "after the release phase began" in r.getMessage()
        for r in logs.records
    )
    lock.release()
    assert not client.exists(name)


async def test_track_keys_with_a_token_deletes_only_keys_still_holding_it(
    client: redis.Redis, aclient: redis.asyncio.Redis, logs: pytest.LogCaptureFixture
) -> None:
    """A token-guarded release deletes the app's own keys and leaves another owner's value."""
    shutdown = coordinator()
    locks = RedisLocks(shutdown)
    mine, stolen, async_mine = key(), key(), key()
    client.set(mine, "pod-a")
    client.set(stolen, "pod-b")
    client.set(async_mine, "pod-a")
    locks.track_keys(client, mine, name="mine", token="pod-a")
    locks.track_keys(client, stolen, name="stolen", token="pod-a")
    async with aclient:
        locks.track_keys(aclient, async_mine, name="async-mine", token="pod-a")

        report = await shutdown.shutdown()

    assert result(report).outcome is Outcome.OK
    assert not client.exists(mine)
    assert not client.exists(async_mine)
    assert client.get(stolen) == b"pod-b"
    assert [r.lock for r in records(logs, "not_owned")] == ["stolen"]  # type: ignore[attr-defined]


async def test_track_keys_without_a_token_deletes_them_unless_untracked(
    client: redis.Redis,
) -> None:
    """Plain tracked keys are deleted at shutdown; an untracked handle is left alone."""
    shutdown = coordinator()
    locks = RedisLocks(shutdown)
    deleted, kept = key(), key()
    client.set(deleted, "1")
    client.set(kept, "1")
    locks.track_keys(client, deleted)
    handle = locks.track_keys(client, kept)
    assert handle.name == kept
    assert handle.untrack()
    assert locks.held == (deleted,)

    report = await shutdown.shutdown()

    assert report.ok
    assert not client.exists(deleted)
    assert client.exists(kept)
    assert not handle.untrack()


@BOTH_LOOPS
async def test_track_runs_custom_releases(logs: pytest.LogCaptureFixture) -> None:
    """Custom sync and async releases run once at shutdown; False means no longer held."""
    shutdown = coordinator()
    locks = RedisLocks(shutdown)
    calls: list[str] = []

    def sync_release() -> None:
        calls.append(f"sync on {threading.current_thread().name}")

    async def async_release() -> bool:
        calls.append("async")
        return False

    locks.track("sync-release", sync_release)
    locks.track("async-release", async_release)

    report = await shutdown.shutdown()

    assert result(report).outcome is Outcome.OK
    assert sorted(calls) == ["async", "sync on graceshut release sync-release"]
    assert [r.lock for r in records(logs, "not_owned")] == ["async-release"]  # type: ignore[attr-defined]


async def test_custom_release_error_fails_the_handler_after_the_others() -> None:
    """An exception in one release is the handler's error; the other releases still ran."""
    shutdown = coordinator()
    locks = RedisLocks(shutdown)
    calls: list[str] = []

    def broken() -> None:
        raise RuntimeError("boom")

    locks.track("broken", broken)
    locks.track("fine", lambda: calls.append("fine"))

    report = await shutdown.shutdown()

    assert calls == ["fine"]
    assert result(report).outcome is Outcome.ERROR
    assert result(report).error == (
        "ReleaseError: 1 of 2 redis locks not released: broken "
        "(first error: broken: RuntimeError: boom)"
    )


async def test_plain_function_returning_a_coroutine_is_an_error(
    aclient: redis.asyncio.Redis,
) -> None:
    """A lambda around an asyncio client releases nothing: an error, not a silent success."""
    async with aclient:
        shutdown = coordinator()
        locks = RedisLocks(shutdown)
        name = key()
        await aclient.set(name, "1")
        locks.track("lambda", lambda: aclient.delete(name))

        report = await shutdown.shutdown()

        assert result(report).outcome is Outcome.ERROR
        assert "make it an `async def`" in (result(report).error or "")
        assert await aclient.exists(name)


@BOTH_LOOPS
async def test_hundred_sync_locks_are_released_together(client: redis.Redis) -> None:
    """100 held locks are all deleted at shutdown, within the handler's timeout."""
    shutdown = coordinator()
    locks = RedisLocks(shutdown)
    names = [key() for _ in range(100)]
    for name in names:
        assert locks.lock(client, name, ttl=30).acquire()

    report = await shutdown.shutdown()

    assert result(report).outcome is Outcome.OK
    assert client.exists(*names) == 0


async def test_hundred_async_locks_are_released_together(aclient: redis.asyncio.Redis) -> None:
    """100 held asyncio locks are all deleted at shutdown, within the handler's timeout."""
    async with aclient:
        shutdown = coordinator()
        locks = RedisLocks(shutdown)
        names = [key() for _ in range(100)]
        for name in names:
            assert await locks.lock(aclient, name, ttl=30).acquire()

        report = await shutdown.shutdown()

        assert result(report).outcome is Outcome.OK
        assert await aclient.exists(*names) == 0


def test_bad_arguments_are_refused_at_once() -> None:
    """Misuse fails at registration, not at shutdown."""
    shutdown = coordinator()
    with pytest.raises(ValueError, match="concurrency"):
        RedisLocks(shutdown, concurrency=0)
    locks = RedisLocks(shutdown)
    with pytest.raises(ValueError, match="at least one key"):
        locks.track_keys(redis.Redis(port=free_port()))
    with pytest.raises(TypeError, match="callable"):
        locks.track("x", "not callable")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="already registered"):
        RedisLocks(shutdown)
