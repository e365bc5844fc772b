"""Making the process exit status say how the shutdown went.

uvicorn, once its own shutdown is done, restores the signal handlers it found and
raises the captured signal again, so a SIGTERM'd uvicorn dies with status 143 however
clean the stop was. graceshut takes the signal it handed on back out of the server's
record, lets the server return normally (status 0), and turns a failed run into
status 1 at interpreter exit.

Either way the log records go out first, including those queued for a
`logging.handlers.QueueListener`, whose thread dies with the interpreter. A clean
exit is left to Python: ending it here would skip the ``atexit`` hooks registered
before graceshut was imported (a tracing SDK set up first flushes in one of them).
"""

from __future__ import annotations

import atexit
import logging
import os

from .._core._logs import flush_logs

logger = logging.getLogger("graceshut")

_requested: int | None = None


def request_exit_status(code: int) -> None:
    """Exit with *code* when the interpreter ends normally, unless it is 0."""
    global _requested  # noqa: PLW0603 - one process, one exit status
    _requested = code


def forget_signal(owner: object, signum: int) -> bool:
    """Remove *signum* from a uvicorn-style server's list of signals to re-raise.

    Returns True when the server kept such a list and the signal was in it.
    """
    captured = getattr(owner, "_captured_signals", None)
    if isinstance(captured, list) and signum in captured:
        captured.remove(signum)
        return True
    return False


def _exit_with_requested_status() -> None:
    # Registered when graceshut is imported, so it runs after the exit functions
    # registered later (error reporters, tracing flushes) and their log lines.
    flush_logs(timeout=1.0)
    code = _requested
    if not code:
        return
    # atexit cannot change the status of a normal exit: end the process here, after
    # the log records and output are out.
    logging.shutdown()
    os._exit(code)


atexit.register(_exit_with_requested_status)
