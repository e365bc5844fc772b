"""A gunicorn server hook that keeps gunicorn's timeout inside graceshut's budget.

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

from ._config import resolve_settings

__all__ = ["on_starting", "raise_graceful_timeout"]

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
