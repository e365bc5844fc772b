"""An app with long-lived traffic, for the end-to-end tests of ending it on time.

An endless stream, an sse-starlette stream, a long-poll, a background task and a
spawned job; each records what happened to E2E_EVENTS, one line each, in order.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import AsyncIterator

import anyio
from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import PlainTextResponse, StreamingResponse
from starlette.routing import Route

import graceshut
import graceshut.starlette

logging.basicConfig(
    level=logging.INFO,
    stream=sys.stderr,
    format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s",
)

EVENTS = os.environ.get("E2E_EVENTS", os.devnull)
coordinator = graceshut.Coordinator()


def record(line: str) -> None:
    with open(EVENTS, "a", encoding="utf-8") as f:
        f.write(f"{line} {time.time():.3f}\n")


@coordinator.on_shutdown("flush", timeout=1.0, name="e2e-flush")
def flush() -> None:
    record("flush")


async def endless(request: Request) -> StreamingResponse:
    async def chunks() -> AsyncIterator[bytes]:
        try:
            while True:
                yield b"tick\n"
                await anyio.sleep(0.2)
        finally:
            record("stream-finally")

    return StreamingResponse(chunks(), media_type="text/plain")


async def sse(request: Request) -> EventSourceResponse:
    async def events() -> AsyncIterator[dict[str, str]]:
        try:
            while True:
                yield {"data": "tick"}
                await anyio.sleep(0.2)
        finally:
            record("sse-finally")

    return EventSourceResponse(events())


async def poll(request: Request) -> PlainTextResponse:
    try:
        await anyio.sleep(3600)
    finally:
        record("poll-finally")
    return PlainTextResponse("never")


async def background(request: Request) -> PlainTextResponse:
    async def work() -> None:
        await anyio.sleep(float(request.query_params.get("seconds", "3")))
        record("background-done")

    return PlainTextResponse("accepted", background=BackgroundTask(work))


async def spawn(request: Request) -> PlainTextResponse:
    async def work() -> None:
        await anyio.sleep(float(request.query_params.get("seconds", "3")))
        record("spawned-done")

    coordinator.spawn(work, name="e2e-spawned", timeout=10)
    return PlainTextResponse("accepted")


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    yield
    record("lifespan-shutdown")


app = Starlette(
    routes=[
        Route("/stream", endless),
        Route("/sse", sse),
        Route("/poll", poll),
        Route("/background", background),
        Route("/spawn", spawn),
    ],
    lifespan=lifespan,
)
graceshut.starlette.install(app, coordinator)

if __name__ == "__main__":
    # graceshut's hypercorn runner: python -m tests.e2e.streams_app PORT asyncio|trio
    from hypercorn.config import Config

    import graceshut.hypercorn

    config = Config()
    config.bind = [f"127.0.0.1:{sys.argv[1]}"]
    worker_class = sys.argv[2]
    sys.exit(graceshut.hypercorn.run(app, coordinator, config, worker_class=worker_class))  # type: ignore[arg-type]
