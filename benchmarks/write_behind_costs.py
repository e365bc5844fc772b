"""What the SQLAlchemy write-behind buffer and pool disposal cost at shutdown.

Buffers 10,000 rows (an integer, a 32-character string, a timestamp), then times the
shutdown: the flush handler (batches of 1,000 and of 100 rows) and the dispose handler
(a pool holding 5 idle connections). SQLite is a file in a temporary directory with
SQLite's defaults (rollback journal, synchronous=FULL); PostgreSQL is a local server
started from initdb with its durable defaults (fsync on), reached over TCP on 127.0.0.1.
Medians of several rounds:

    python benchmarks/write_behind_costs.py [--rounds N]
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.contrib._postgres import running_postgres

import graceshut
from graceshut.contrib.sqlalchemy import WriteBehindBuffer, dispose_engine

ROWS = 10_000
IDLE_CONNECTIONS = 5
NOW = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)


def coordinator() -> graceshut.Coordinator:
    return graceshut.Coordinator(grace_period=30, safety_margin=1, propagation_delay=0, environ={})


async def warm_pool(engine: sa.Engine | AsyncEngine) -> None:
    """Open IDLE_CONNECTIONS connections and check them back in."""
    if isinstance(engine, AsyncEngine):
        conns = [await engine.connect() for _ in range(IDLE_CONNECTIONS)]
        for conn in conns:
            await conn.execute(sa.text("SELECT 1"))
        for conn in conns:
            await conn.close()
    else:
        sync_conns = [engine.connect() for _ in range(IDLE_CONNECTIONS)]
        for sync_conn in sync_conns:
            sync_conn.execute(sa.text("SELECT 1"))
        for sync_conn in sync_conns:
            sync_conn.close()


async def one_round(
    url: str, *, is_async: bool, batch_size: int, round_no: int
) -> tuple[float, ...]:
    metadata = sa.MetaData()
    table = sa.Table(
        f"events_{'async' if is_async else 'sync'}_{batch_size}_{round_no}",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("payload", sa.String(32), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    checker = sa.create_engine(url.replace("+aiosqlite", ""))
    metadata.create_all(checker)
    engine: sa.Engine | AsyncEngine = (
        create_async_engine(url) if is_async else sa.create_engine(url)
    )
    await warm_pool(engine)
    c = coordinator()
    buffer = WriteBehindBuffer(c, engine, table, batch_size=batch_size, timeout=20, name="flush")
    dispose_engine(c, engine, timeout=5, name="dispose")
    started = time.perf_counter()
    for i in range(ROWS):
        buffer.append({"id": i, "payload": "x" * 32, "at": NOW})
    append = (time.perf_counter() - started) / ROWS
    report = await c.shutdown()
    if not report.ok:
        raise RuntimeError(report.to_dict())
    with checker.connect() as conn:
        count = conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
    checker.dispose()
    if count != ROWS:
        raise RuntimeError(f"{count} rows written, expected {ROWS}")
    flush, dispose = (h.duration for h in report.handlers)
    return append, flush, dispose


async def measure(label: str, url: str, *, is_async: bool, rounds: int) -> None:
    for batch_size in (1000, 100):
        results = [
            await one_round(url, is_async=is_async, batch_size=batch_size, round_no=r)
            for r in range(rounds)
        ]
        append, flush, dispose = (
            statistics.median(column) for column in zip(*results, strict=True)
        )
        print(
            f"{label:<28} batch {batch_size:>5}: flush {flush * 1000:7.1f} ms "
            f"({ROWS / flush:9,.0f} rows/s), dispose {dispose * 1000:5.1f} ms, "
            f"append {append * 1e6:.2f} us/row"
        )


async def main(rounds: int) -> None:
    print(f"{ROWS:,} rows, median of {rounds} rounds, Python {sys.version.split()[0]}")
    print(f"SQLAlchemy {sa.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        await measure(
            "SQLite (pysqlite)", f"sqlite:///{tmp}/sync.sqlite", is_async=False, rounds=rounds
        )
        await measure(
            "SQLite (aiosqlite)",
            f"sqlite+aiosqlite:///{tmp}/async.sqlite",
            is_async=True,
            rounds=rounds,
        )
    with running_postgres(settings={}) as server:
        database = server.create_database()
        url = server.url(database)
        await measure("PostgreSQL (psycopg)", url, is_async=False, rounds=rounds)
        await measure("PostgreSQL (psycopg async)", url, is_async=True, rounds=rounds)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    anyio.run(main, parser.parse_args().rounds)
