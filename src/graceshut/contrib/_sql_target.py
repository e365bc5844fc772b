"""Where a write-behind buffer's rows go: the insert statement, and batches it can take.

Part of `graceshut.contrib.sqlalchemy`.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapper

from ._rows import Row

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
