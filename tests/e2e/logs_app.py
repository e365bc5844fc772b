"""The README's FastAPI example, with a flush handler that fails, for the logging tests.

E2E_LOGGING: ``none`` (nothing configured, as under a plain ``uvicorn main:app``),
``basic`` (``logging.basicConfig`` with the app's own format) or ``queue`` (the root logger
logs through a `QueueHandler` to a `QueueListener` whose handler is slow, as one that
ships over the network is). E2E_HANG_AT_EXIT as in tests/e2e/exit_hang.py.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import queue
import sys
import time

from fastapi import FastAPI

import graceshut
import graceshut.starlette
import tests.e2e.exit_hang  # noqa: F401 - E2E_HANG_AT_EXIT

MODE = os.environ.get("E2E_LOGGING", "none")

app = FastAPI()
coordinator = graceshut.Coordinator()
cache: dict[str, int] = {}


@app.get("/hit/{key}")
async def hit(key: str) -> dict[str, int]:
    cache[key] = cache.get(key, 0) + 1
    return {key: cache[key]}


@coordinator.on_shutdown("flush", timeout=2)
def save_cache(ctx: graceshut.ShutdownContext) -> None:
    raise ConnectionError("database is down: 1200 rows not saved")


graceshut.starlette.install(app, coordinator)


class SlowHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A handler that takes 50 ms a record, as one that ships each over the network."""

    def emit(self, record: logging.LogRecord) -> None:
        time.sleep(0.05)
        super().emit(record)


if MODE == "basic":
    logging.basicConfig(level=logging.INFO, format="APP %(levelname)s %(name)s: %(message)s")
elif MODE == "queue":
    records: queue.Queue[logging.LogRecord] = queue.Queue()
    target = SlowHandler(sys.stderr)
    target.setFormatter(logging.Formatter("QUEUED %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(logging.handlers.QueueHandler(records))
    logging.getLogger().setLevel(logging.INFO)
    listener = logging.handlers.QueueListener(records, target)
    listener.start()
