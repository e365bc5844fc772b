"""Every integration speaks the same words: timeout, ttl, phase, name, pending; one error family."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

import graceshut
import graceshut.contrib
from graceshut import Phase

MODULES = [
    "graceshut.contrib.cache",
    "graceshut.contrib.etcd",
    "graceshut.contrib.prometheus",
    "graceshut.contrib.redis",
    "graceshut.contrib.spill",
    "graceshut.contrib.sqlalchemy",
    "graceshut.contrib.termination",
    "graceshut.contrib.webhook",
]


def registering() -> dict[str, Callable[..., Any]]:
    """The public callables that register a shutdown handler on the coordinator given."""
    from graceshut.contrib.cache import flush_mapping
    from graceshut.contrib.etcd import EtcdLeases
    from graceshut.contrib.redis import RedisLocks
    from graceshut.contrib.sqlalchemy import WriteBehindBuffer, dispose_engine
    from graceshut.contrib.webhook import notify

    return {
        "RedisLocks": RedisLocks,
        "EtcdLeases": EtcdLeases,
        "WriteBehindBuffer": WriteBehindBuffer,
        "dispose_engine": dispose_engine,
        "flush_mapping": flush_mapping,
        "notify": notify,
    }


@pytest.mark.parametrize("name", sorted(registering()))
def test_every_handler_takes_timeout_name_and_phase(name: str) -> None:
    """Each integration that registers a handler takes ``timeout``, ``name`` and ``phase``."""
    parameters = inspect.signature(registering()[name]).parameters
    for word in ("timeout", "name", "phase"):
        assert word in parameters, f"{name} has no {word}="
        assert parameters[word].kind is inspect.Parameter.KEYWORD_ONLY


def test_phase_moves_each_handler() -> None:
    """``phase=`` puts each integration's handler in the phase asked for."""
    coordinator = graceshut.Coordinator(environ={})
    engine = sa.create_engine("sqlite://")
    table = sa.Table("rows", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True))
    made = registering()
    made["RedisLocks"](coordinator, phase="drain", name="locks")
    made["EtcdLeases"](coordinator, object(), phase="drain", name="leases")
    made["WriteBehindBuffer"](coordinator, engine, table, phase="release", name="buffer")
    made["dispose_engine"](coordinator, engine, phase="report", name="pool")
    made["flush_mapping"](coordinator, {}, lambda _batch: None, phase="release", name="cache")
    made["notify"](coordinator, "http://127.0.0.1:9/", phase="report", name="hook")
    phases = {h.name: h.phase for h in coordinator.handlers}
    assert phases == {
        "locks": Phase.DRAIN,
        "leases": Phase.DRAIN,
        "buffer": Phase.RELEASE,
        "pool": Phase.REPORT,
        "cache": Phase.RELEASE,
        "hook": Phase.REPORT,
    }


def test_lock_time_to_live_is_ttl_everywhere() -> None:
    """A lock's or lease's time to live is ``ttl`` in Redis and etcd alike."""
    from graceshut.contrib.etcd import EtcdLeases
    from graceshut.contrib.redis import RedisLocks

    redis_lock = inspect.signature(RedisLocks.lock).parameters
    assert "ttl" in redis_lock
    assert "timeout" not in redis_lock
    assert "acquire_timeout" in redis_lock
    assert "ttl" in inspect.signature(EtcdLeases.lock).parameters
    assert "acquire_timeout" in inspect.signature(EtcdLeases.lock).parameters
    assert "ttl" in inspect.signature(EtcdLeases.grant).parameters


def test_one_error_family() -> None:
    """Every exception an integration defines derives from `IntegrationError`."""
    found = []
    for name in MODULES:
        module = importlib.import_module(name)
        for value in vars(module).values():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__.startswith("graceshut.contrib")
            ):
                found.append(value)
                assert issubclass(value, graceshut.contrib.IntegrationError), value
    assert len(found) >= 10


def test_release_error_is_one_class() -> None:
    """Redis and etcd raise the same `ReleaseError`, and flushes share `FlushError`."""
    from graceshut.contrib import cache, etcd, redis, sqlalchemy

    assert redis.ReleaseError is etcd.ReleaseError is graceshut.contrib.ReleaseError
    error = cache.MappingFlushError("x", written=1, pending=2)
    assert isinstance(error, graceshut.contrib.FlushError)
    assert (error.written, error.pending) == (1, 2)
    assert issubclass(sqlalchemy.BufferFlushError, graceshut.contrib.FlushError)
