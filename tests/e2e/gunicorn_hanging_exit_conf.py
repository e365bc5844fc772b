"""gunicorn hooks: graceshut's, and an ``on_exit`` hook that hangs (the master's own exit work).

``E2E_UNBOUNDED_MASTER=1`` leaves graceshut's ``when_ready`` out: the baseline.
"""

import os
import time

from graceshut.gunicorn import on_starting

if not os.environ.get("E2E_UNBOUNDED_MASTER"):
    from graceshut.gunicorn import when_ready

    __all__ = ["on_exit", "on_starting", "when_ready"]
else:
    __all__ = ["on_exit", "on_starting"]


def on_exit(server: object) -> None:
    """A hook of the master's own that never returns in time."""
    time.sleep(60)
