"""The apps that the throughput measure serves under uvicorn, one factory each.

The same trivial Starlette route in every one; only the shutdown wiring differs.

    uvicorn --app-dir benchmarks --factory _apps:bare
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import graceshut
import graceshut.starlette


async def home(request: Request) -> PlainTextResponse:
    """The trivial route."""
    return PlainTextResponse("ok")


def bare() -> Starlette:
    """The app without any shutdown wiring."""
    return Starlette(routes=[Route("/", home)])


def with_graceshut() -> Starlette:
    """The same app with `graceshut.starlette.install` (middleware, routes, signals)."""
    app = bare()
    # Fixed settings: the GRACESHUT_* variables of the shell must not change the numbers,
    # and no propagation delay, so that the server stops at once after the run.
    coordinator = graceshut.Coordinator(
        grace_period=10, safety_margin=1, propagation_delay=0, environ={}
    )
    graceshut.starlette.install(app, coordinator)
    return app


def with_counter() -> Starlette:
    """The same app with the hand-written pure-ASGI in-flight counter: the floor."""
    from _asgi import PureCounter  # noqa: PLC0415 - keeps this module light

    app = bare()
    app.add_middleware(PureCounter)
    return app


def with_closing_counter() -> Starlette:
    """The counter with the send wrapper that ``Connection: close`` needs: that floor."""
    from _asgi import ClosingCounter  # noqa: PLC0415 - keeps this module light

    app = bare()
    app.add_middleware(ClosingCounter)
    return app


def with_base_http_counter() -> Starlette:
    """The same app with the counter most users write today (BaseHTTPMiddleware)."""
    from _asgi import CountingMiddleware  # noqa: PLC0415 - keeps this module light

    app = bare()
    app.add_middleware(CountingMiddleware)
    return app


def with_svc_infra() -> Starlette:
    """The same app with svc-infra's `install_graceful_shutdown`."""
    from svc_infra.api.fastapi.middleware.graceful_shutdown import (  # noqa: PLC0415
        install_graceful_shutdown,
    )

    app = bare()
    install_graceful_shutdown(app, grace_seconds=10)  # type: ignore[arg-type]
    return app
