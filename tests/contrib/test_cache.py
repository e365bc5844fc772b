"""graceshut.contrib.cache writing real caches to real stores: Redis, SQLite and PostgreSQL.

Sync writers run on asyncio and on trio (``anyio_backend`` parametrized directly); async
writers built on redis.asyncio or an SQLAlchemy AsyncEngine run on asyncio only, because
both libraries are asyncio-only.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import redis
import redis.asyncio
import redis.retry
import sqlalchemy as sa
from redis.backoff import NoBackoff
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.ext.asyncio import create_async_engine

import graceshut
from graceshut import Outcome
from graceshut.contrib.cache import MappingFlusher, flush_mapping

from ._servers import RedisServer

if TYPE_CHECKING:
    from ._postgres import PostgresServer

# One registration for the whole run (an import per module would make one server each).
pytest_plugins = ["tests.contrib._postgres"]

pytestmark = pytest.mark.anyio

BOTH_LOOPS = pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
ASYNCIO = pytest.mark.parametrize("anyio_backend", ["asyncio"])


def coordinator() -> graceshut.Coordinator:
    return graceshut.Coordinator(grace_period=10, safety_margin=1, propagation_delay=0, environ={})


def result(report: graceshut.ShutdownReport, name: str) -> graceshut.HandlerResult:
    (found,) = [h for h in report.handlers if h.name == name]
    return found


def prices_table(metadata: sa.MetaData) -> sa.Table:
    return sa.Table(
        "prices",
        metadata,
        sa.Column("key", sa.String(40), primary_key=True),
        sa.Column("value", sa.String(40), nullable=False),
    )


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[sa.Engine]:
    engine = sa.create_engine(
        f"sqlite:///{tmp_path / 'cache.sqlite'}", connect_args={"timeout": 20}
    )
    yield engine
    engine.dispose()


@pytest.fixture
def pg_url(postgres: PostgresServer, pg_database: str) -> str:
    return postgres.url(pg_database)


def sqlite_upsert(engine: sa.Engine, table: sa.Table) -> Any:
    """The writer of the docs: an upsert, so that writing an entry again is harmless."""
    statement = sqlite_dialect.insert(table)
    statement = statement.on_conflict_do_update(
        index_elements=["key"], set_={"value": statement.excluded.value}
    )

    def write(batch: dict[str, str]) -> None:
        with engine.begin() as conn:
            conn.execute(statement, [{"key": k, "value": v} for k, v in batch.items()])

    return write


def stored(engine: sa.Engine) -> dict[str, str]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT key, value FROM prices"))
        return {str(row[0]): str(row[1]) for row in rows}


@BOTH_LOOPS
async def test_shutdown_upserts_the_cache_into_sqlite_and_empties_it(
    sqlite_engine: sa.Engine,
) -> None:
    """The flush phase writes every entry in batches and leaves the mapping empty."""
    metadata = sa.MetaData()
    table = prices_table(metadata)
    metadata.create_all(sqlite_engine)
    cache = {f"k{i}": f"v{i}" for i in range(25)}
    coord = coordinator()
    flush_mapping(coord, cache, sqlite_upsert(sqlite_engine, table), batch_size=10, name="cache")

    report = await coord.shutdown()

    assert result(report, "cache").outcome is Outcome.OK
    assert stored(sqlite_engine) == {f"k{i}": f"v{i}" for i in range(25)}
    assert cache == {}


@ASYNCIO
async def test_async_writer_upserts_into_postgres(pg_url: str) -> None:
    """An async writer on an AsyncEngine, as in the docstring, writes the cache to PostgreSQL."""
    metadata = sa.MetaData()
    table = prices_table(metadata)
    checker = sa.create_engine(pg_url)
    metadata.create_all(checker)
    engine = create_async_engine(pg_url)
    statement = postgresql.insert(table)
    statement = statement.on_conflict_do_update(
        index_elements=["key"], set_={"value": statement.excluded.value}
    )

    async def to_postgres(batch: dict[str, str]) -> None:
        async with engine.begin() as conn:
            await conn.execute(statement, [{"key": k, "value": v} for k, v in batch.items()])

    with checker.begin() as conn:
        conn.execute(sa.text("INSERT INTO prices VALUES ('k1', 'stale')"))
    cache = {f"k{i}": f"v{i}" for i in range(5)}
    coord = coordinator()
    flush_mapping(coord, cache, to_postgres, batch_size=2, name="cache")
    try:
        report = await coord.shutdown()
    finally:
        await engine.dispose()

    assert report.ok
    assert stored(checker) == {f"k{i}": f"v{i}" for i in range(5)}
    assert cache == {}
    checker.dispose()


@ASYNCIO
async def test_async_writer_to_redis(redis_server: RedisServer) -> None:
    """The Redis example of the docstring: MSET per batch, every key there at the end."""
    prefix = f"cache:{uuid.uuid4().hex}:"
    client = redis.asyncio.Redis(port=redis_server.port)

    async def to_redis(batch: dict[str, str]) -> None:
        await client.mset({f"{prefix}{key}": value for key, value in batch.items()})

    cache = {f"k{i}": f"v{i}" for i in range(1200)}
    coord = coordinator()
    flush_mapping(coord, cache, to_redis, batch_size=500, name="cache")
    async with client:
        report = await coord.shutdown()
        assert report.ok
        keys = [f"{prefix}k{i}" for i in range(1200)]
        assert await client.mget(keys) == [f"v{i}".encode() for i in range(1200)]
    assert cache == {}


@BOTH_LOOPS
async def test_redis_down_fails_the_handler_in_time_and_keeps_the_cache(
    private_redis: RedisServer,
) -> None:
    """With Redis stopped the handler fails fast, says what is left, and the rest still runs."""
    client = redis.Redis(port=private_redis.port, retry=redis.retry.Retry(NoBackoff(), 0))
    ran: list[str] = []

    def to_redis(batch: dict[str, str]) -> None:
        client.mset(batch)

    async def witness() -> None:
        ran.append("release")

    cache = {f"k{i}": f"v{i}" for i in range(10)}
    coord = coordinator()
    flush_mapping(coord, cache, to_redis, batch_size=4, timeout=3, name="cache")
    coord.add_handler(witness, phase="release", timeout=1, name="witness")
    private_redis.stop()
    try:
        report = await coord.shutdown()
    finally:
        client.close()

    flushed = result(report, "cache")
    assert flushed.outcome is Outcome.ERROR
    assert flushed.duration < 3
    assert flushed.error is not None
    assert "wrote 0 of 10 entries, then a batch of 4 failed; 10 entries kept" in flushed.error
    assert "ConnectionError" in flushed.error
    assert ran == ["release"]
    assert cache == {f"k{i}": f"v{i}" for i in range(10)}


@BOTH_LOOPS
async def test_failed_batch_keeps_its_entries_and_a_retry_writes_each_once(
    postgres: PostgresServer, pg_url: str
) -> None:
    """A batch hitting a constraint stays in the mapping; the retry writes only what is left."""
    engine = sa.create_engine(pg_url)
    metadata = sa.MetaData()
    table = prices_table(metadata)
    metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO prices VALUES ('k4', 'squatter')"))

    def plain_insert(batch: dict[str, str]) -> None:
        # No upsert: writing any entry twice would fail on the primary key.
        with engine.begin() as conn:
            conn.execute(table.insert(), [{"key": k, "value": v} for k, v in batch.items()])

    cache = {f"k{i}": f"v{i}" for i in range(10)}
    coord = coordinator()
    flusher = flush_mapping(coord, cache, plain_insert, batch_size=3, name="cache")
    try:
        report = await coord.shutdown()
        flushed = result(report, "cache")
        assert flushed.outcome is Outcome.ERROR
        assert flushed.error is not None
        assert "wrote 3 of 10 entries, then a batch of 3 failed; 7 entries kept" in flushed.error
        assert "UniqueViolation" in flushed.error
        assert list(cache) == [f"k{i}" for i in range(3, 10)]

        with engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM prices WHERE key = 'k4'"))
        assert await flusher.flush() == 7
        assert stored(engine) == {f"k{i}": f"v{i}" for i in range(10)}
        assert cache == {}
    finally:
        engine.dispose()


@BOTH_LOOPS
async def test_a_value_replaced_during_the_write_is_written_by_a_second_pass(
    sqlite_engine: sa.Engine,
) -> None:
    """An entry updated while its batch is written stays, and the next pass writes the new value."""
    metadata = sa.MetaData()
    table = prices_table(metadata)
    metadata.create_all(sqlite_engine)
    upsert = sqlite_upsert(sqlite_engine, table)
    cache = {"a": "old", "b": "b1"}
    batches: list[dict[str, str]] = []

    def write(batch: dict[str, str]) -> None:
        upsert(batch)
        batches.append(batch)
        if len(batches) == 1:
            cache["a"] = "new"  # what a request finishing late would do

    coord = coordinator()
    flush_mapping(coord, cache, write, name="cache")
    report = await coord.shutdown()

    assert report.ok
    assert batches == [{"a": "old", "b": "b1"}, {"a": "new"}]
    assert stored(sqlite_engine) == {"a": "new", "b": "b1"}
    assert cache == {}


@BOTH_LOOPS
async def test_a_getter_is_resolved_at_shutdown(sqlite_engine: sa.Engine) -> None:
    """A callable source is called when the flush runs, so the cache may be made later."""
    metadata = sa.MetaData()
    table = prices_table(metadata)
    metadata.create_all(sqlite_engine)
    state: dict[str, dict[str, str]] = {}
    coord = coordinator()
    flush_mapping(coord, lambda: state["cache"], sqlite_upsert(sqlite_engine, table), name="c")
    state["cache"] = {"late": "made after registration"}

    assert (await coord.shutdown()).ok
    assert stored(sqlite_engine) == {"late": "made after registration"}
    assert state["cache"] == {}


@BOTH_LOOPS
async def test_a_writer_cut_off_by_its_timeout_keeps_its_entries(
    sqlite_engine: sa.Engine, tmp_path: Path
) -> None:
    """A write blocked past the timeout keeps its entries; the upsert retry is harmless."""
    metadata = sa.MetaData()
    table = prices_table(metadata)
    metadata.create_all(sqlite_engine)
    cache = {"a": "1", "b": "2"}
    coord = coordinator()
    flusher = flush_mapping(
        coord, cache, sqlite_upsert(sqlite_engine, table), timeout=0.5, name="cache"
    )
    holder = sqlite3.connect(tmp_path / "cache.sqlite", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        report = await coord.shutdown()
    finally:
        holder.execute("ROLLBACK")
        holder.close()

    flushed = result(report, "cache")
    assert flushed.outcome is Outcome.TIMEOUT
    assert flushed.duration < 4, "cut at its 0.5 s timeout, before SQLite's 5 s busy timeout"
    assert cache == {"a": "1", "b": "2"}  # written or not, nobody could tell: kept
    assert await flusher.flush() == 2
    assert stored(sqlite_engine) == {"a": "1", "b": "2"}
    assert cache == {}


def test_a_stuck_sync_writer_does_not_keep_the_process_alive(tmp_path: Path) -> None:
    """A sync writer blocked for good past its timeout is abandoned; the process still exits."""
    script = tmp_path / "stuck.py"
    script.write_text(
        textwrap.dedent(
            """
            import threading, anyio, graceshut
            from graceshut.contrib.cache import flush_mapping

            coordinator = graceshut.Coordinator(
                grace_period=10, safety_margin=1, propagation_delay=0, environ={}
            )
            flush_mapping(
                coordinator, {"k": "v"}, lambda batch: threading.Event().wait(),
                timeout=0.3, name="stuck",
            )

            async def main():
                report = await coordinator.shutdown()
                print(report.handlers[0].outcome.value, flush=True)

            anyio.run(main)
            """
        )
    )
    # The writer never returns: a process held by its thread would hit this timeout.
    completed = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=30, check=False
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "timeout"


@BOTH_LOOPS
async def test_a_plain_writer_returning_a_coroutine_keeps_the_entries() -> None:
    """A lambda around an async call wrote nothing: the flush fails and keeps every entry."""

    async def write(batch: dict[str, str]) -> None:
        raise AssertionError("never awaited")

    cache = {"a": "1"}
    coord = coordinator()
    writer = lambda batch: write(batch)  # noqa: E731, PLW0108 - what is tested: no async def
    flush_mapping(coord, cache, writer, name="cache")
    report = await coord.shutdown()
    error = result(report, "cache").error
    assert error is not None
    assert "returned an awaitable from a plain function" in error
    assert cache == {"a": "1"}


@BOTH_LOOPS
async def test_bad_arguments_are_refused_at_registration() -> None:
    """A source that is no mapping, a writer that is not callable, or batch_size 0 fail early."""
    coord = coordinator()
    with pytest.raises(TypeError, match="mutable mapping"):
        flush_mapping(coord, 42, print)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="writer must be callable"):
        flush_mapping(coord, {}, "print")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch_size=0"):
        flush_mapping(coord, {}, print, batch_size=0)
    assert coord.handlers == ()
    flusher: MappingFlusher[str, int] = MappingFlusher(list, print)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not a mutable mapping"):
        await flusher.flush()
