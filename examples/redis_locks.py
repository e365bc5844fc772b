"""A Starlette app whose Redis locks are released when the pod stops.

Two kinds of lock, both taken through `graceshut.contrib.redis.RedisLocks`:

- ``demo:leader``: taken at startup and held while the app serves (graceshut renews its
  lease); only one replica runs the leader's work. When this replica stops, the release
  phase deletes the key, so another replica can take over at once instead of waiting
  out the lease.
- ``demo:report:<name>``: taken by a request for the time it runs. A request still
  running when the drain gives up has its lock released too.

Run it against a local Redis (nothing connects before startup)::

    REDIS_URL=redis://127.0.0.1:6379/0 uvicorn examples.redis_locks:app --port 8000

then ``curl localhost:8000/locks``, ``curl -X POST localhost:8000/reports/daily``, press
Ctrl-C, and watch ``redis-locks`` in the final report; ``redis-cli keys 'demo:*'`` is empty.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator

import anyio
import redis.asyncio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import graceshut
import graceshut.starlette
from graceshut.contrib.redis import RedisLocks

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
log = logging.getLogger("demo")

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")

coordinator = graceshut.Coordinator(
    grace_period=graceshut.env_default(15),  # GRACESHUT_GRACE_PERIOD wins if set
    propagation_delay=graceshut.env_default(2),
)
locks = RedisLocks(coordinator, timeout=3)


async def keep_leadership(client: redis.asyncio.Redis) -> None:
    """Hold ``demo:leader`` while serving; the shutdown's release phase lets it go."""
    # No ttl: a 30 s lease that graceshut renews while this process holds the lock, so a
    # replica killed outright frees it within 30 s, and a live one keeps it.
    leader = locks.lock(client, "demo:leader")
    if not await leader.acquire(blocking=False):
        log.info("another replica is the leader")
        return
    log.info("this replica is the leader")


async def run_report(request: Request) -> JSONResponse:
    """Build one report at a time per name, across all replicas."""
    name = request.path_params["name"]
    seconds = float(request.query_params.get("seconds", "1"))
    lock = locks.lock(
        request.app.state.redis, f"demo:report:{name}", ttl=seconds + 30, blocking=False
    )
    if not await lock.acquire():
        return JSONResponse({"report": name, "error": "already running"}, status_code=409)
    try:
        await anyio.sleep(seconds)  # the work
    finally:
        await lock.release()
    return JSONResponse({"report": name, "done": True})


async def held_locks(request: Request) -> JSONResponse:
    """What the shutdown would release now."""
    return JSONResponse({"held": list(locks.held)})


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    # The client is closed after graceshut's sequence: the release phase still uses it.
    async with redis.asyncio.Redis.from_url(REDIS_URL) as client:
        app.state.redis = client
        async with anyio.create_task_group() as tg:
            tg.start_soon(keep_leadership, client)
            yield
            tg.cancel_scope.cancel()


app = Starlette(
    routes=[
        Route("/reports/{name}", run_report, methods=["POST"]),
        Route("/locks", held_locks),
    ],
    lifespan=lifespan,
)
graceshut.starlette.install(app, coordinator)
