"""What the spill fallback and the replay cost, for 10,000 rows of a write-behind buffer.

Buffers 10,000 rows (an integer, a 32-character string, a timestamp) for a PostgreSQL
server that is down, and times the shutdown's fallback from the report: the rows spilled
to a `SpillDirectory` (checksummed JSON lines, fsync'd) in a temporary directory, and to
a `SpillLog` writing to a file. Then times `WriteBehindBuffer.replay` writing the spill
file into a local PostgreSQL started from initdb with its durable defaults (fsync on),
over TCP on 127.0.0.1, with ``insert(...).on_conflict_do_nothing()``, batches of 1,000;
and a second replay of the same rows (all conflicts: what a replay cut short costs when
it runs again). Medians of several rounds:

    python3 benchmarks/spill.py [--rounds N] [--results DIR] [--note TEXT]

The medians are saved in benchmarks/results/spill.json (or --results DIR).
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import shutil
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _harness import RESULTS, add_result_options, save_result
from tests.contrib._postgres import running_postgres

import graceshut
from graceshut.contrib.spill import SpillDirectory, SpillLog, SpillTarget
from graceshut.contrib.sqlalchemy import WriteBehindBuffer

ROWS = 10_000
NOW = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)


def coordinator() -> graceshut.Coordinator:
    return graceshut.Coordinator(grace_period=30, safety_margin=1, propagation_delay=0, environ={})


def table(name: str) -> sa.Table:
    return sa.Table(
        name,
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("payload", sa.String(32), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def spill_round(target: SpillTarget, events: sa.Table) -> float:
    """Seconds the fallback took to spill ROWS rows, from the report."""
    down = sa.create_engine(f"postgresql+psycopg://postgres@127.0.0.1:{closed_port()}/none")
    c = coordinator()
    buffer = WriteBehindBuffer(c, down, events, timeout=20, name="events", spill=target)
    buffer.extend({"id": i, "payload": "x" * 32, "at": NOW} for i in range(ROWS))
    report = await c.shutdown()
    down.dispose()
    fallback = report.handlers[0].fallback
    if fallback is None or fallback.outcome is not graceshut.Outcome.OK:
        raise RuntimeError(report.to_dict())
    if buffer.spilled != ROWS:
        raise RuntimeError(f"{buffer.spilled} rows spilled, expected {ROWS}")
    return fallback.duration


async def replay_round(url: str, directory: Path, round_no: int) -> tuple[float, float]:
    """Seconds to replay ROWS rows into PostgreSQL, then the same file again."""
    events = table(f"events_{round_no}")
    engine = sa.create_engine(url)
    events.metadata.create_all(engine)
    statement = postgresql.insert(events).on_conflict_do_nothing()
    spill = SpillDirectory(directory)
    buffer = WriteBehindBuffer(coordinator(), engine, statement, name="events", spill=spill)
    (path,) = spill.files("events")
    copy = path.read_bytes()
    started = time.perf_counter()
    result = await buffer.replay()
    replay = time.perf_counter() - started
    path.write_bytes(copy)  # as if the first replay had been cut short before the removal
    started = time.perf_counter()
    again = await buffer.replay()
    replay_again = time.perf_counter() - started
    with engine.connect() as conn:
        count = conn.execute(sa.select(sa.func.count()).select_from(events)).scalar_one()
    engine.dispose()
    if result.written != ROWS or again.written != ROWS or count != ROWS:
        raise RuntimeError(f"replayed {result.written} then {again.written}, stored {count}")
    return replay, replay_again


async def main(rounds: int, results: Path | None, note: str) -> None:
    """Time each round, print the medians and save them."""
    print(f"{ROWS:,} rows, median of {rounds} rounds, Python {sys.version.split()[0]}")
    print(f"SQLAlchemy {sa.__version__}")
    spill_file, spill_log, replays, agains = [], [], [], []
    log = logging.getLogger("bench.spill")
    log.propagate = False
    with running_postgres(settings={}) as server:
        url = server.url(server.create_database())
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            postgres_version = str(conn.execute(sa.text("SHOW server_version")).scalar_one())
        engine.dispose()
        for round_no in range(rounds):
            with tempfile.TemporaryDirectory() as tmp:
                directory = Path(tmp) / "spill"
                directory.mkdir()
                spill_file.append(await spill_round(SpillDirectory(directory), table("events")))
                size = sum(p.stat().st_size for p in directory.iterdir())
                replay, again = await replay_round(url, directory, round_no)
                replays.append(replay)
                agains.append(again)
                handler = logging.FileHandler(Path(tmp) / "spill.log")
                log.addHandler(handler)
                spill_log.append(await spill_round(SpillLog(log), table("events")))
                log.removeHandler(handler)
                handler.close()
                shutil.rmtree(directory)
    timings = []
    for label, times in (
        ("spill to a file (fsync)", spill_file),
        ("spill to the log (a file)", spill_log),
        ("replay into PostgreSQL", replays),
        ("replay again (all conflicts)", agains),
    ):
        median = statistics.median(times)
        print(f"{label:<30} {median * 1000:7.1f} ms ({ROWS / median:9,.0f} rows/s)")
        timings.append({"step": label, "ms": median * 1000, "rows_per_s": ROWS / median})
    print(f"spill file size: {size / 1e6:.2f} MB")
    payload = {
        "rows": ROWS,
        "rounds": rounds,
        "sqlalchemy": sa.__version__,
        "postgresql": postgres_version,
        "spill_file_mb": size / 1e6,
        "timings": timings,
    }
    save_result(
        results, "spill", "python3 benchmarks/spill.py", payload, quick=rounds < 3, note=note
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    add_result_options(parser)
    args = parser.parse_args()
    anyio.run(main, args.rounds, args.results or RESULTS, args.note)
