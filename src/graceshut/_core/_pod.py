"""Who this pod is, for the integrations that tell others about it."""

from __future__ import annotations

import os
import socket


def pod_name() -> str:
    """This pod's name: ``POD_NAME``, else ``HOSTNAME``, else the host name."""
    return os.environ.get("POD_NAME") or os.environ.get("HOSTNAME") or socket.gethostname()
