"""Exit-time work that never ends, for the exit watchdog's tests (imported by the e2e apps).

E2E_HANG_AT_EXIT=atexit: an ``atexit`` hook that sleeps forever (a tracing SDK's flush
to a collector that never answers). E2E_HANG_AT_EXIT=thread: a non-daemon thread that
never ends (a consumer loop nobody stops).
"""

from __future__ import annotations

import atexit
import os
import threading
import time

HANG = os.environ.get("E2E_HANG_AT_EXIT", "")


def hang_at_exit() -> None:
    while True:
        time.sleep(3600)


if HANG == "atexit":
    atexit.register(hang_at_exit)
elif HANG == "thread":
    threading.Thread(target=hang_at_exit, name="forever-consumer", daemon=False).start()
