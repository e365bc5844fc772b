"""An app planned for a 60 s grace period: a flush handler, and a drain held by a long job.

The job (``export``, tracked) runs until graceshut ends it at the end of the drain's
share; the flush handler then writes a line to ``$FLUSH_FILE``. Given its whole grace
period it stops clean; deleted with a shorter one, the kill lands in the drain unless
graceshut knows the true deadline (``GRACESHUT_DEADLINE_SOURCE=api``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import graceshut
from graceshut.starlette import install

coordinator = graceshut.Coordinator()


@coordinator.on_shutdown("flush", timeout=5, name="save-buffer")
async def save_buffer(ctx: graceshut.ShutdownContext) -> None:
    await anyio.sleep(1)  # a write to durable storage
    with Path(os.environ["FLUSH_FILE"]).open("a") as file:
        file.write(f"flushed with {ctx.remaining():.1f}s left\n")


async def export() -> None:
    async with coordinator.track("export"):
        await anyio.sleep(3600)


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    async with anyio.create_task_group() as tg:
        tg.start_soon(export)
        yield
        tg.cancel_scope.cancel()


async def home(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


app = Starlette(routes=[Route("/", home)], lifespan=lifespan)
install(app, coordinator)
