"""The e2e app's routes without graceshut: what a Starlette app on Kubernetes does today.

Its readiness probe answers 200 for as long as the process serves, the way most apps
write one; its ``/`` and ``/slow`` are those of ``tests/e2e/app.py``.
"""

from __future__ import annotations

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route


async def home(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


async def slow(request: Request) -> PlainTextResponse:
    await anyio.sleep(float(request.query_params.get("seconds", "2")))
    return PlainTextResponse("slow ok")


async def ready(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ready")


app = Starlette(
    routes=[Route("/", home), Route("/slow", slow), Route("/readyz", ready), Route("/livez", ready)]
)
