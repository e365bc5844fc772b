"""gunicorn server hooks: the timeout inside graceshut's budget, the master's own exit, WSGI.

``gunicorn -c python:graceshut.gunicorn`` loads all of them. For WSGI apps (sync and
gthread workers) `post_worker_init` starts graceshut in each worker and `worker_exit`
lets a worker that ends on its own run its sequence; for ASGI workers they do nothing.

gunicorn's master SIGKILLs workers still alive ``graceful_timeout`` seconds (default 30)
after it forwarded SIGTERM. If that is shorter than the grace period graceshut works
with, gunicorn cuts the flush and release phases short: `on_starting` raises it.

The master is the pod's main process, and graceshut's exit watchdog ends only the
workers: `when_ready` bounds the master's own exit too (see `bound_master_exit`). In
``gunicorn.conf.py``::

    from graceshut.gunicorn import on_starting, when_ready

or, with hooks of your own, call `raise_graceful_timeout(server)` and
`bound_master_exit(server)` from them.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from ._core._config import resolve_settings
from ._http._wsgi_runtime import runtimes
from ._process._supervisor import SupervisorWatchdog

__all__ = [
    "bound_master_exit",
    "on_starting",
    "post_worker_init",
    "raise_graceful_timeout",
    "when_ready",
    "worker_exit",
]

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


def bound_master_exit(server: Any) -> SupervisorWatchdog:
    """End gunicorn's master by the grace period, once SIGTERM or SIGINT told it to stop.

    The master notices its last worker's exit, runs its ``on_exit`` hook and exits: on
    a starved node that took seconds, and a hook that hangs holds it until the
    kubelet's SIGKILL (status 137). From the master's first SIGTERM or SIGINT on, a
    daemon thread waits until ``grace period - safety margin / 4`` after the pod's first
    trigger (the workers' record of it, so a preStop call counts; else the signal); if
    the master still runs then, it ends the master with status 0 as soon as none of
    its workers runs. It never ends a worker: each has its own exit watchdog, on the
    budget its coordinator was given. The master's grace period and margin come from
    ``GRACESHUT_GRACE_PERIOD`` and ``GRACESHUT_SAFETY_MARGIN``: set them there, not only
    in code, or a master that outlives its workers waits for the default budget.

    Call it from the ``when_ready`` hook (the master's signal handlers are in place
    then; this one runs in front of them). Returns the watchdog, not yet armed.
    """
    settings = resolve_settings(None, None, None)
    watchdog = SupervisorWatchdog(
        lambda: list(server.WORKERS),
        grace_period=settings.grace_period,
        safety_margin=settings.safety_margin,
        log=getattr(server.log, "error_log", logger),
        name="gunicorn's master",
    )
    watchdog.install()
    return watchdog


def when_ready(server: Any) -> None:
    """The ``when_ready`` hook for ``gunicorn.conf.py``: see `bound_master_exit`."""
    bound_master_exit(server)


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
