"""The Flask app the WSGI end-to-end tests run under gunicorn, configured like app.py.

E2E_EVENTS: a file each handler appends one line to. E2E_PLAIN=1: no graceshut (the
baseline in the rolling-restart test). E2E_DRAIN_SECONDS: how long the drain handler
takes (0).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any

from flask import Flask, Response, request

import graceshut
import graceshut.flask
import tests.e2e.exit_hang  # noqa: F401 - E2E_HANG_AT_EXIT

logging.basicConfig(
    level=logging.INFO,
    stream=sys.stderr,
    format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s",
)

EVENTS = os.environ.get("E2E_EVENTS", os.devnull)
PLAIN = os.environ.get("E2E_PLAIN") == "1"
DRAIN_SECONDS = float(os.environ.get("E2E_DRAIN_SECONDS", "0"))

app = Flask(__name__)


def record(line: str) -> None:
    with open(EVENTS, "a", encoding="utf-8") as f:
        f.write(f"{line} {os.getpid()}\n")


@app.get("/")
def home() -> str:
    return "ok"


@app.get("/slow")
def slow() -> Response:
    time.sleep(float(request.args.get("seconds", "2")))
    return Response("slow ok")


@app.get("/readyz")
def plain_readyz() -> str:
    """Only reached without graceshut: the probe every app has."""
    return "ready"


coordinator = graceshut.Coordinator()

if not PLAIN:
    for phase in graceshut.Phase:

        def handler(ctx: graceshut.ShutdownContext) -> None:
            record(ctx.phase.value)
            if ctx.phase is graceshut.Phase.DRAIN:
                time.sleep(DRAIN_SECONDS)  # keeps an idle worker draining, for its 503s

        timeout = 2.0 + (DRAIN_SECONDS if phase is graceshut.Phase.DRAIN else 0.0)
        coordinator.add_handler(handler, phase=phase, timeout=timeout, name=f"e2e-{phase.value}")

    @coordinator.on_shutdown("announce", timeout=2.0, name="e2e-pod-announce", once_per_pod=True)
    async def announce_once() -> None:
        record("pod-announce")

    graceshut.flask.install(app, coordinator)


def _with_pid(wsgi_app: Any) -> Any:
    """Every answer, graceshut's routes included, names the worker that gave it."""

    def app_with_pid(environ: dict[str, Any], start_response: Any) -> Any:
        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            return start_response(status, [*headers, ("x-pid", str(os.getpid()))], exc_info)

        return wsgi_app(environ, start)

    return app_with_pid


app.wsgi_app = _with_pid(app.wsgi_app)  # type: ignore[method-assign]
