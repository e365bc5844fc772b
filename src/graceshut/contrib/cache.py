"""Write an in-memory mapping somewhere durable before the process ends.

For apps that cache computed values in a dict (or any `~collections.abc.MutableMapping`,
such as a ``cachetools`` cache) and must not lose them: `flush_mapping` registers a
shutdown handler that hands the entries to a writer you supply (Redis, a database, a
file) and removes each entry from the mapping once its write has succeeded.

No dependency beyond graceshut: the writer does the storage-specific part.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, MutableMapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

from .._core._handlers import is_async_callable, refuse_awaitable
from .._core._phases import Phase
from .._core._threads import run_in_daemon_thread
from ._errors import FlushError, describe_error
from .spill import ReplayResult, SpillDirectory, SpillFallback, SpillTarget

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from .._core._context import ShutdownContext
    from .._core._coordinator import Coordinator

__all__ = ["MappingFlushError", "MappingFlusher", "flush_mapping"]

logger = logging.getLogger("graceshut")

K = TypeVar("K")
V = TypeVar("V")
T = TypeVar("T")

Source = MutableMapping[K, V] | Callable[[], MutableMapping[K, V]]
"""A mapping, or a callable returning it (resolved at each flush)."""
Writer = Callable[[dict[K, V]], object]
"""Receives one batch; a plain function (run in a thread of its own) or an ``async def``."""


class MappingFlushError(FlushError):
    """A writer failed: the entries of its batch, and those after it, stay in the mapping.

    Attributes:
        written: Entries written (and removed from the mapping) before the failure.
        pending: Entries left in the mapping.
    """


class MappingFlusher(Generic[K, V]):
    """Writes a mapping's entries in batches and removes each one once it is written.

    Made by `flush_mapping`, which also registers it as a shutdown handler; call
    `flush` yourself to retry after a failure or to flush periodically.

    Semantics:
        - An entry is removed only after the writer call that received it returned
          without raising, and only if the mapping still holds the very same value
          object: a value replaced while it was being written stays for the next flush.
        - A failing writer call stops the flush: its batch and every later entry stay
          in the mapping, and `MappingFlushError` says how many were written and how
          many remain.
        - A batch cut off by the handler's timeout may or may not have reached storage;
          its entries stay, so a retry writes them again. Writes should be idempotent
          (Redis ``SET``, an SQL upsert), which is what a cache write usually is.
        - Values are passed by reference: replace values rather than mutate them in
          place while a flush runs.

    Args:
        source: The mapping, or a zero-argument callable returning it (for a cache
            created later, such as ``lambda: app.state.cache``).
        writer: Called with each batch as a new `dict`; a plain function runs in a
            daemon thread (a stuck one never delays the process exit), an ``async def``
            on the event loop.
        batch_size: Entries per writer call; None writes everything in one call.
        name: Used in error texts and log lines.
        spill: Where the entries go when the shutdown flush fails (see `flush_mapping`);
            `replay` writes them with *writer* at the next start.

    Attributes:
        name: As given.
        fallback: The fallback that spills the entries left (registered with the
            handler by `flush_mapping`), or None without *spill*.
    """

    def __init__(
        self,
        source: Source[K, V],
        writer: Writer[K, V],
        *,
        batch_size: int | None = None,
        name: str = "cache",
        spill: SpillTarget | None = None,
    ) -> None:
        if not isinstance(source, MutableMapping) and not callable(source):
            raise TypeError(
                f"source must be a mutable mapping or a callable returning one, got {source!r}"
            )
        if not callable(writer):
            raise TypeError(f"writer must be callable, got {writer!r}")
        if batch_size is not None and (isinstance(batch_size, bool) or batch_size < 1):
            raise ValueError(f"batch_size={batch_size!r} must be a positive integer or None")
        self._source = source
        self._writer = writer
        self._writer_is_async = is_async_callable(writer)
        self._batch_size = batch_size
        self.name = name
        self.spill = spill
        self.fallback = None if spill is None else SpillFallback(spill, name, self.take, "entries")

    @property
    def spilled(self) -> int:
        """Entries a failed shutdown flush saved in its spill (whole in the file, or logged)."""
        return 0 if self.fallback is None else self.fallback.saved

    @property
    def lost(self) -> int:
        """Entries a failed shutdown flush took for a spill that could not save them."""
        return 0 if self.fallback is None else self.fallback.lost

    def mapping(self) -> MutableMapping[K, V]:
        """The mapping this flusher empties (the getter's result, when given one)."""
        source = self._source
        mapping = source if isinstance(source, MutableMapping) else source()
        if not isinstance(mapping, MutableMapping):
            raise TypeError(f"the cache getter returned {mapping!r}, not a mutable mapping")
        return mapping

    async def flush(self) -> int:
        """Write the entries present now, batch after batch; return how many were written.

        Raises:
            MappingFlushError: A writer call failed (the original error is its cause).
        """
        mapping = self.mapping()
        items = list(mapping.items())
        size = self._batch_size or max(1, len(items))
        written = 0
        for start in range(0, len(items), size):
            batch = dict(items[start : start + size])
            try:
                await self._write(batch)
            except Exception as exc:
                remaining = len(mapping)
                raise MappingFlushError(
                    f"{self.name}: wrote {written} of {len(items)} entries, then a batch of "
                    f"{len(batch)} failed; {remaining} entries kept in the mapping: "
                    f"{describe_error(exc)}",
                    written=written,
                    pending=remaining,
                ) from exc
            for key, value in batch.items():
                if mapping.get(key, _MISSING) is value:
                    del mapping[key]
            written += len(batch)
        return written

    async def _write(self, batch: dict[K, V]) -> None:
        if self._writer_is_async:
            await cast("Awaitable[object]", self._writer(batch))
            return
        result = await run_in_daemon_thread(
            lambda: self._writer(batch), name=f"graceshut {self.name} writer"
        )
        # Nothing written by a lambda around an async client: taken for written, the
        # batch would be dropped.
        refuse_awaitable(result, f"the writer {self._writer!r}")

    async def replay(self) -> ReplayResult:
        """Write the entries a failed shutdown spilled with *writer*; remove their files.

        Call it at startup, before the app serves. Entries go in spill order, a later
        value of a key after an earlier one, in batches of *batch_size* (1,000 when
        None); a replay cut short writes some again, which a cache write (``SET``, an
        upsert) takes in its stride.

        Raises:
            TypeError: The flusher has no `~graceshut.contrib.spill.SpillDirectory`.
            graceshut.contrib.spill.SpillReplayError: A writer call failed.
        """
        spill = self.spill
        if not isinstance(spill, SpillDirectory):
            raise TypeError(f"{self.name}: replay needs spill=SpillDirectory(...), got {spill!r}")

        async def write(records: list[Any]) -> None:
            await self._write(dict(records))  # [key, value] pairs; tuple keys come back

        return await spill.replay(self.name, write, batch_size=self._batch_size or 1000)

    async def take(self, ctx: ShutdownContext) -> list[list[Any]]:
        """For a spill: the entries left, as ``[key, value]`` pairs, removed from the mapping."""
        del ctx  # nothing to wait for: a writer that outlived its time writes idempotently
        mapping = self.mapping()
        items = list(mapping.items())
        for key, value in items:
            if mapping.get(key, _MISSING) is value:
                del mapping[key]
        return [[key, value] for key, value in items]

    async def flush_all(self) -> int:
        """Flush until the mapping is empty; return how many entries were written.

        Entries replaced while a pass runs are written by the next pass; it stops when a
        pass finds nothing to write.

        Raises:
            MappingFlushError: A writer call failed.
        """
        written = 0
        while True:
            count = await self.flush()
            written += count
            if not count or not self.mapping():
                return written


def flush_mapping(
    coordinator: Coordinator,
    source: Source[K, V],
    writer: Writer[K, V],
    *,
    phase: Phase | str = Phase.FLUSH,
    timeout: float = 5.0,
    batch_size: int | None = None,
    name: str | None = None,
    spill: SpillTarget | None = None,
) -> MappingFlusher[K, V]:
    """Write the entries of *source* with *writer* at shutdown, removing each one written.

    See `MappingFlusher` for what happens on failure. The handler fails (and the report
    says how many entries were written and how many remain) when a writer call raises.

    Args:
        coordinator: Where to register the handler.
        source: The mapping, or a zero-argument callable returning it.
        writer: Sync or async callable receiving each batch as a `dict`.
        phase: The phase to run in; ``flush`` by default.
        timeout: Seconds the handler may take.
        batch_size: Entries per writer call; None writes all of them in one call.
        name: Handler name in logs and the report; ``cache.flush[<writer>]`` by default.
        spill: Where the entries left go when the flush fails or times out: a
            `~graceshut.contrib.spill.SpillDirectory` (`MappingFlusher.replay` writes
            them at the next start) or a `~graceshut.contrib.spill.SpillLog`. Keys and
            values must have a JSON form (strings, numbers, dates, bytes...).

    Returns:
        The `MappingFlusher`, whose `~MappingFlusher.flush` retries or flushes early.

    Example, to Redis (redis-py's asyncio client)::

        cache: dict[str, str] = {}
        redis = redis.asyncio.Redis()

        async def to_redis(batch: dict[str, str]) -> None:
            await redis.mset({f"cache:{key}": value for key, value in batch.items()})

        flush_mapping(coordinator, cache, to_redis, batch_size=500)

    Example, to a database (SQLAlchemy, an upsert so that a retry is harmless)::

        from sqlalchemy.dialects.postgresql import insert

        def to_postgres(batch: dict[str, str]) -> None:
            stmt = insert(prices).on_conflict_do_update(
                index_elements=["key"], set_={"value": insert(prices).excluded.value}
            )
            with engine.begin() as conn:
                conn.execute(stmt, [{"key": k, "value": v} for k, v in batch.items()])

        flush_mapping(coordinator, lambda: app.state.prices, to_postgres, batch_size=1000)
    """
    label = name or f"cache.flush[{getattr(writer, '__qualname__', type(writer).__qualname__)}]"
    flusher = MappingFlusher(source, writer, batch_size=batch_size, name=label, spill=spill)

    async def flush_cache(ctx: ShutdownContext) -> None:
        started = time.monotonic()
        fields: dict[str, Any] = {"handler": label, "phase": ctx.phase.value}
        try:
            written = await flusher.flush_all()
        except MappingFlushError as exc:
            ctx.logger.warning(
                "%s: %d entries not written",
                label,
                exc.pending,
                extra={**fields, "written": exc.written, "pending": exc.pending},
            )
            raise
        ctx.logger.info(
            "%s: wrote %d entries in %.3fs",
            label,
            written,
            time.monotonic() - started,
            extra={**fields, "written": written, "pending": len(flusher.mapping())},
        )

    coordinator.add_handler(
        flush_cache, phase=phase, timeout=timeout, name=label, fallback=flusher.fallback
    )
    return flusher


_MISSING: Any = object()
