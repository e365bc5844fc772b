"""SQLAlchemy: a write-behind buffer flushed at shutdown, and pool disposal that waits.

Install with ``pip install 'graceshut[sqlalchemy]'``. Both parts take a sync
`~sqlalchemy.engine.Engine` or an `~sqlalchemy.ext.asyncio.AsyncEngine` (which, like
SQLAlchemy's asyncio extension itself, needs the asyncio event loop).

- `WriteBehindBuffer`: request code appends rows cheaply; they are inserted in batches,
  one transaction per batch, by `~WriteBehindBuffer.flush`, by an optional periodic
  `~WriteBehindBuffer.run` task, and at shutdown in the ``flush`` phase.
- `dispose_engine`: in the ``release`` phase, waits for checked-out connections to come
  back, then disposes the pool, and fails with a count of the ones that never did.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import anyio

from .._core._phases import Phase
from .._core._threads import run_in_daemon_thread
from .spill import ReplayResult, SpillDirectory, SpillFallback, SpillTarget

try:
    import sqlalchemy as sa
    from sqlalchemy.ext.asyncio import AsyncEngine
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "graceshut.contrib.sqlalchemy needs SQLAlchemy 2: pip install 'graceshut[sqlalchemy]'"
    ) from exc

from ._dispose import (
    AnyEngine,
    CheckedOutConnectionsError,
    asyncio_loop,
    dispose_engine,
    dispose_when_idle,
)
from ._errors import BufferFlushError, describe_error
from ._rows import BufferClosedError, BufferFullError, FlushRun, Row, RowQueue
from ._sql_target import (
    forget_when_done,
    insert_batch,
    insert_batch_async,
    resolve_target,
    row_of,
    write_batches,
    write_batches_async,
)

if TYPE_CHECKING:
    from .._core._context import ShutdownContext
    from .._core._coordinator import Coordinator

__all__ = [
    "BufferClosedError",
    "BufferFlushError",
    "BufferFullError",
    "CheckedOutConnectionsError",
    "WriteBehindBuffer",
    "dispose_engine",
    "dispose_when_idle",
]

logger = logging.getLogger("graceshut")


class WriteBehindBuffer:
    """Rows appended during requests, inserted later in batches: at the latest at shutdown.

    `append` only copies the row into memory under a lock: call it from async or sync
    request code, from any thread. The rows reach the table in batches of *batch_size*,
    each batch in its own transaction, when `flush` runs: call it yourself, start `run`
    for a periodic flush, and in any case the ``flush`` phase writes everything left.

    A row leaves the buffer only once the transaction holding it has committed, batches
    keep the order of their rows, flushes never overlap, and after the shutdown flush
    `append` raises `BufferClosedError` rather than accept a row that would be lost.
    A failing batch stops the flush and stays, with the rows behind it, for a retry:
    give rows client-made keys and an ``on_conflict_do_nothing()`` statement where a
    row could be written twice or rejected for ever. docs/sqlalchemy.md has the
    details (ordering, the one undecidable ``COMMIT``, error texts).

    Args:
        coordinator: Registers the shutdown flush in the ``flush`` phase.
        engine: A sync `~sqlalchemy.engine.Engine` (batches are written in a daemon
            thread, which a stuck database cannot make delay the process exit) or an
            `~sqlalchemy.ext.asyncio.AsyncEngine` (on the event loop, asyncio only).
        table: Where rows go: a `~sqlalchemy.schema.Table`, an ORM mapped class (then
            `append` also takes instances of it), or an ``Insert`` statement such as
            ``postgresql.insert(table).on_conflict_do_nothing()``. Each batch runs it as
            an ``executemany`` (one per set of keys present in the batch).
        batch_size: Rows per transaction.
        max_pending: Refuse appends (`BufferFullError`) when this many rows wait;
            None for no bound.
        timeout: Seconds the shutdown flush may take.
        name: Handler name in logs and the report; ``sqlalchemy.write_behind[<table>]``
            by default.
        spill: Where the rows go when the shutdown flush fails or times out (a
            `~graceshut.contrib.spill.SpillDirectory`, or a
            `~graceshut.contrib.spill.SpillLog` as the last resort); `replay` writes
            them at the next start. None: they are lost, and the report counts them.
        phase: The phase the shutdown flush runs in; ``flush`` by default.

    Attributes:
        name: The handler's name.
        table_name: The target table's name, as in log lines (field ``table``).

    Example::

        events = WriteBehindBuffer(coordinator, engine, events_table, batch_size=500)

        @app.post("/click")
        async def click(request):
            events.append({"user": request.user.id, "at": datetime.now(UTC)})
    """

    def __init__(
        self,
        coordinator: Coordinator,
        engine: AnyEngine,
        table: sa.Table | sa.Insert | type[Any],
        *,
        batch_size: int = 1000,
        max_pending: int | None = None,
        timeout: float = 5.0,
        name: str | None = None,
        spill: SpillTarget | None = None,
        phase: Phase | str = Phase.FLUSH,
    ) -> None:
        if not isinstance(engine, (sa.Engine, AsyncEngine)):
            raise TypeError(f"engine must be an Engine or an AsyncEngine, got {engine!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r} must be a positive integer")
        if max_pending is not None and max_pending < 1:
            raise ValueError(f"max_pending={max_pending!r} must be a positive integer or None")
        self._engine = engine
        self._insert, self.table_name, self._attributes = resolve_target(table)
        self._batch_size = batch_size
        self.name = name or f"sqlalchemy.write_behind[{self.table_name}]"
        self._rows = RowQueue(self.name, max_pending=max_pending)
        # Serializes flushes. Sync engines write in a thread that holds _writer_lock;
        # async engines in a task that holds an asyncio.Lock of the running loop.
        self._writer_lock = threading.Lock()
        self._async_lock: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None
        self._tasks: set[asyncio.Task[int]] = set()
        self._spill = spill
        self._fallback = (
            None if spill is None else SpillFallback(spill, self.name, self._take, "rows")
        )
        coordinator.add_handler(
            self._on_shutdown,
            phase=phase,
            timeout=timeout,
            name=self.name,
            fallback=self._fallback,
        )

    # -- request side ---------------------------------------------------------------

    def append(self, row: Mapping[str, Any] | object) -> None:
        """Buffer one row: a mapping of column keys to values, or a mapped instance.

        The row is copied now, so later changes to the caller's object are not written.
        Thread-safe and O(1).

        Raises:
            BufferClosedError: The shutdown flush has finished.
            BufferFullError: ``max_pending`` rows are waiting.
            TypeError: *row* is neither a mapping nor an instance of the mapped class.
        """
        self._rows.add([self._to_row(row)])

    def extend(self, rows: Iterable[Mapping[str, Any] | object]) -> None:
        """Buffer several rows at once: all of them, or (on an error) none."""
        self._rows.add([self._to_row(row) for row in rows])

    def __len__(self) -> int:
        """Rows waiting to be written."""
        return len(self._rows)

    @property
    def closed(self) -> bool:
        """True once the shutdown flush has ended: `append` raises from then on."""
        return self._rows.closed

    @property
    def accepted(self) -> int:
        """Rows `append` and `extend` have accepted since the buffer was made."""
        return self._rows.accepted

    @property
    def written(self) -> int:
        """Rows committed to the database since the buffer was made."""
        return self._rows.written

    @property
    def spilled(self) -> int:
        """Rows a failed shutdown flush saved in its spill (whole in the file, or logged)."""
        return 0 if self._fallback is None else self._fallback.saved

    @property
    def lost(self) -> int:
        """Rows a failed shutdown flush took for a spill that could not save them all."""
        return 0 if self._fallback is None else self._fallback.lost

    async def replay(self) -> ReplayResult:
        """Insert the rows a failed shutdown spilled, and remove their spill files.

        Call it at startup, before the app serves (in the lifespan), with the same
        table and a `~graceshut.contrib.spill.SpillDirectory` on the same volume. A row
        may be written twice when a replay is cut short, or when a batch committed as
        the flush timed out: give rows client-made keys and pass
        ``insert(table).on_conflict_do_nothing()`` as *table*, and nothing is doubled.

        Raises:
            TypeError: The buffer has no `SpillDirectory`.
            graceshut.contrib.spill.SpillReplayError: A batch failed; its file stays.
        """
        spill = self._spill
        if not isinstance(spill, SpillDirectory):
            raise TypeError(f"{self.name}: replay needs spill=SpillDirectory(...), got {spill!r}")
        engine, insert = self._engine, self._insert
        if isinstance(engine, AsyncEngine):
            asyncio_loop()
            write_async = functools.partial(insert_batch_async, engine, insert)
            return await spill.replay(self.name, write_async, batch_size=self._batch_size)
        write = functools.partial(insert_batch, engine, insert)
        return await spill.replay(self.name, write, batch_size=self._batch_size)

    # -- flushing -------------------------------------------------------------------

    async def flush(self) -> int:
        """Write the rows waiting now, in batches; return how many were written.

        Rows appended while it runs wait for the next flush. A flush that another one is
        running waits for it. Cancelling the caller stops the flush after the batch in
        progress, whose outcome is still recorded.

        Raises:
            BufferFlushError: A batch failed; it and the rows behind it stay buffered.
            RuntimeError: The engine is an `AsyncEngine` and the loop is not asyncio.
        """
        return await self._flush(final=False, deadline=None)

    async def run(self, interval: float = 1.0) -> None:
        """Flush every *interval* seconds, until cancelled or the buffer is closed.

        Start it in the app's lifespan task group. A failed flush is logged and retried
        on the next tick; the rows stay buffered meanwhile.

        Example::

            @contextlib.asynccontextmanager
            async def lifespan(app):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(events.run, 2.0)
                    yield  # the app serves here
                    tg.cancel_scope.cancel()
        """
        if not interval > 0:
            raise ValueError(f"interval={interval!r} must be a positive number of seconds")
        while not self._rows.closed:
            await anyio.sleep(interval)
            if len(self._rows):
                try:
                    await self.flush()
                except BufferFlushError as exc:  # the next tick retries
                    logger.warning(
                        "%s: periodic flush failed: %s",
                        self.name,
                        exc,
                        extra={
                            "handler": self.name,
                            "table": self.table_name,
                            "written": exc.written,
                            "pending": exc.pending,
                        },
                    )

    async def _on_shutdown(self, ctx: ShutdownContext) -> None:
        started = time.monotonic()
        fields = {"handler": self.name, "phase": ctx.phase.value, "table": self.table_name}
        try:
            written = await self._flush(final=True, deadline=ctx.deadline)
        except BaseException:  # failed, or cut off by the timeout
            self._rows.close()
            # A writer cut off mid-batch may still commit it: "buffered", not "lost".
            ctx.logger.warning(
                "%s: shutdown flush ended with %d rows still buffered",
                self.name,
                len(self),
                extra={**fields, "pending": len(self), "written": self._rows.written},
            )
            raise
        ctx.logger.info(
            "%s: wrote %d rows in %.3fs",
            self.name,
            written,
            time.monotonic() - started,
            extra={**fields, "written": written, "pending": 0},
        )

    async def _flush(self, *, final: bool, deadline: float | None) -> int:
        stop = threading.Event()
        try:
            if isinstance(self._engine, AsyncEngine):
                loop = asyncio_loop()
                task = loop.create_task(self._write_async(self._engine, final, deadline, stop))
                self._tasks.add(task)
                task.add_done_callback(forget_when_done(self._tasks))
                # Shielded: a cancelled caller must not interrupt a batch mid-commit.
                return await asyncio.shield(task)
            engine = self._engine
            return await run_in_daemon_thread(
                lambda: self._write_sync(engine, final, deadline, stop),
                name=f"graceshut {self.name}",
            )
        finally:
            stop.set()  # a writer left behind by a cancelled caller stops after its batch

    def _write_sync(
        self, engine: sa.Engine, final: bool, deadline: float | None, stop: threading.Event
    ) -> int:
        with self._writer_lock:
            run = FlushRun(final, deadline, stop, None if final else len(self))
            write_batches(
                engine, self._insert, self._rows, run, size=self._batch_size, failed=self._failed
            )
            return self._finished(run)

    async def _write_async(
        self, engine: AsyncEngine, final: bool, deadline: float | None, stop: threading.Event
    ) -> int:
        async with self._loop_lock():
            run = FlushRun(final, deadline, stop, None if final else len(self))
            await write_batches_async(
                engine, self._insert, self._rows, run, size=self._batch_size, failed=self._failed
            )
            return self._finished(run)

    async def _take(self, ctx: ShutdownContext) -> list[Row]:
        """For the spill: every row still buffered, which no flush will write after this.

        A writer cut off mid-batch may still commit it: wait for it a little (half the
        time left, at most a second), so that its batch is not spilled as well.
        """
        end = time.monotonic() + min(1.0, ctx.remaining() / 2)
        while self._writer_busy() and time.monotonic() < end:  # noqa: ASYNC110 - a thread
            await anyio.sleep(0.005)
        return self._rows.take_all()

    def _writer_busy(self) -> bool:
        return self._writer_lock.locked() or any(not task.done() for task in self._tasks)

    # -- internals ------------------------------------------------------------------

    def _failed(self, run: FlushRun, batch: list[Row], exc: Exception) -> BufferFlushError:
        pending = len(self)
        reason = describe_error(exc)
        return BufferFlushError(
            f"{run.written} rows written to {self.table_name}, then a batch of {len(batch)} "
            f"failed; {pending} rows stay buffered: {reason}",
            written=run.written,
            pending=pending,
        )

    def _finished(self, run: FlushRun) -> int:
        if run.final and not self._rows.closed:
            pending = len(self)
            raise BufferFlushError(
                f"{run.written} rows written to {self.table_name}, then time ran out with "
                f"{pending} rows still buffered",
                written=run.written,
                pending=pending,
            )
        logger.debug("%s: wrote %d rows", self.name, run.written, extra=self._fields(run))
        return run.written

    def _fields(self, run: FlushRun) -> dict[str, Any]:
        return {"handler": self.name, "table": self.table_name, **run.fields()}

    def _to_row(self, row: Mapping[str, Any] | object) -> Row:
        return row_of(self.name, row, self._attributes)

    def _loop_lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._async_lock is None or self._async_lock[0] is not loop:
            self._async_lock = (loop, asyncio.Lock())
        return self._async_lock[1]
