"""graceshut's log lines under plain logging, a JSON formatter, and structlog.

Runs one small shutdown (a webhook, a tracked job, a failing and a hanging handler) and
prints what graceshut logs, formatted one of four ways::

    python -m examples.logging_formats plain
    python -m examples.logging_formats json
    python -m examples.logging_formats structlog        # needs: pip install structlog
    python -m examples.logging_formats structlog-json

docs/logging.md shows the output.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import anyio

import graceshut
from graceshut.contrib.webhook import notify

# -- 1. plain logging ---------------------------------------------------------------


def plain() -> None:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stdout,
    )


# -- 2. JSON, standard library only ---------------------------------------------------

# The attributes every LogRecord has: anything else came in through extra=.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def json_lines() -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JSONFormatter())
    logging.basicConfig(level=logging.INFO, handlers=[handler])


# -- 3. structlog, rendering stdlib records too ----------------------------------------


def structlog_setup(*, as_json: bool) -> None:
    import structlog  # noqa: PLC0415 - optional: only this mode needs it

    shared = [
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),  # graceshut's extra= fields become event keys
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,  # run on records from stdlib loggers such as graceshut's
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer()
            if as_json
            else structlog.dev.ConsoleRenderer(colors=False),
        ],
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(formatter)
    logging.basicConfig(level=logging.INFO, handlers=[handler])


# -- the shutdown that is logged --------------------------------------------------------


class Deregister(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["content-length"]))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def run() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Deregister)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    coordinator = graceshut.Coordinator(grace_period=10, safety_margin=1, propagation_delay=0.2)
    notify(coordinator, f"http://127.0.0.1:{server.server_address[1]}/deregister", name="lb")

    @coordinator.on_shutdown("drain", timeout=2, name="consumer")
    async def stop_consumer() -> None:
        await anyio.sleep(0.05)

    @coordinator.on_shutdown("flush", timeout=1, name="cache")
    def save_cache() -> None:
        raise ConnectionError("cache server refused the connection")

    @coordinator.on_shutdown("release", timeout=0.3, name="lock")
    async def release_lock() -> None:
        await anyio.sleep(5)  # a lock server that does not answer

    async def main() -> None:
        async def export() -> None:
            async with coordinator.track("export"):
                await anyio.sleep(0.4)

        async with anyio.create_task_group() as tg:
            tg.start_soon(export)
            await anyio.sleep(0.01)
            await coordinator.shutdown("SIGTERM")

    anyio.run(main)
    server.shutdown()


if __name__ == "__main__":
    mode = sys.argv[1] if len(sys.argv) > 1 else "plain"
    {
        "plain": plain,
        "json": json_lines,
        "structlog": lambda: structlog_setup(as_json=False),
        "structlog-json": lambda: structlog_setup(as_json=True),
    }[mode]()
    run()
