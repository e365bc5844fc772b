"""The graceshut demo: a Starlette app that buffers page views and saves them on the way out.

Run it (from the repository root) with ``make demo``, or::

    uvicorn examples.app:app --port 8000

then press Ctrl-C (or ``kill -TERM <pid>``) and watch the log walk through the phases:
readiness fails, the app keeps serving for the propagation delay, in-flight requests
finish, the buffered views are written to SQLite, the lease file is released, and a
summary line reports how it went.

Try ``curl localhost:8000/slow`` in another terminal just before Ctrl-C: it still gets
its answer. ``curl localhost:8000/shutdown`` does what a preStop hook would.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import graceshut
import graceshut.starlette

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
log = logging.getLogger("demo")

DATABASE = Path(os.environ.get("DEMO_DATABASE", "demo.sqlite3"))
LEASE = DATABASE.with_suffix(".lease")

# Short defaults so the demo is quick at a terminal; on Kubernetes leave them to the
# environment (GRACESHUT_PROPAGATION_DELAY, GRACESHUT_GRACE_PERIOD).
coordinator = graceshut.Coordinator(
    grace_period=graceshut.env_default(15),  # GRACESHUT_GRACE_PERIOD wins if set
    propagation_delay=graceshut.env_default(2),
)
page_views: Counter[str] = Counter()


@coordinator.on_shutdown("announce", timeout=2)
async def deregister(ctx: graceshut.ShutdownContext) -> None:
    """Where a real app tells its load balancer or service registry that it is leaving."""
    log.info("deregistering from the load balancer (reason: %s)", ctx.reason)


@coordinator.on_shutdown("flush", timeout=5)
def save_page_views(ctx: graceshut.ShutdownContext) -> None:
    """Write the in-memory counters to SQLite in one transaction (a sync handler: a thread)."""
    views = dict(page_views)
    with contextlib.closing(sqlite3.connect(DATABASE, timeout=ctx.remaining())) as db, db:
        db.execute("CREATE TABLE IF NOT EXISTS views (path TEXT PRIMARY KEY, count INTEGER)")
        db.executemany(
            "INSERT INTO views VALUES (?, ?) "
            "ON CONFLICT(path) DO UPDATE SET count = count + excluded.count",
            views.items(),
        )
    page_views.clear()
    log.info("saved %d page-view counters to %s", len(views), DATABASE)


@coordinator.on_shutdown("release", timeout=2)
def release_lease() -> None:
    """Where a real app releases its Redis or etcd lock: here a lease file."""
    LEASE.unlink(missing_ok=True)
    log.info("released %s", LEASE)


@coordinator.on_shutdown("report", timeout=1)
def totals() -> None:
    with contextlib.closing(sqlite3.connect(DATABASE)) as db:
        rows = db.execute("SELECT path, count FROM views ORDER BY count DESC").fetchall()
    log.info("page views saved so far: %s", dict(rows))


async def home(request: Request) -> JSONResponse:
    page_views[request.url.path] += 1
    return JSONResponse({"hello": "world", "unsaved_views": sum(page_views.values())})


async def slow(request: Request) -> JSONResponse:
    page_views[request.url.path] += 1
    await anyio.sleep(float(request.query_params.get("seconds", "5")))
    return JSONResponse({"slow": "but finished"})


async def heartbeat() -> None:
    """Background work that stops at the drain: the kind of loop a queue consumer runs."""
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:

            async def stop_at_drain() -> None:
                await coordinator.wait_for_drain()
                scope.cancel()

            tg.start_soon(stop_at_drain)
            while True:
                async with coordinator.track("heartbeat"):
                    await anyio.sleep(1)


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    LEASE.write_text(str(os.getpid()))
    async with anyio.create_task_group() as tg:
        tg.start_soon(heartbeat)
        yield
        tg.cancel_scope.cancel()
    log.info("app lifespan closed (runs after graceshut's sequence)")


app = Starlette(routes=[Route("/", home), Route("/slow", slow)], lifespan=lifespan)
graceshut.starlette.install(app, coordinator)
