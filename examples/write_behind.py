"""A Starlette app that buffers writes in memory and saves them to SQLite before it stops.

Run it (from the repository root)::

    uvicorn examples.write_behind:app --port 8000

    curl -X POST localhost:8000/events -d '{"kind": "click"}'   # 202, buffered
    curl localhost:8000/events                                  # buffered and written counts

then ``kill -TERM <pid>`` (or Ctrl-C): readiness fails, requests finish, the ``flush``
phase writes every buffered event to the ``events`` table in batches, the ``release``
phase disposes the pool once no connection is checked out, and the exit status is 0.

Settings: ``WRITE_BEHIND_DB`` (the SQLite file, ``write_behind.sqlite`` by default),
``WRITE_BEHIND_INTERVAL`` (seconds between periodic flushes, 5), ``WRITE_BEHIND_SPILL``
(a directory on a volume: the rows a failed shutdown flush could not write are spilled
there, and the next start writes them before serving; unset by default), and the
``GRACESHUT_*`` variables of the coordinator.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import uuid
from collections.abc import AsyncIterator

import anyio
import anyio.to_thread
import sqlalchemy as sa
from sqlalchemy.dialects import sqlite
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import graceshut
import graceshut.starlette
from graceshut.contrib.spill import SpillDirectory
from graceshut.contrib.sqlalchemy import BufferClosedError, WriteBehindBuffer, dispose_engine

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")

DATABASE = os.environ.get("WRITE_BEHIND_DB", "write_behind.sqlite")
INTERVAL = float(os.environ.get("WRITE_BEHIND_INTERVAL", "5"))
SPILL = os.environ.get("WRITE_BEHIND_SPILL")

engine = sa.create_engine(f"sqlite:///{DATABASE}")
metadata = sa.MetaData()
events_table = sa.Table(
    "events",
    metadata,
    # Made by the app at append: a row replayed after a spill is recognised, not doubled.
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("kind", sa.String(40), nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
)

coordinator = graceshut.Coordinator()
events = WriteBehindBuffer(
    coordinator,
    engine,
    sqlite.insert(events_table).on_conflict_do_nothing(),
    batch_size=500,
    timeout=10,
    spill=SpillDirectory(SPILL) if SPILL else None,  # a bad path fails here, at startup
)
dispose_engine(coordinator, engine, timeout=3)


async def record(request: Request) -> JSONResponse:
    try:
        body = json.loads(await request.body() or b"{}")
    except json.JSONDecodeError:
        return JSONResponse({"error": "the body must be JSON"}, status_code=400)
    try:
        events.append(
            {
                "id": uuid.uuid4().hex,
                "kind": str(body.get("kind", "unknown"))[:40],
                "at": dt.datetime.now(dt.timezone.utc),
            }
        )
    except BufferClosedError:  # the final flush has run: the row would be lost
        return JSONResponse({"error": "shutting down"}, status_code=503)
    return JSONResponse({"buffered": len(events)}, status_code=202)


async def counts(request: Request) -> JSONResponse:
    return JSONResponse({"buffered": len(events), "written": events.written})


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    await anyio.to_thread.run_sync(metadata.create_all, engine)
    if SPILL:
        await events.replay()  # what the last run spilled, before any new row
    async with anyio.create_task_group() as tg:
        tg.start_soon(events.run, INTERVAL)  # ends by itself once shutdown closed the buffer
        yield
        tg.cancel_scope.cancel()


app = Starlette(
    routes=[Route("/events", record, methods=["POST"]), Route("/events", counts)],
    lifespan=lifespan,
)
graceshut.starlette.install(app, coordinator)
