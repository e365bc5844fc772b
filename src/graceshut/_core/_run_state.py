"""Everything one serving of the app binds and one shutdown run changes, in one place.

Forgetting a run (`Coordinator.forget_run`, for test harnesses that serve an app again)
is making a new `RunState`: nothing can be left over from the old one.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import anyio

    from .._process._membership import PodMembership
    from ._loop import LoopHandle
    from ._phases import Phase
    from ._report import ShutdownReport
    from ._tracker import InFlight

logger = logging.getLogger("graceshut")


@dataclasses.dataclass(eq=False)
class RunState:
    """The loop and pod this coordinator serves in, and the state of its run."""

    loop: LoopHandle | None = None
    """The event loop the coordinator is attached to (`Coordinator.attach`)."""
    pod: PodMembership | None = None
    """The worker group, with several worker processes per pod."""
    reason: str | None = None
    started_at: float = 0.0
    """Wall-clock time of the pod's first trigger."""
    started_monotonic: float = 0.0
    """The same moment on this process's monotonic clock: the deadline counts from it."""
    in_flight_at_start: int = 0
    leader: bool = True
    """Whether this process runs the once-per-pod handlers."""
    phase: Phase | None = None
    report: ShutdownReport | None = None
    complete: bool = False
    """True once the final flushes are over too: waiters wake then."""
    waiters: list[anyio.Event] = dataclasses.field(default_factory=list)
    """Woken when the report is there."""
    drain_waiters: list[anyio.Event] = dataclasses.field(default_factory=list)
    """Woken when the drain begins."""
    start_lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    """Won by the first trigger, without blocking: safe from signal handlers."""
    deadline: float | None = None
    """The run's deadline (monotonic) once it started: the configured one, or sooner
    when the API server says the deletion gives less."""
    drain_end: float | None = None
    """When the drain step ends (monotonic), from the moment it begins."""
    tasks: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    """Background tasks by outcome (`Coordinator.note_task`), for the report."""

    def start(
        self,
        reason: str,
        in_flight: InFlight,
        *,
        pod_wide: bool = False,
        started_at: float | None = None,
        from_sibling: bool = False,
    ) -> bool:
        """Flip readiness at once; True for the first trigger only, which starts the run.

        Safe from signal handlers and threads: the first caller wins a non-blocking lock
        before anything else happens, so two triggers can never start two runs.

        Args:
            reason: What started it.
            in_flight: The hot state the middleware reads: shutting down from now on.
            pod_wide: Start every worker of the pod (the shutdown route), and lead it.
            started_at: The pod's first trigger, when a sibling had it.
            from_sibling: The trigger came from a sibling worker.
        """
        pod = self.pod
        if not self.start_lock.acquire(blocking=False):
            if pod_wide and pod is not None and not pod.triggered():
                # A preStop call reaching a worker that was already stopping on its own.
                self.leader = pod.claim(reason, time.time())[0]
            logger.debug("shutdown trigger %s joins the run under way", reason)
            return False
        now = time.time()
        started_at = now if started_at is None else started_at
        if pod is None:
            self.leader = True
        elif pod_wide:
            self.leader, reason, started_at = pod.claim(reason, started_at)
        else:
            # A sibling's trigger, or one for this process only (a signal from the
            # supervisor, which also recycles single workers; the lifespan shutdown):
            # once-per-pod handlers are not this worker's to run.
            self.leader = False
            if not from_sibling:
                pod.mark_stopping()
        # One deadline for the whole pod: counted from the first worker's trigger.
        self.started_monotonic = time.monotonic() - max(0.0, now - started_at)
        self.started_at = started_at
        self.reason = reason
        self.in_flight_at_start = in_flight.count
        if in_flight.evidence is not None:
            # Before the flag flips: a request after it is on a connection that the
            # evidence can tell from those already open.
            in_flight.evidence.triggered()
        in_flight.shutting_down = True
        in_flight.refresh()
        return True
