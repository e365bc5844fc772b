"""The probes' answers, one rule for every place that serves them.

The ASGI and WSGI routes and the admin listener all answer ``/readyz`` and ``/livez``
from these two functions, so that readiness means the same wherever it is read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .._core._coordinator import Coordinator

Answer = tuple[int, dict[str, object]]


def readiness(coordinator: Coordinator) -> Answer:
    """200 while serving, 503 from the pod's first shutdown trigger on.

    With ``readiness_on_terminate="serve"``, 503 only from the start of the drain: the
    pod stays a serving endpoint through the propagation delay.
    """
    if coordinator.settings.readiness_on_terminate == "serve":
        failing = coordinator.draining
    else:
        failing = coordinator.pod_triggered()
    if failing:
        phase = coordinator.phase
        return 503, {
            "status": "shutting down",
            "reason": coordinator.reason,
            "phase": phase.value if phase else None,
        }
    return 200, {"status": "ready"}


def liveness(coordinator: Coordinator) -> Answer:
    """200 for as long as the process serves, shutdown included."""
    return 200, {"status": "alive", "shutting_down": coordinator.shutting_down}
