"""gunicorn server hooks: the timeout inside graceshut's budget, and WSGI workers.

``gunicorn -c python:graceshut.gunicorn`` loads all of them. For WSGI apps (sync and
gthread workers) `post_worker_init` starts graceshut in each worker and `worker_exit`
lets a worker that ends on its own run its sequence; for ASGI workers they do nothing.

gunicorn's master SIGKILLs workers still alive ``graceful_timeout`` seconds (default 30)
after it forwarded SIGTERM. If that is shorter than the grace period graceshut works
with, gunicorn cuts the flush and release phases short. In ``gunicorn.conf.py``::

    from graceshut.gunicorn import on_starting

or, with a hook of your own, call `raise_graceful_timeout(server)` from it.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from ._core._config import resolve_settings
from ._http._wsgi_runtime import runtimes

__all__ = ["on_starting", "post_worker_init", "raise_graceful_timeout", "worker_exit"]

logger = logging.getLogger("graceshut")


def raise_graceful_timeout(server: Any) -> int:
    """Raise gunicorn's ``graceful_timeout`` to graceshut's grace period if it is lower.

    The grace period comes from ``GRACESHUT_GRACE_PERIOD`` (else 30), like the
    coordinator's. Returns the timeout in force afterwards.
    """
    grace = math.ceil(resolve_settings(None, None, None).grace_period)
    current = int(server.cfg.graceful_timeout)
    if current < grace:
        server.cfg.set("graceful_timeout", grace)
        server.log.info(
            "graceshut: graceful_timeout raised from %ss to %ss, the shutdown's grace period",
            current,
            grace,
        )
        return grace
    return current


def on_starting(server: Any) -> None:
    """The ``on_starting`` hook for ``gunicorn.conf.py``: see `raise_graceful_timeout`."""
    raise_graceful_timeout(server)


def post_worker_init(worker: Any) -> None:
    """The ``post_worker_init`` hook: start WSGI apps' sequence threads in the worker.

    It runs on the worker's main thread once the app is loaded, after gunicorn installed
    its own signal handlers, so graceshut's are chained in front of them. Apps preloaded
    in the master (``preload_app``) start here, never before the fork.
    """
    started = runtimes()
    for runtime in started:
        runtime.start()
    if started:
        from .wsgi import expose_close_connection  # noqa: PLC0415 - WSGI workers only

        worker.wsgi = expose_close_connection(worker.wsgi)


def worker_exit(server: Any, worker: Any) -> None:
    """The ``worker_exit`` hook: a worker that stops without a signal runs its sequence.

    gunicorn ends a worker on its own after ``max_requests``: then the sequence runs as
    after a lifespan shutdown (no propagation delay: the worker no longer accepts).
    After a signal it only waits for the run under way to end.
    """
    for runtime in runtimes():
        runtime.stop()
