"""Spill and replay against real servers: PostgreSQL and Redis go away, a process is killed.

The story each test plays: the store fails at shutdown (stopped, or a table locked so
that the flush hangs), the fallback spills what was left to a directory, the store comes
back, and a new process replays the directory: every row or entry is there, once.
"""

from __future__ import annotations

import datetime as dt
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import psycopg
import pytest
import redis
import redis.retry
import sqlalchemy as sa
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from redis.backoff import NoBackoff
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import create_async_engine

import graceshut
from graceshut import Outcome
from graceshut.contrib.cache import flush_mapping
from graceshut.contrib.spill import SpillDirectory
from graceshut.contrib.sqlalchemy import WriteBehindBuffer

from ._servers import RedisServer

if TYPE_CHECKING:
    from ._postgres import PostgresServer

pytest_plugins = ["tests.contrib._postgres"]

pytestmark = pytest.mark.anyio

ASYNCIO = pytest.mark.parametrize("anyio_backend", ["asyncio"])
BOTH_LOOPS = pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])

#: The app's table, as the replaying process declares it too: client-made keys.
TABLE = """
metadata = sa.MetaData()
events = sa.Table(
    NAME,
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("payload", sa.String(40), nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
)
"""

#: A new process at the next start: replays twice (the second finds nothing).
REPLAY_ROWS = f"""
import json, sys
import anyio, sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import create_async_engine
import graceshut
from graceshut.contrib.spill import SpillDirectory
from graceshut.contrib.sqlalchemy import WriteBehindBuffer

URL, DIRECTORY, NAME = sys.argv[1:4]
{TABLE}
engine = sa.create_engine(URL)
buffer = WriteBehindBuffer(
    graceshut.Coordinator(environ={{}}),
    engine,
    postgresql.insert(events).on_conflict_do_nothing(),
    name="events",
    spill=SpillDirectory(DIRECTORY),
)
first = anyio.run(buffer.replay)
second = anyio.run(buffer.replay)
print(json.dumps({{"written": first.written, "rejected": first.rejected, "again": second.written}}))
"""


def coordinator() -> graceshut.Coordinator:
    return graceshut.Coordinator(grace_period=10, safety_margin=1, propagation_delay=0, environ={})


def make_table(url: str, name: str) -> sa.Table:
    namespace: dict[str, Any] = {"sa": sa, "NAME": name}
    exec(TABLE, namespace)  # noqa: S102 - the very declaration the replaying process runs
    table: sa.Table = namespace["events"]
    engine = sa.create_engine(url)
    namespace["metadata"].create_all(engine)
    engine.dispose()
    return table


def run_python(script: str, *args: str, timeout: float = 60) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout.splitlines()[-1]))


def stored_ids(dsn: str, name: str) -> list[int]:
    with psycopg.connect(dsn) as conn:
        return [row[0] for row in conn.execute(f"SELECT id FROM {name} ORDER BY id")]  # noqa: S608


_examples = 0


@ASYNCIO
@settings(max_examples=5, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    rows=st.integers(1, 400),
    written_before=st.floats(0, 1),
    batch_size=st.integers(5, 40),
    failure=st.sampled_from(["stopped", "hangs"]),
    fails_after=st.floats(-0.01, 0.03),
)
# The two stories of the docs, always: down before the shutdown, hung before it.
@example(rows=300, written_before=0.5, batch_size=10, failure="stopped", fails_after=-1)
@example(rows=300, written_before=0.0, batch_size=10, failure="hangs", fails_after=-1)
async def test_rows_spilled_when_postgres_fails_are_replayed_once_by_a_new_process(
    postgres: PostgresServer,
    pg_database: str,
    tmp_path_factory: pytest.TempPathFactory,
    *,
    rows: int,
    written_before: float,
    batch_size: int,
    failure: str,
    fails_after: float,
) -> None:
    """PostgreSQL stopped or hung at a random moment of the flush: no row lost or doubled."""
    global _examples  # noqa: PLW0603 - one fresh table per example
    _examples += 1
    name = f"events_{_examples}"
    url, dsn = postgres.url(pg_database), postgres.dsn(pg_database)
    table = make_table(url, name)
    directory = tmp_path_factory.mktemp("spill")
    engine = sa.create_engine(url, pool_pre_ping=True, connect_args={"connect_timeout": 2})
    coord = coordinator()
    buffer = WriteBehindBuffer(
        coord,
        engine,
        postgresql.insert(table).on_conflict_do_nothing(),
        batch_size=batch_size,
        timeout=1.2,
        name="events",
        spill=SpillDirectory(directory),
    )
    at = dt.datetime(2026, 11, 30, tzinfo=dt.timezone.utc)
    first = int(rows * written_before)
    buffer.extend({"id": i, "payload": f"p{i}", "at": at} for i in range(first))
    await buffer.flush()  # a periodic flush wrote these
    buffer.extend({"id": i, "payload": f"p{i}", "at": at} for i in range(first, rows))
    lock = psycopg.connect(dsn)

    async def fail() -> None:
        # Below 0: the store failed before the shutdown; else during the flush.
        if fails_after > 0:
            await anyio.sleep(fails_after)
        if failure == "stopped":
            await anyio.to_thread.run_sync(postgres.stop)
        else:  # the flush's next insert waits behind this lock until the timeout
            await anyio.to_thread.run_sync(lock.execute, f"LOCK TABLE {name}")

    try:
        async with anyio.create_task_group() as tg:
            if fails_after < 0:
                await fail()
            else:
                tg.start_soon(fail)
            report = await coord.shutdown()
    finally:
        lock.close()  # the hung writer may commit its batch now: replay must not double it
        if failure == "stopped":
            postgres.start()
        engine.dispose()

    (result,) = report.handlers
    if result.outcome is Outcome.OK:
        assert result.fallback is None
        assert buffer.spilled == 0
    else:
        assert result.fallback is not None
        assert result.fallback.outcome is Outcome.OK, result.to_dict()
        assert result.fallback.detail is not None
        assert result.fallback.detail["spilled"] == buffer.spilled
        assert buffer.spilled + buffer.written >= rows
    replayed = run_python(REPLAY_ROWS, url, str(directory), name)
    assert replayed == {"written": buffer.spilled, "rejected": 0, "again": 0}
    assert stored_ids(dsn, name) == list(range(rows))


#: Buffers many rows for a database nobody listens for, spills on a slow disk.
KILLED_MID_SPILL = f"""
import os, sys, time
import anyio, sqlalchemy as sa
import graceshut
from graceshut.contrib import _records, spill
from graceshut.contrib.sqlalchemy import WriteBehindBuffer

URL, DIRECTORY, NAME = sys.argv[1:4]
{TABLE}
def slow_disk(self, lines):
    # Half a chunk, a pause, the rest: the kill lands inside a line.
    data = b"".join(lines)
    os.write(self.fd, data[: len(data) // 2])
    time.sleep(0.3)
    os.write(self.fd, data[len(data) // 2 :])
    self.lines += len(lines)

_records.LineWriter.write = slow_disk
coordinator = graceshut.Coordinator(grace_period=30, safety_margin=1, propagation_delay=0)
at = __import__("datetime").datetime(2026, 11, 30)
buffer = WriteBehindBuffer(
    coordinator, sa.create_engine(URL), events, name="events", timeout=20,
    spill=spill.SpillDirectory(DIRECTORY),
)
buffer.extend({{"id": i, "payload": "x" * 30, "at": at}} for i in range(20_000))
print("spilling", flush=True)
anyio.run(coordinator.shutdown)
print("done", flush=True)
"""


@ASYNCIO
async def test_a_process_killed_mid_spill_leaves_a_file_whose_good_records_all_replay(
    postgres: PostgresServer, pg_database: str, tmp_path: Path
) -> None:
    """SIGKILL inside a line: the whole lines before it replay once, the torn one is kept."""
    name = "events_killed"
    url, dsn = postgres.url(pg_database), postgres.dsn(pg_database)
    table = make_table(url, name)
    nobody = f"postgresql+psycopg://postgres@127.0.0.1:{_closed_port()}/none"
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_MID_SPILL, nobody, str(tmp_path), name],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while not _torn_spill(tmp_path, lines=2000):
            assert child.poll() is None, child.communicate()
            assert time.monotonic() < deadline, "no spill file with a torn line appeared"
            await anyio.sleep(0.01)
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        out, _ = child.communicate()
    assert b"done" not in out

    spill = SpillDirectory(tmp_path)
    (path,) = spill.files("events")
    whole = path.read_bytes().count(b"\n")
    engine = sa.create_engine(url)
    buffer = WriteBehindBuffer(
        coordinator(),
        engine,
        postgresql.insert(table).on_conflict_do_nothing(),
        name="events",
        spill=spill,
    )
    try:
        result = await buffer.replay()
    finally:
        engine.dispose()

    assert whole >= 2000
    assert (result.written, result.rejected) == (whole, 1)
    assert stored_ids(dsn, name) == list(range(whole))
    (kept,) = result.rejected_files
    assert kept.read_bytes().count(b"\n") == 1  # the torn line, nothing else


def _torn_spill(directory: Path, *, lines: int) -> bool:
    """A spill file holds at least *lines* whole lines and ends inside one."""
    for path in directory.glob("*.jsonl"):
        data = path.read_bytes()
        if data.count(b"\n") >= lines and not data.endswith(b"\n"):
            return True
    return False


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


#: The next start of a cache app: replays the spilled entries into Redis.
REPLAY_ENTRIES = """
import json, sys
import anyio, redis
import graceshut
from graceshut.contrib.cache import flush_mapping
from graceshut.contrib.spill import SpillDirectory

PORT, DIRECTORY = int(sys.argv[1]), sys.argv[2]
client = redis.Redis(port=PORT)
flusher = flush_mapping(
    graceshut.Coordinator(environ={}), {}, client.mset, name="prices",
    spill=SpillDirectory(DIRECTORY),
)
first = anyio.run(flusher.replay)
second = anyio.run(flusher.replay)
print(json.dumps({"written": first.written, "again": second.written}))
"""


@BOTH_LOOPS
async def test_cache_entries_spilled_while_redis_is_down_are_replayed_by_a_new_process(
    tmp_path: Path,
) -> None:
    """Redis stopped at shutdown: entries spill; Redis back, a new process writes them all."""
    server = RedisServer().start()
    port = server.port
    client = redis.Redis(port=port, retry=redis.retry.Retry(NoBackoff(), 0))
    cache = {f"price:{i}": str(i * 10) for i in range(500)}
    coord = coordinator()
    flusher = flush_mapping(
        coord, cache, client.mset, batch_size=100, name="prices", spill=SpillDirectory(tmp_path)
    )
    server.stop()
    report = await coord.shutdown()

    (result,) = report.handlers
    assert result.outcome is Outcome.ERROR
    assert "ConnectionError" in (result.error or "")
    assert result.fallback is not None
    assert result.fallback.detail is not None
    assert result.fallback.detail["spilled"] == 500
    assert flusher.spilled == 500
    assert cache == {}

    again = RedisServer()
    again.port = port  # the Service's address does not change across restarts
    with again:
        replayed = run_python(REPLAY_ENTRIES, str(port), str(tmp_path))
        values = redis.Redis(port=port).mget([f"price:{i}" for i in range(500)])
    assert replayed == {"written": 500, "again": 0}
    assert values == [str(i * 10).encode() for i in range(500)]


@ASYNCIO
async def test_an_async_engine_spills_and_replays_the_same_way(
    postgres: PostgresServer, pg_database: str, tmp_path: Path
) -> None:
    """AsyncEngine: unreachable at shutdown, rows spill; replayed on the real server."""
    name = "events_async"
    url, dsn = postgres.url(pg_database), postgres.dsn(pg_database)
    table = make_table(url, name)
    statement = postgresql.insert(table).on_conflict_do_nothing()
    spill = SpillDirectory(tmp_path)
    nobody = create_async_engine(f"postgresql+psycopg://postgres@127.0.0.1:{_closed_port()}/x")
    coord = coordinator()
    buffer = WriteBehindBuffer(coord, nobody, statement, name="events", spill=spill)
    at = dt.datetime(2026, 11, 30, tzinfo=dt.timezone.utc)
    buffer.extend({"id": i, "payload": "x", "at": at} for i in range(50))
    report = await coord.shutdown()
    await nobody.dispose()
    assert report.handlers[0].fallback is not None
    assert buffer.spilled == 50

    engine = create_async_engine(url)
    again = WriteBehindBuffer(coordinator(), engine, statement, name="events", spill=spill)
    try:
        result = await again.replay()
    finally:
        await engine.dispose()
    assert result.written == 50
    assert stored_ids(dsn, name) == list(range(50))
