"""graceshut's log lines when the app configured nothing, and getting them out before exit.

Libraries give their logger a `logging.NullHandler` so that an app that configures no
logging sees nothing from them. For graceshut that went too far: with a handler on its
logger, Python's last-resort handler (which prints warnings to stderr when no handler
at all is found) never fires, so under a plain ``uvicorn main:app`` (uvicorn configures
its own loggers only) a flush handler that failed with "database is down: 1200 rows not
saved" left no line anywhere, only exit status 1. `StderrFallback` stands where the
`NullHandler` stood and does what the last-resort handler would: when no other handler
would see a record, warnings, errors and the final report line go to stderr, one line
each. Once the app configures logging (a handler on ``graceshut`` or an ancestor,
``basicConfig``), it stays silent.

`flush_logs` gets the records out before a hard exit (``os._exit`` skips everything):
handlers are flushed and queues behind a `logging.handlers.QueueHandler` are given a
moment to drain into their listener, whose thread dies with the process.
"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import sys
import time
from typing import Any

#: Set on the final report record (``extra``): shown on stderr even when clean.
REPORT_FIELD = "report"


class StderrFallback(logging.Handler):
    """Warnings, errors and the report line to stderr while nothing else would log them."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)

    def handle(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING and not hasattr(record, REPORT_FIELD):
            return False
        if _someone_else_handles(record):
            return False
        return bool(super().handle(record))

    def emit(self, record: logging.LogRecord) -> None:
        """Write ``graceshut WARNING: message`` as one line (a traceback's last line kept)."""
        try:
            text = " ".join(record.getMessage().split())
            if record.exc_info and record.exc_info[1] is not None:
                error = record.exc_info[1]
                described = f"{type(error).__name__}: {error}"
                if described not in text:
                    text += f" ({' '.join(described.split())})"
            stream = sys.stderr
            if stream is not None:
                stream.write(f"{record.name} {record.levelname}: {text}\n")
                stream.flush()
        except Exception:
            self.handleError(record)


def _someone_else_handles(record: logging.LogRecord) -> bool:
    """Whether a handler other than ours sees *record* on its way up the hierarchy."""
    logger: logging.Logger | None = logging.getLogger(record.name)
    while logger is not None:
        for handler in logger.handlers:
            # Any handler counts, whatever its level, as for Python's last resort.
            if not isinstance(handler, StderrFallback):
                return True
        if not logger.propagate:
            return False
        logger = logger.parent
    return False


def log_report_line(
    logger: logging.Logger, level: int, message: str, extra: dict[str, Any]
) -> None:
    """Log the report's summary; with nothing configured, show it even at ``INFO``.

    Python's default level (``WARNING`` on the root logger) would drop a clean run's
    summary before any handler sees it: the one line that says how the shutdown went.
    """
    if logger.isEnabledFor(level):
        logger.log(level, "%s", message, extra=extra)
        return
    record = logger.makeRecord(
        logger.name, level, "(report)", 0, "%s", (message,), None, extra=extra
    )
    if not _someone_else_handles(record):
        for handler in logger.handlers:
            if isinstance(handler, StderrFallback):
                handler.handle(record)


def install_fallback(logger: logging.Logger) -> None:
    """Give *logger* the fallback once (a reload of the package must not add a second)."""
    if not any(isinstance(h, StderrFallback) for h in logger.handlers):
        logger.addHandler(StderrFallback())


def flush_logs(timeout: float = 1.0) -> None:
    """Flush every handler, waiting at most *timeout* s for queue handlers to drain.

    A `QueueListener` takes records off the queue on a thread of its own and calls
    ``task_done`` for each: the queue is drained once ``unfinished_tasks`` is 0.
    """
    handlers = _all_handlers()
    end = time.monotonic() + max(0.0, timeout)
    for handler in handlers:
        if isinstance(handler, logging.handlers.QueueHandler):
            _wait_drained(handler.queue, end)
    for handler in handlers:
        with contextlib.suppress(Exception):
            handler.flush()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            if stream is not None:
                stream.flush()


def _wait_drained(queue: Any, end: float) -> None:
    def pending() -> bool:
        unfinished = getattr(queue, "unfinished_tasks", None)
        if isinstance(unfinished, int):
            return unfinished > 0
        empty = getattr(queue, "empty", None)
        return callable(empty) and not empty()

    while pending() and time.monotonic() < end:
        time.sleep(0.005)


def _all_handlers() -> list[logging.Handler]:
    found: list[logging.Handler] = []
    # The registry of every live handler, the one logging.shutdown() walks.
    for ref in list(getattr(logging, "_handlerList", [])):
        handler = ref() if callable(ref) else None
        if isinstance(handler, logging.Handler) and handler not in found:
            found.append(handler)
    return found
