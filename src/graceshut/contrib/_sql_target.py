"""Where a write-behind buffer's rows go: the insert statement, the rows, their batches.

Part of `graceshut.contrib.sqlalchemy`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import Mapper

from ._rows import FlushRun, Row, RowQueue

#: Makes the error of a failed batch: (the run, the batch, what was raised).
Failed = Callable[[FlushRun, list[Row], Exception], Exception]
Attributes = tuple[type[Any], tuple[tuple[str, str], ...]] | None

Target = tuple[sa.Insert, str, tuple[type[Any], tuple[tuple[str, str], ...]] | None]
"""The statement, the table's name, and how to read mapped instances (or None)."""


def resolve_target(table: sa.Table | sa.Insert | type[Any]) -> Target:
    """The statement to run, the table's name, and how to read mapped instances."""
    if isinstance(table, sa.Table):
        return table.insert(), table.name, None
    if isinstance(table, sa.Insert):
        return table, str(getattr(table.table, "name", table.table)), None
    mapper = sa.inspect(table, raiseerr=False) if isinstance(table, type) else None
    if isinstance(mapper, Mapper) and isinstance(mapper.local_table, sa.Table):
        local = mapper.local_table
        attributes = tuple(
            (prop.key, column.key)
            for prop in mapper.column_attrs
            for column in prop.columns[:1]
            if isinstance(column, sa.Column) and column.table is local
        )
        return local.insert(), local.name, (mapper.class_, attributes)
    raise TypeError(
        f"table must be a Table, an ORM mapped class or an Insert statement, got {table!r}"
    )


def by_keys(batch: list[Row]) -> list[list[Row]]:
    """Split a batch by the set of keys its rows carry: one executemany takes one set."""
    groups: dict[frozenset[str], list[Row]] = {}
    for row in batch:
        groups.setdefault(frozenset(row), []).append(row)
    return list(groups.values())


def row_of(name: str, row: Mapping[str, Any] | object, attributes: Attributes) -> Row:
    """*row* as a mapping of columns: a mapping as it is, a mapped instance read out."""
    if isinstance(row, Mapping):
        return dict(row)
    if attributes is not None:
        cls, pairs = attributes
        if isinstance(row, cls):
            state = row.__dict__
            return {col: state[attr] for attr, col in pairs if attr in state}
    raise TypeError(f"{name}: cannot buffer {row!r}: expected a mapping of columns")


def insert_batch(engine: sa.Engine, insert: sa.Insert, batch: list[Row]) -> None:
    """Insert *batch* in one transaction."""
    with engine.begin() as conn:
        for group in by_keys(batch):
            conn.execute(insert, group)


async def insert_batch_async(engine: AsyncEngine, insert: sa.Insert, batch: list[Row]) -> None:
    """`insert_batch` on an asyncio engine."""
    async with engine.begin() as conn:
        for group in by_keys(batch):
            await conn.execute(insert, group)


def write_batches(
    engine: sa.Engine,
    insert: sa.Insert,
    rows: RowQueue,
    run: FlushRun,
    *,
    size: int,
    failed: Failed,
) -> None:
    """Insert the rows of *run* in batches of *size*, one transaction each."""
    while batch := rows.next_batch(run, size):
        try:
            insert_batch(engine, insert, batch)
        except Exception as exc:
            raise failed(run, batch, exc) from exc
        rows.committed(run, batch)


async def write_batches_async(
    engine: AsyncEngine,
    insert: sa.Insert,
    rows: RowQueue,
    run: FlushRun,
    *,
    size: int,
    failed: Failed,
) -> None:
    """`write_batches` on an asyncio engine."""
    while batch := rows.next_batch(run, size):
        try:
            await insert_batch_async(engine, insert, batch)
        except Exception as exc:
            raise failed(run, batch, exc) from exc
        rows.committed(run, batch)


def forget_when_done(tasks: set[asyncio.Task[int]]) -> Callable[[asyncio.Task[int]], None]:
    """A done-callback that drops a finished writer's task from *tasks*."""

    def done(task: asyncio.Task[int]) -> None:
        tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: an abandoned writer's error was logged already

    return done
