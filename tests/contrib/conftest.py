"""Real Redis and etcd servers: one per test session, and private ones to stop or pause."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ._servers import EtcdServer, RedisServer


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A redis-server shared by the session; tests use their own key names."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A redis-server of the test's own, free to stop or pause."""
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="session")
def etcd_server() -> Iterator[EtcdServer]:
    """An etcd member shared by the session; tests use their own keys."""
    with EtcdServer() as server:
        yield server


@pytest.fixture
def private_etcd() -> Iterator[EtcdServer]:
    """An etcd member of the test's own, free to stop or pause."""
    with EtcdServer() as server:
        yield server
