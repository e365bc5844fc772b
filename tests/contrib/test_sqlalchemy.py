"""graceshut.contrib.sqlalchemy against real databases: SQLite files and a PostgreSQL server.

Engines under test: sync SQLite (pysqlite), async SQLite (aiosqlite), sync PostgreSQL and
async PostgreSQL (both psycopg 3). Each test names the engines it runs on and the event
loops with them, by parametrizing ``anyio_backend`` directly: sync engines run on asyncio
and on trio, async engines on asyncio only, because SQLAlchemy's asyncio extension drives
its drivers through asyncio (one test checks the clear error an AsyncEngine gives on trio).
"""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import graceshut
from graceshut import Outcome
from graceshut.contrib.sqlalchemy import (
    BufferClosedError,
    BufferFullError,
    WriteBehindBuffer,
    dispose_engine,
    dispose_when_idle,
)

if TYPE_CHECKING:
    from ._postgres import PostgresServer

# One registration for the whole run (an import per module would make one server each).
pytest_plugins = ["tests.contrib._postgres"]

pytestmark = pytest.mark.anyio


def _combos(*kinds: str) -> list[Any]:
    backends = {"sqlite": ("asyncio", "trio"), "postgres": ("asyncio", "trio")}
    return [
        pytest.param(kind, backend, id=f"{kind}-{backend}")
        for kind in kinds
        for backend in backends.get(kind, ("asyncio",))
    ]


ALL_ENGINES = _combos("sqlite", "aiosqlite", "postgres", "postgres-async")
SQLITE_ENGINES = _combos("sqlite", "aiosqlite")
POSTGRES_ENGINES = _combos("postgres", "postgres-async")
DB_PARAMS = ("db_kind", "anyio_backend")


@dataclasses.dataclass
class Database:
    """One empty database, the engines a test made on it, and a sync engine to check it."""

    kind: str
    url: str
    checker: sa.Engine
    server: PostgresServer | None = None
    path: Path | None = None
    engines: list[sa.Engine | AsyncEngine] = dataclasses.field(default_factory=list)

    @property
    def is_async(self) -> bool:
        return self.kind in {"aiosqlite", "postgres-async"}

    def engine(self, **options: Any) -> sa.Engine | AsyncEngine:
        """An engine of this test's kind; pre-ping so that a restarted server is found."""
        options.setdefault("pool_pre_ping", True)
        engine = (create_async_engine if self.is_async else sa.create_engine)(self.url, **options)
        self.engines.append(engine)
        return engine

    def create(self, make: Callable[[sa.MetaData], sa.Table]) -> sa.Table:
        metadata = sa.MetaData()
        table = make(metadata)
        metadata.create_all(self.checker)
        return table

    def execute(self, sql: str, **params: Any) -> None:
        with self.checker.begin() as conn:
            conn.execute(sa.text(sql), params)

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        with self.checker.connect() as conn:
            return [tuple(row) for row in conn.execute(sa.text(sql))]

    def server_sessions(self) -> int:
        """Sessions on this PostgreSQL database other than the checker's own."""
        with self.checker.connect() as conn:
            return int(
                conn.execute(
                    sa.text(
                        "SELECT count(*) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                ).scalar_one()
            )


@pytest.fixture
async def db(
    db_kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Database]:
    """An empty database of the kind the test is parametrized with."""
    if db_kind in {"sqlite", "aiosqlite"}:
        path = tmp_path / "test.sqlite"
        driver = "sqlite+aiosqlite" if db_kind == "aiosqlite" else "sqlite"
        database = Database(db_kind, f"{driver}:///{path}", sa.create_engine(f"sqlite:///{path}"))
        database.path = path
    else:
        server: PostgresServer = request.getfixturevalue("postgres")
        url = server.url(request.getfixturevalue("pg_database"))
        database = Database(db_kind, url, sa.create_engine(url, pool_pre_ping=True), server)
    try:
        yield database
    finally:
        for engine in database.engines:
            if isinstance(engine, AsyncEngine):
                await engine.dispose()
            else:
                engine.dispose()
        database.checker.dispose()


def events_table(metadata: sa.MetaData, name: str = "events") -> sa.Table:
    """``seq`` numbers rows in insertion order; ``id`` is the row's own key."""
    return sa.Table(
        name,
        metadata,
        sa.Column("seq", sa.Integer, sa.Identity(), primary_key=True),
        sa.Column("id", sa.Integer, nullable=False, unique=True),
        sa.Column("payload", sa.String(40), nullable=False, server_default="none"),
    )


def coordinator() -> graceshut.Coordinator:
    return graceshut.Coordinator(grace_period=10, safety_margin=1, propagation_delay=0)


def result(report: graceshut.ShutdownReport, name: str) -> graceshut.HandlerResult:
    (found,) = [h for h in report.handlers if h.name == name]
    return found


def add_witness(coord: graceshut.Coordinator, phase: str, ran: list[str]) -> None:
    """A plain handler in *phase* that records that it ran."""

    async def witness() -> None:
        ran.append(phase)

    coord.add_handler(witness, phase=phase, timeout=2, name=f"witness-{phase}")


async def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(0.01)


# -- the write-behind buffer -------------------------------------------------------------


@pytest.mark.parametrize(DB_PARAMS, ALL_ENGINES)
async def test_shutdown_writes_every_row_once_in_append_order(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """The flush phase inserts every appended row once, batch after batch, in append order."""
    caplog.set_level(logging.INFO, logger="graceshut")
    table = db.create(events_table)
    coord = coordinator()
    buffer = WriteBehindBuffer(coord, db.engine(), table, batch_size=7, name="events")
    for i in range(50):
        buffer.append({"id": i, "payload": f"p{i}"})

    report = await coord.shutdown()

    assert result(report, "events").outcome is Outcome.OK
    assert db.rows("SELECT id, payload FROM events ORDER BY seq") == [
        (i, f"p{i}") for i in range(50)
    ]
    assert (len(buffer), buffer.accepted, buffer.written, buffer.closed) == (0, 50, 50, True)
    (record,) = [r for r in caplog.records if getattr(r, "table", None) == "events"]
    assert (record.__dict__["written"], record.__dict__["pending"]) == (50, 0)


@pytest.mark.parametrize(DB_PARAMS, ALL_ENGINES)
async def test_append_after_the_shutdown_flush_is_refused(db: Database) -> None:
    """Once the shutdown flush has run, append raises instead of accepting a row that is lost."""
    table = db.create(events_table)
    coord = coordinator()
    buffer = WriteBehindBuffer(coord, db.engine(), table, name="events")
    buffer.append({"id": 1})
    await coord.shutdown()

    with pytest.raises(BufferClosedError, match="shutdown flush has run"):
        buffer.append({"id": 2})
    with pytest.raises(BufferClosedError):
        buffer.extend([{"id": 3}])
    assert db.rows("SELECT id FROM events") == [(1,)]


@pytest.mark.parametrize(DB_PARAMS, ALL_ENGINES)
async def test_rows_with_different_columns_share_a_batch(db: Database) -> None:
    """Rows that leave out a column get its default, in the same batch as complete rows."""
    table = db.create(events_table)
    coord = coordinator()
    buffer = WriteBehindBuffer(coord, db.engine(), table, batch_size=100, name="events")
    for i in range(10):
        buffer.append({"id": i, "payload": f"p{i}"} if i % 2 else {"id": i})

    assert await buffer.flush() == 10
    assert db.rows("SELECT id, payload FROM events ORDER BY id") == [
        (i, f"p{i}" if i % 2 else "none") for i in range(10)
    ]


@pytest.mark.parametrize(DB_PARAMS, ALL_ENGINES)
async def test_failed_batch_stays_buffered_and_a_retry_writes_it_once(db: Database) -> None:
    """A batch hitting a constraint stays, in order; once fixed, a retry writes each row once."""
    table = db.create(events_table)
    db.execute("INSERT INTO events (id, payload) VALUES (12, 'squatter')")
    coord = coordinator()
    buffer = WriteBehindBuffer(coord, db.engine(), table, batch_size=5, name="events")
    buffer.extend({"id": i, "payload": f"p{i}"} for i in range(20))

    report = await coord.shutdown()

    flushed = result(report, "events")
    assert flushed.outcome is Outcome.ERROR
    assert flushed.error is not None
    assert "10 rows written to events, then a batch of 5 failed; 10 rows stay buffered" in (
        flushed.error
    )
    assert "IntegrityError" in flushed.error
    assert db.rows("SELECT id FROM events ORDER BY seq") == [(12,), *((i,) for i in range(10))]
    assert (len(buffer), buffer.closed) == (10, True)

    db.execute("DELETE FROM events WHERE id = 12")
    assert await buffer.flush() == 10

    assert db.rows("SELECT id, payload FROM events ORDER BY id") == [
        (i, f"p{i}") for i in range(20)
    ]
    assert db.rows("SELECT id FROM events WHERE seq > 1 ORDER BY seq") == [(i,) for i in range(20)]
    assert (len(buffer), buffer.written) == (0, 20)


@pytest.mark.parametrize(DB_PARAMS, POSTGRES_ENGINES)
async def test_database_down_fails_the_flush_in_time_and_other_handlers_run(
    db: Database,
) -> None:
    """With the server stopped the flush fails fast and clearly; other handlers still run."""
    assert db.server is not None
    table = db.create(events_table)
    coord = coordinator()
    ran: list[str] = []
    add_witness(coord, "flush", ran)
    add_witness(coord, "release", ran)
    buffer = WriteBehindBuffer(coord, db.engine(), table, batch_size=4, timeout=3, name="events")
    buffer.extend({"id": i} for i in range(10))

    with db.server.stopped():
        report = await coord.shutdown()

    flushed = result(report, "events")
    assert flushed.outcome is Outcome.ERROR
    assert flushed.duration < 3
    assert flushed.error is not None
    assert "0 rows written to events, then a batch of 4 failed; 10 rows stay buffered" in (
        flushed.error
    )
    assert "OperationalError" in flushed.error
    assert sorted(ran) == ["flush", "release"]
    assert result(report, "witness-release").outcome is Outcome.OK
    assert len(buffer) == 10

    assert await buffer.flush() == 10  # the server is back
    assert db.rows("SELECT id FROM events ORDER BY seq") == [(i,) for i in range(10)]


@pytest.mark.parametrize(DB_PARAMS, SQLITE_ENGINES)
async def test_flush_cut_off_by_its_timeout_never_writes_a_row_twice(db: Database) -> None:
    """A batch blocked past the timeout finishes in the background; a retry skips it."""
    assert db.path is not None
    table = db.create(events_table)
    coord = coordinator()
    ran: list[str] = []
    add_witness(coord, "release", ran)
    engine = db.engine(connect_args={"timeout": 20})  # SQLite's busy timeout
    buffer = WriteBehindBuffer(coord, engine, table, batch_size=5, timeout=0.5, name="events")
    buffer.extend({"id": i} for i in range(12))
    holder = sqlite3.connect(db.path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        report = await coord.shutdown()
        flushed = result(report, "events")
        assert flushed.outcome is Outcome.TIMEOUT
        assert flushed.duration < 5, "cut at its 0.5 s timeout, not at SQLite's 20 s busy timeout"
        assert ran == ["release"]
        assert len(buffer) == 12
    finally:
        holder.execute("ROLLBACK")
        holder.close()

    # The abandoned writer commits the batch it had started, then stops.
    await wait_until(lambda: buffer.written == 5)
    assert await buffer.flush() == 7
    assert db.rows("SELECT id FROM events ORDER BY seq") == [(i,) for i in range(12)]


@pytest.mark.parametrize(DB_PARAMS, _combos("sqlite", "aiosqlite"))
async def test_run_flushes_periodically_and_ends_with_the_buffer(db: Database) -> None:
    """run() writes appended rows every interval, and returns once shutdown closed the buffer."""
    table = db.create(events_table)
    coord = coordinator()
    buffer = WriteBehindBuffer(coord, db.engine(), table, name="events")
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(buffer.run, 0.02)
            buffer.extend({"id": i} for i in range(3))
            await wait_until(lambda: buffer.written == 3)
            buffer.append({"id": 3})
            await wait_until(lambda: buffer.written == 4)
            await coord.shutdown()
    assert db.rows("SELECT id FROM events ORDER BY seq") == [(i,) for i in range(4)]


@pytest.mark.parametrize(DB_PARAMS, _combos("sqlite"))
async def test_run_logs_a_failed_flush_and_retries_it_on_the_next_tick(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """A periodic flush that fails is logged with its counts; a later tick writes the rows."""
    table = db.create(events_table)
    db.execute("INSERT INTO events (id, payload) VALUES (1, 'squatter')")
    coord = coordinator()
    buffer = WriteBehindBuffer(coord, db.engine(), table, name="events")
    buffer.extend({"id": i} for i in range(3))
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(buffer.run, 0.02)
            await wait_until(
                lambda: any("periodic flush failed" in r.message for r in caplog.records)
            )
            db.execute("DELETE FROM events WHERE id = 1")
            await wait_until(lambda: buffer.written == 3)
            tg.cancel_scope.cancel()
    record = next(r for r in caplog.records if "periodic flush failed" in r.message)
    assert (record.levelno, record.__dict__["pending"]) == (logging.WARNING, 3)
    assert db.rows("SELECT id FROM events ORDER BY seq") == [(0,), (1,), (2,)]


@pytest.mark.parametrize(DB_PARAMS, _combos("sqlite"))
async def test_orm_instances_are_copied_at_append(db: Database) -> None:
    """A mapped class as target takes instances, maps attribute keys to columns, copies values."""

    class Base(DeclarativeBase):
        pass

    class Event(Base):
        __tablename__ = "orm_events"
        id_: Mapped[int] = mapped_column("id", primary_key=True)
        payload: Mapped[str] = mapped_column(server_default="none")

    Base.metadata.create_all(db.checker)
    coord = coordinator()
    buffer = WriteBehindBuffer(coord, db.engine(), Event, name="events")
    first = Event(id_=1, payload="kept")
    buffer.append(first)
    first.payload = "changed after append"
    buffer.append(Event(id_=2))
    buffer.append({"id": 3, "payload": "mapping"})
    with pytest.raises(TypeError, match="cannot buffer"):
        buffer.append(object())

    await coord.shutdown()
    assert db.rows("SELECT id, payload FROM orm_events ORDER BY id") == [
        (1, "kept"),
        (2, "none"),
        (3, "mapping"),
    ]


@pytest.mark.parametrize(DB_PARAMS, _combos("sqlite"))
async def test_an_insert_statement_target_makes_writes_idempotent(db: Database) -> None:
    """An Insert with ON CONFLICT DO NOTHING as target skips rows that already exist."""
    table = db.create(events_table)
    db.execute("INSERT INTO events (id, payload) VALUES (2, 'first')")
    coord = coordinator()
    statement = sqlite_dialect.insert(table).on_conflict_do_nothing(index_elements=["id"])
    buffer = WriteBehindBuffer(coord, db.engine(), statement, name="events")
    buffer.extend({"id": i, "payload": "buffered"} for i in range(4))

    report = await coord.shutdown()
    assert report.ok
    assert db.rows("SELECT id, payload FROM events ORDER BY id") == [
        (0, "buffered"),
        (1, "buffered"),
        (2, "first"),
        (3, "buffered"),
    ]


@pytest.mark.parametrize(DB_PARAMS, _combos("sqlite"))
async def test_max_pending_refuses_appends_all_or_nothing(db: Database) -> None:
    """With max_pending reached, append and extend raise and add nothing."""
    table = db.create(events_table)
    buffer = WriteBehindBuffer(coordinator(), db.engine(), table, max_pending=3, name="events")
    buffer.extend([{"id": 0}, {"id": 1}])
    with pytest.raises(BufferFullError, match="max_pending=3"):
        buffer.extend([{"id": 2}, {"id": 3}])
    buffer.append({"id": 2})
    with pytest.raises(BufferFullError):
        buffer.append({"id": 3})
    assert (len(buffer), buffer.accepted) == (3, 3)
    assert await buffer.flush() == 3
    buffer.append({"id": 3})
    assert len(buffer) == 1


@pytest.mark.parametrize(DB_PARAMS, [pytest.param("aiosqlite", "trio", id="aiosqlite-trio")])
async def test_an_async_engine_on_trio_fails_with_a_clear_error(db: Database) -> None:
    """An AsyncEngine under trio is refused with a message that says what to do."""
    table = db.create(events_table)
    coord = coordinator()
    buffer = WriteBehindBuffer(coord, db.engine(), table, name="events")
    buffer.append({"id": 1})
    with pytest.raises(RuntimeError, match="AsyncEngine works on asyncio only"):
        await buffer.flush()
    report = await coord.shutdown()
    error = result(report, "events").error
    assert error is not None
    assert "asyncio only" in error
    assert len(buffer) == 1


@pytest.mark.parametrize(DB_PARAMS, _combos("sqlite"))
async def test_bad_arguments_are_refused_at_construction(db: Database) -> None:
    """Wrong engine, target or batch size fail when the buffer is made, not at shutdown."""
    table = db.create(events_table)
    coord = coordinator()
    with pytest.raises(TypeError, match="Engine or an AsyncEngine"):
        WriteBehindBuffer(coord, "sqlite://", table)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Table, an ORM mapped class or an Insert"):
        WriteBehindBuffer(coord, db.engine(), "events")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch_size=0"):
        WriteBehindBuffer(coord, db.engine(), table, batch_size=0)
    assert coord.handlers == ()


# -- concurrency: the property ---------------------------------------------------------


_examples = 0


@pytest.mark.parametrize(DB_PARAMS, ALL_ENGINES)
@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    threads=st.integers(1, 4),
    pause_every=st.integers(1, 32),
    batch_size=st.integers(5, 64),
    shutdown_after=st.floats(0, 0.02),
    periodic=st.booleans(),
)
async def test_concurrent_appends_and_a_shutdown_persist_exactly_the_accepted_rows(
    db: Database,
    *,
    threads: int,
    pause_every: int,
    batch_size: int,
    shutdown_after: float,
    periodic: bool,
) -> None:
    """Threads appending while shutdown starts at a random moment: accepted rows, once each."""
    global _examples  # noqa: PLW0603 - one fresh table per example
    _examples += 1
    name = f"events_{_examples}"
    # No key, no constraint: a row written twice would show up as two rows.
    table = db.create(
        lambda metadata: sa.Table(
            name, metadata, sa.Column("id", sa.Integer), sa.Column("payload", sa.String(8))
        )
    )
    engine = db.engine()
    coord = coordinator()
    buffer = WriteBehindBuffer(
        coord, engine, table, batch_size=batch_size, timeout=8, name="events"
    )
    accepted: list[list[int]] = [[] for _ in range(threads)]

    def producer(index: int) -> None:
        # Appends until refused (bounded, so that the final flush can catch up).
        for seq in range(300):
            row_id = index * 1_000_000 + seq
            try:
                buffer.append({"id": row_id, "payload": "x"})
            except BufferClosedError:
                return
            accepted[index].append(row_id)
            if seq % pause_every == 0:
                time.sleep(0.001)

    workers = [threading.Thread(target=producer, args=(i,)) for i in range(threads)]
    async with anyio.create_task_group() as tg:
        if periodic:
            tg.start_soon(buffer.run, 0.001)
        for worker in workers:
            worker.start()
        await anyio.sleep(shutdown_after)
        report = await coord.shutdown()
    for worker in workers:
        await anyio.to_thread.run_sync(worker.join)
    await engine.dispose() if isinstance(engine, AsyncEngine) else engine.dispose()

    assert report.ok, report.to_dict()
    stored = [row_id for (row_id,) in db.rows(f"SELECT id FROM {name}")]  # noqa: S608
    expected = sorted(row_id for ids in accepted for row_id in ids)
    assert sorted(stored) == expected
    assert buffer.written == buffer.accepted == len(expected)


# -- disposing the pool ------------------------------------------------------------------


async def checkout(engine: sa.Engine | AsyncEngine) -> Callable[[], Any]:
    """Check a connection out (and use it); return what gives it back."""
    if isinstance(engine, AsyncEngine):
        aconn = await engine.connect()
        await aconn.execute(sa.text("SELECT 1"))
        return aconn.close
    conn = engine.connect()
    conn.execute(sa.text("SELECT 1"))
    return conn.close


async def give_back(close: Callable[[], Any]) -> None:
    outcome = close()
    if outcome is not None:
        await outcome


def pool_of(engine: sa.Engine | AsyncEngine) -> sa.Pool:
    return engine.sync_engine.pool if isinstance(engine, AsyncEngine) else engine.pool


@pytest.mark.parametrize(DB_PARAMS, ALL_ENGINES)
async def test_dispose_waits_for_a_connection_returned_before_the_deadline(
    db: Database,
) -> None:
    """The release handler waits for the checked-out connection, then closes it with the pool."""
    engine = db.engine()
    close = await checkout(engine)
    coord = coordinator()
    dispose_engine(coord, engine, timeout=3, name="dispose")
    old_pool = pool_of(engine)
    reports: list[graceshut.ShutdownReport] = []

    async def run_shutdown() -> None:
        reports.append(await coord.shutdown())

    async with anyio.create_task_group() as tg:
        tg.start_soon(run_shutdown)
        await anyio.sleep(0.3)
        assert coord.report is None  # still waiting for the connection
        await give_back(close)

    disposed = result(reports[0], "dispose")
    # Still running 0.3 s in, then ok: it waited for the connection (disposing the pool
    # with it checked out is the error of the next test).
    assert disposed.outcome is Outcome.OK
    assert (old_pool.checkedout(), old_pool.checkedin()) == (0, 0)  # type: ignore[attr-defined]
    assert pool_of(engine) is not old_pool
    if db.server is not None:
        assert db.server_sessions() == 0


@pytest.mark.parametrize(DB_PARAMS, ALL_ENGINES)
async def test_dispose_reports_a_connection_never_returned(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """A connection held past the deadline: the pool is disposed, the handler fails, counting it."""
    engine = db.engine()
    idle = await checkout(engine)
    await give_back(idle)  # one idle connection, which dispose must close
    close = await checkout(engine)
    coord = coordinator()
    ran: list[str] = []
    add_witness(coord, "release", ran)
    # 4 s: it waits 3 and keeps 1 to close the pool (a quarter, at most 1 s); with less, a
    # loaded machine can take longer to close it than the reserve and turn this into a timeout.
    dispose_engine(coord, engine, timeout=4, name="dispose")
    try:
        report = await coord.shutdown()
        disposed = result(report, "dispose")
        assert disposed.outcome is Outcome.ERROR, "disposed within its timeout, then failed"
        assert disposed.duration < 4
        assert disposed.error is not None
        assert "CheckedOutConnectionsError: 1 connections to" in disposed.error
        assert "still checked out" in disposed.error
        assert ran == ["release"]
        (record,) = [r for r in caplog.records if getattr(r, "checked_out", 0)]
        assert (record.__dict__["checked_out"], record.levelno) == (1, logging.WARNING)
        if db.server is not None:
            assert db.server_sessions() == 1  # the held one; the idle one is closed
    finally:
        await give_back(close)


@pytest.mark.parametrize(DB_PARAMS, _combos("sqlite"))
async def test_dispose_without_a_checked_out_count_disposes_at_once(db: Database) -> None:
    """A pool that does not count checkouts (NullPool) is disposed at once, without error."""
    engine = db.engine(poolclass=sa.NullPool)
    close = await checkout(engine)
    try:
        started = time.monotonic()
        assert await dispose_when_idle(engine, wait=5) == 0
        assert time.monotonic() - started < 5, "it did not wait out its 5 s for the connection"
    finally:
        await give_back(close)


@pytest.mark.parametrize(DB_PARAMS, _combos("sqlite"))
async def test_buffer_and_dispose_together_leave_nothing_behind(db: Database) -> None:
    """Flush then release: rows are written before the pool they used is disposed."""
    table = db.create(events_table)
    engine = db.engine()
    coord = coordinator()
    buffer = WriteBehindBuffer(coord, engine, table, name="events")
    dispose_engine(coord, engine, name="dispose")
    buffer.extend({"id": i} for i in range(100))
    report = await coord.shutdown()
    assert [(h.name, h.outcome) for h in report.handlers] == [
        ("events", Outcome.OK),
        ("dispose", Outcome.OK),
    ]
    assert db.rows("SELECT count(*) FROM events") == [(100,)]
    assert pool_of(engine).checkedout() == 0  # type: ignore[attr-defined]
