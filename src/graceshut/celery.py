"""Celery workers: the same shutdown contract as the web pods, in one call.

In the module that makes the Celery app::

    app = Celery("proj", broker="redis://redis:6379/0")
    coordinator = graceshut.celery.install(app)

Then ``celery -A proj worker`` (prefork or threads pool), on SIGTERM or on a call of
the shutdown route of the admin listener (``GRACESHUT_ADMIN_ADDRESS``), runs the
sequence in the worker's main process:

1. announce: readiness fails, the worker stops consuming at once (its task consumer
   is cancelled; ETA tasks it holds and prefetched tasks no process has started will
   not start here);
2. no propagation delay by default: no Service routes to a worker
   (``GRACESHUT_PROPAGATION_DELAY`` turns it on);
3. drain: running tasks finish within the drain's share of the grace period; at its
   end the tasks still running are ended (Celery's soft-shutdown step) and every
   message the worker holds (those tasks with ``acks_late``, ETA tasks, prefetched
   tasks) goes back to the broker's queue: another worker runs them at once;
4. the app's flush and release handlers, then the report, which names the tasks
   (``name[id]``) that finished, were handed back or were cancelled;
5. Celery's own warm shutdown, and the exit status of the report (0 or 1), inside
   the grace period.

The admin listener serves ``/livez`` (the worker loop's own heartbeat), ``/readyz``
(consuming, not shutting down), ``/shutdown`` (for ``graceshut prestop``) and
``/metrics``; none of them touches the broker.
"""

from __future__ import annotations

import atexit
import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ._celery._loop import WorkerLoop
from ._celery._worker import WorkerBridge
from ._core._config import ConfigError, env_default
from ._core._coordinator import Coordinator
from ._core._phases import Phase
from ._http._admin import AdminListener, parse_admin_address, prometheus_metrics
from ._http._wsgi_runtime import SequenceThread

if TYPE_CHECKING:
    from celery import Celery

__all__ = ["ENV_LIVENESS_TIMEOUT", "install", "worker_settings"]

logger = logging.getLogger("graceshut")

ENV_LIVENESS_TIMEOUT = "GRACESHUT_CELERY_LIVENESS_TIMEOUT"
DEFAULT_LIVENESS_TIMEOUT = 30.0
#: Celery's own warm shutdown after the sequence takes time of its own: measured 2.7 to
#: 2.8 s for an idle prefork worker (Celery 5.7, ``-c 2``), 1.3 s for the threads pool.
DEFAULT_SAFETY_MARGIN = 3.0


def install(
    celery_app: Celery,
    coordinator: Coordinator | None = None,
    *,
    token: str | None = None,
    trust_loopback: bool | None = None,
    admin_address: str | None = None,
    admin_registry: Any = None,
    liveness_timeout: float | None = None,
) -> Coordinator:
    """Give *celery_app*'s workers graceshut's shutdown sequence and probes.

    Call it where the app is made: nothing starts until a worker's consumer is ready,
    and then only in the worker's main process (never in the pool's children, never
    in ``celery inspect`` or a producer that imports the app).

    Args:
        celery_app: The Celery application.
        coordinator: The coordinator to run; by default one from the ``GRACESHUT_*``
            settings with no propagation delay and a safety margin of 3 s, the time
            Celery's own warm shutdown takes after the sequence
            (``GRACESHUT_PROPAGATION_DELAY`` and ``GRACESHUT_SAFETY_MARGIN`` still
            set them).
        token: Bearer token of the shutdown route; default ``GRACESHUT_TOKEN``, else
            the pod secret, which ``graceshut prestop`` finds by itself.
        trust_loopback: Let loopback clients call the route without credentials;
            default ``GRACESHUT_TRUST_LOOPBACK``, else off.
        admin_address: Where the probes, the shutdown route and ``/metrics`` listen:
            ``PORT``, ``HOST:PORT`` or ``unix:/PATH``; default
            ``GRACESHUT_ADMIN_ADDRESS``, else none.
        admin_registry: The prometheus-client registry served on ``/metrics``
            (graceshut's metrics are added to it when prometheus-client is installed).
        liveness_timeout: Seconds without a heartbeat of the worker's loop after which
            ``/livez`` fails; default ``GRACESHUT_CELERY_LIVENESS_TIMEOUT``, else 30.

    Returns:
        The coordinator: register flush and release handlers on it.

    Raises:
        ConfigError: A setting or variable is invalid (its name is in the message).
    """
    from celery import signals  # noqa: PLC0415 - optional dependency

    if coordinator is None:
        coordinator = Coordinator(
            safety_margin=env_default(DEFAULT_SAFETY_MARGIN),
            propagation_delay=env_default(0.0),
        )
    address = parse_admin_address(admin_address)
    loop = WorkerLoop(coordinator, liveness_timeout=_liveness_timeout(liveness_timeout))
    bridge = WorkerBridge(coordinator, loop)
    coordinator.add_handler(
        bridge.announce, phase=Phase.ANNOUNCE, timeout=2.0, name="celery.stop-consuming"
    )
    coordinator.on_drain(bridge.drain)
    coordinator.on_report(bridge.after_report)
    # Registered before the worker's own exit functions (billiard's pool finalizer,
    # the sequence thread's stop), so it runs after them.
    atexit.register(bridge.exit_now)

    def ours(sender: Any) -> bool:
        # Celery's signals are process-wide: another app's worker is not ours.
        return sender is not None and sender.app is celery_app

    def on_worker_init(sender: Any = None, **_: Any) -> None:
        if ours(sender):
            celery_app.conf.update(worker_settings(coordinator))

    def on_worker_ready(sender: Any = None, **_: Any) -> None:
        if not ours(sender) or loop.consumer is not None:
            return
        # Made here, in the worker's main process only: a web process that imports the
        # app to send tasks (under gunicorn's hooks, which start every sequence thread
        # made in the process) never gets one.
        runtime = SequenceThread(coordinator, signals=True)
        loop.attach(sender, bridge.look)
        if address is not None:
            from .asgi import ShutdownEndpoint  # noqa: PLC0415 - made in the worker only

            endpoint = ShutdownEndpoint(coordinator, token=token, trust_loopback=trust_loopback)
            _instrument(coordinator, admin_registry)
            runtime.admin = AdminListener(
                coordinator,
                endpoint,
                address,
                metrics=prometheus_metrics(admin_registry),
                probes={"/readyz": loop.readiness, "/livez": loop.liveness},
            )
        else:
            logger.info(
                "no admin listener: set GRACESHUT_ADMIN_ADDRESS for the probes and the "
                "shutdown route of this worker"
            )
        runtime.start()  # after Celery's own signal handlers: ours go in front of them

    # Strong references: the receivers live as long as the app.
    signals.worker_init.connect(on_worker_init, weak=False)
    signals.worker_ready.connect(on_worker_ready, weak=False)
    return coordinator


def worker_settings(coordinator: Coordinator) -> dict[str, Any]:
    """Celery's own shutdown settings, derived from *coordinator*'s budget.

    ``worker_soft_shutdown_timeout`` is the drain's share of the budget (what the
    phases after it keep is taken off), for a cold shutdown that graceshut does not run
    (SIGQUIT, ``REMAP_SIGTERM=SIGQUIT``); ``worker_enable_soft_shutdown_on_idle`` makes
    that path hand back held ETA tasks too. `install` applies them at ``worker_init``.
    """
    later = (Phase.FLUSH, Phase.RELEASE, Phase.REPORT)
    reserved = sum(
        max((h.timeout for h in coordinator.handlers if h.phase is phase), default=0.0)
        for phase in later
    )
    settings = coordinator.settings
    drain = max(0.0, settings.budget - settings.propagation_delay - reserved)
    return {
        "worker_soft_shutdown_timeout": round(drain, 3),
        "worker_enable_soft_shutdown_on_idle": True,
    }


def _liveness_timeout(value: float | None, environ: Mapping[str, str] | None = None) -> float:
    env = os.environ if environ is None else environ
    source, raw = (
        ("liveness_timeout", value)
        if value is not None
        else (ENV_LIVENESS_TIMEOUT, env.get(ENV_LIVENESS_TIMEOUT))
    )
    if raw is None:
        return DEFAULT_LIVENESS_TIMEOUT
    try:
        seconds = float(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{source}={raw!r} is not a number of seconds") from None
    if not seconds > 0 or seconds == float("inf"):
        raise ConfigError(f"{source}={raw!r} must be a finite number of seconds above 0")
    return seconds


def _instrument(coordinator: Coordinator, registry: Any) -> None:
    try:
        from .contrib.prometheus import instrument  # noqa: PLC0415 - optional dependency
    except ImportError:
        return
    instrument(coordinator, registry=registry)
