"""A FastAPI app with a handler in every phase of graceshut's sequence, SQLite for storage.

Run it (from the repository root)::

    uvicorn examples.fastapi_app:app --port 8000

    curl -X POST localhost:8000/notes -H 'content-type: application/json' -d '{"text": "hi"}'
    curl -X POST localhost:8000/jobs/report-1      # queued; the worker takes 1 s per job
    curl localhost:8000/                           # what is buffered, queued and saved

then press Ctrl-C (or ``kill -TERM <pid>``). The log walks through the phases:

- **announce**: ``/readyz`` answers 503, the app says it is leaving (a log line here;
  a load balancer or service registry call in a real app);
- the **propagation delay** (``GRACESHUT_PROPAGATION_DELAY``, 5 s by default): still serving;
- **drain**: new requests get 503; the job queue is closed and the worker finishes the
  jobs already queued (each one held open with ``coordinator.track``); the periodic
  saver stops at ``coordinator.wait_for_drain()``;
- **flush**: the buffered notes and job results go to SQLite in one transaction;
- **release**: the lock file taken at startup is removed (a Redis or etcd lock in a real
  app: see ``examples/redis_locks.py``);
- **report**: a summary line, and the report as JSON beside the database.

Settings: ``FASTAPI_DEMO_DATABASE`` (the SQLite file, ``fastapi_demo.sqlite3``),
``FASTAPI_DEMO_JOB_SECONDS`` (1), ``FASTAPI_DEMO_SAVE_INTERVAL`` (seconds between
periodic saves, 10), and the ``GRACESHUT_*`` variables of the coordinator.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import anyio.to_thread
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

import graceshut
import graceshut.starlette

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
log = logging.getLogger("fastapi-demo")

DATABASE = Path(os.environ.get("FASTAPI_DEMO_DATABASE", "fastapi_demo.sqlite3"))
LOCK = DATABASE.with_suffix(".lock")
REPORT = DATABASE.with_suffix(".report.json")
JOB_SECONDS = float(os.environ.get("FASTAPI_DEMO_JOB_SECONDS", "1"))
SAVE_INTERVAL = float(os.environ.get("FASTAPI_DEMO_SAVE_INTERVAL", "10"))

coordinator = graceshut.Coordinator()  # GRACESHUT_* variables, else 30 s grace period


class Buffer:
    """Rows kept in memory until the next save: the write-behind the flush phase empties."""

    def __init__(self) -> None:
        self._rows: list[tuple[str, str]] = []
        self._lock = threading.Lock()  # appended on the loop, saved from worker threads
        self.saved = 0

    def append(self, kind: str, value: str) -> None:
        with self._lock:
            self._rows.append((kind, value))

    def __len__(self) -> int:
        return len(self._rows)

    def save(self, timeout: float = 5.0) -> int:
        """Write every buffered row to SQLite in one transaction; return how many."""
        with self._lock:
            rows, self._rows = self._rows, []
        try:
            with contextlib.closing(sqlite3.connect(DATABASE, timeout=timeout)) as db, db:
                db.execute("CREATE TABLE IF NOT EXISTS records (kind TEXT, value TEXT)")
                db.executemany("INSERT INTO records VALUES (?, ?)", rows)
        except BaseException:
            with self._lock:  # keep them for the next attempt
                self._rows[:0] = rows
            raise
        self.saved += len(rows)
        return len(rows)


class Jobs:
    """A queue of jobs and the worker that runs them, created in the lifespan."""

    def __init__(self) -> None:
        self.send: MemoryObjectSendStream[str] | None = None
        self.receive: MemoryObjectReceiveStream[str] | None = None
        self.done = anyio.Event()

    def open(self) -> None:
        self.send, self.receive = anyio.create_memory_object_stream[str](max_buffer_size=100)
        self.done = anyio.Event()

    async def work(self) -> None:
        """Run queued jobs until the queue is closed and empty (the drain closes it)."""
        if self.receive is None:
            raise RuntimeError("open() first")
        try:
            async with self.receive:
                async for name in self.receive:
                    async with coordinator.track(f"job {name}"):  # the drain waits for it
                        await anyio.sleep(JOB_SECONDS)  # the work
                        buffer.append("job", name)
        finally:
            self.done.set()


buffer = Buffer()
jobs = Jobs()


# -- the shutdown handlers, one or more per phase --------------------------------------


@coordinator.on_shutdown("announce", timeout=2)
async def deregister(ctx: graceshut.ShutdownContext) -> None:
    """Where a real app tells its load balancer or service registry that it is leaving."""
    log.info("deregistering from the load balancer (reason: %s)", ctx.reason)


@coordinator.on_shutdown("drain", timeout=10)
async def finish_queued_jobs(ctx: graceshut.ShutdownContext) -> None:
    """Take no more jobs, and let the worker finish those already queued."""
    if jobs.send is None:
        return
    jobs.send.close()  # the worker's loop ends once the queue is empty
    await jobs.done.wait()
    log.info("job queue closed and empty")


@coordinator.on_shutdown("flush", timeout=5)
def save_buffer(ctx: graceshut.ShutdownContext) -> None:  # sync: runs in a worker thread
    """Write what is still buffered to SQLite, within the time the phase has left."""
    count = buffer.save(timeout=ctx.remaining())
    log.info("saved %d buffered rows to %s", count, DATABASE)


@coordinator.on_shutdown("release", timeout=2)
def release_lock() -> None:
    """Where a real app releases its Redis or etcd lock: here a lock file."""
    LOCK.unlink(missing_ok=True)
    log.info("released %s", LOCK)


@coordinator.on_shutdown("report", timeout=1)
def log_totals() -> None:
    """A last line with what the database holds."""
    with contextlib.closing(sqlite3.connect(DATABASE)) as db:
        rows = db.execute("SELECT kind, count(*) FROM records GROUP BY kind").fetchall()
    log.info("rows saved so far: %s", dict(rows))


@coordinator.on_report
def keep_report(report: graceshut.ShutdownReport) -> None:
    """The final report as JSON, where a termination message or a metrics push would go."""
    REPORT.write_text(json.dumps(report.to_dict(), indent=2))


# -- background work -------------------------------------------------------------------


async def save_periodically() -> None:
    """Save the buffer every SAVE_INTERVAL seconds until the drain begins."""
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:

            async def stop_at_drain() -> None:
                await coordinator.wait_for_drain()
                scope.cancel()  # the flush phase saves the rest

            tg.start_soon(stop_at_drain)
            while True:
                await anyio.sleep(SAVE_INTERVAL)
                async with coordinator.track("periodic save"):
                    await anyio.to_thread.run_sync(buffer.save)


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    LOCK.write_text(str(os.getpid()))
    jobs.open()
    async with anyio.create_task_group() as tg:
        tg.start_soon(jobs.work)
        tg.start_soon(save_periodically)
        yield
        tg.cancel_scope.cancel()  # runs after graceshut's sequence: nothing is left


app = FastAPI(title="graceshut FastAPI example", lifespan=lifespan)


class Note(BaseModel):
    text: str


@app.get("/")
async def status() -> dict[str, int]:
    return {"buffered": len(buffer), "saved": buffer.saved}


@app.post("/notes", status_code=202)
async def add_note(note: Note) -> dict[str, int]:
    buffer.append("note", note.text)
    return {"buffered": len(buffer)}


@app.post("/jobs/{name}", status_code=202)
async def add_job(name: str) -> dict[str, str]:
    if jobs.send is None:
        raise HTTPException(503, "not started")
    try:
        jobs.send.send_nowait(name)
    except anyio.ClosedResourceError:
        raise HTTPException(503, "shutting down") from None
    except anyio.WouldBlock:
        raise HTTPException(429, "too many queued jobs") from None
    return {"queued": name}


graceshut.starlette.install(app, coordinator)  # drain, /readyz /livez /shutdown, SIGTERM
