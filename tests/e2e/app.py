"""The app the end-to-end tests run under real servers, configured by environment.

E2E_EVENTS: a file each handler appends one line to, so tests see what ran and how often.
E2E_FAIL: a phase whose handler raises (exit status 1 expected).
E2E_SLOW: ``phase=seconds``, a phase whose handler takes that long.
E2E_METRICS: set to expose graceshut's Prometheus metrics (for the admin listener).
E2E_PUSHGATEWAY: with E2E_METRICS, the Pushgateway the final numbers are pushed to.
E2E_LIFESPAN_SLOW: seconds the app's own lifespan shutdown takes (closing a pool, say).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import AsyncIterator

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

import graceshut
import graceshut.starlette
import tests.e2e.exit_hang  # noqa: F401 - E2E_HANG_AT_EXIT

logging.basicConfig(
    level=logging.INFO,
    stream=sys.stderr,
    format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s",
)

EVENTS = os.environ.get("E2E_EVENTS", os.devnull)
FAIL = os.environ.get("E2E_FAIL", "")
SLOW_PHASE, _, SLOW_SECONDS = os.environ.get("E2E_SLOW", "=0").partition("=")

coordinator = graceshut.Coordinator()


def record(line: str) -> None:
    with open(EVENTS, "a", encoding="utf-8") as f:
        f.write(f"{line} {os.getpid()}\n")


for phase in graceshut.Phase:

    def handler(ctx: graceshut.ShutdownContext) -> None:
        record(f"{ctx.phase.value}")
        if ctx.phase.value == SLOW_PHASE:
            time.sleep(float(SLOW_SECONDS))
        if ctx.phase.value == FAIL:
            raise RuntimeError(f"{ctx.phase.value} failed on purpose")

    timeout = 2.0 + (float(SLOW_SECONDS) if phase.value == SLOW_PHASE else 0.0)
    coordinator.add_handler(handler, phase=phase, timeout=timeout, name=f"e2e-{phase.value}")


@coordinator.on_shutdown("announce", timeout=2.0, name="e2e-pod-announce", once_per_pod=True)
def announce_once() -> None:
    record("pod-announce")


async def home(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


async def slow(request: Request) -> PlainTextResponse:
    await anyio.sleep(float(request.query_params.get("seconds", "2")))
    return PlainTextResponse("slow ok", headers={"x-pid": str(os.getpid())})


async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    try:
        while True:
            text = await websocket.receive_text()
            await websocket.send_text(text)
    except WebSocketDisconnect as exc:
        record(f"websocket-closed-{exc.code}")


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    yield
    await anyio.sleep(float(os.environ.get("E2E_LIFESPAN_SLOW", "0")))


app = Starlette(
    routes=[Route("/", home), Route("/slow", slow), WebSocketRoute("/ws", echo)],
    lifespan=lifespan,
)
graceshut.starlette.install(app, coordinator)

if os.environ.get("E2E_METRICS"):
    from graceshut.contrib.prometheus import instrument

    instrument(coordinator, push_gateway=os.environ.get("E2E_PUSHGATEWAY") or None)
