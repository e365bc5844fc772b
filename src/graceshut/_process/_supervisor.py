"""A supervisor's own exit, bounded: gunicorn's master, PID 1 in the pod, after its workers.

The exit watchdog ends each worker inside the grace period, but the master that forked
them is the container's main process, and its exit is its own: it notices that its last
worker is gone, runs its exit hooks, and exits. On a starved node that took 2 s and
more after the worker had gone (seen with eight test suites on 2 cores), and the
kubelet's SIGKILL then turned a clean shutdown into status 137. An ``on_exit`` hook
that hangs holds the master until that SIGKILL.

`SupervisorWatchdog` is armed by the supervisor's first SIGTERM or SIGINT. A daemon
thread waits until ``grace period - safety margin / 4`` after the pod's first trigger
(the time the workers recorded in their shared directory, else this signal's): after
the workers' own watchdog (``margin / 2``) and before the kubelet's SIGKILL. If the
supervisor still runs then, and once none of its workers runs (it never ends one: a
worker's own watchdog keeps to the budget the worker was given, which the supervisor
may not know), it logs what it did and ends the supervisor through ``os._exit`` with
status 0, what gunicorn's master exits with after a SIGTERM.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable
from types import FrameType
from typing import Any

from .._core._logs import flush_logs
from ._workers import WorkerGroup

logger = logging.getLogger("graceshut")

SignalHandler = Callable[[int, FrameType | None], Any]


class SupervisorWatchdog:
    """Ends the supervisor process by the grace period once it was told to stop.

    Args:
        workers: The PIDs of the workers the supervisor still knows (read when it fires).
        grace_period: The pod's grace period, in seconds.
        safety_margin: graceshut's safety margin; the supervisor keeps a quarter of it.
        log: Where the forced exit is told (the supervisor's own error log).
        name: The supervisor, as the log names it.
    """

    def __init__(
        self,
        workers: Callable[[], Iterable[int]],
        *,
        grace_period: float,
        safety_margin: float,
        log: logging.Logger = logger,
        name: str = "the supervisor",
    ) -> None:
        self._name = name
        self._workers = workers
        self._grace_period = grace_period
        self._safety_margin = safety_margin
        self._log = log
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._cancelled = threading.Event()
        self.exit_at: float | None = None

    def install(self, signums: Iterable[int] = (signal.SIGTERM, signal.SIGINT)) -> None:
        """Arm on each of *signums*, in front of the handlers installed now (chained)."""
        for signum in signums:
            previous = signal.getsignal(signum)
            signal.signal(signum, self._chained(previous))

    def _chained(self, previous: Any) -> SignalHandler:
        def handle(signum: int, frame: FrameType | None) -> None:
            # A forked worker runs this handler until it installs its own: not its to arm.
            if os.getpid() == self._pid:
                self.arm()
            if callable(previous):
                previous(signum, frame)
            elif previous == signal.SIG_DFL:
                signal.signal(signum, signal.SIG_DFL)
                os.kill(os.getpid(), signum)

        return handle

    def arm(self, now: float | None = None) -> None:
        """Start the countdown, once; from the pod's first trigger if a worker had one."""
        # Not blocking: a second signal may interrupt the first one's arming.
        if not self._lock.acquire(blocking=False):
            return
        try:
            if self._thread is not None:
                return
            now = time.time() if now is None else now
            started_at = _pod_trigger(self._pid) or now
            latest = started_at + self._grace_period - self._safety_margin / 4
            # A trigger that used the whole budget (a long preStop, then SIGTERM) still
            # leaves the supervisor its quarter of the margin.
            self.exit_at = max(latest, now + self._safety_margin / 4)
            self._thread = threading.Thread(
                target=self._run,
                args=(started_at, self.exit_at),
                name="graceshut-supervisor-watchdog",
                daemon=True,
            )
            self._thread.start()
        finally:
            self._lock.release()

    def cancel(self) -> None:
        """Stop a countdown under way (the supervisor is not stopping after all)."""
        self._cancelled.set()

    def _run(self, started_at: float, exit_at: float) -> None:
        if self._cancelled.wait(max(0.0, exit_at - time.time())):
            return
        running = _running(self._workers())
        if running:
            self._log.warning(
                "graceshut: %s still runs %.2fs after the shutdown began (grace period %gs), "
                "and so do workers %s: waiting for them to exit first",
                self._name,
                time.time() - started_at,
                self._grace_period,
                ", ".join(map(str, running)),
            )
        while running:
            if self._cancelled.wait(0.05):
                return
            running = _running(running)
        self._log.error(
            "graceshut: %s still ran %.2fs after the shutdown began (grace period %gs), its "
            "workers gone: ending it with status 0",
            self._name,
            time.time() - started_at,
            self._grace_period,
        )
        # The exit watchdog's flush: every live handler, queued records included.
        flush_logs(timeout=self._safety_margin / 8)
        os._exit(0)


def _pod_trigger(supervisor: int) -> float | None:
    """The start time the workers of *supervisor* recorded for the pod's first trigger."""
    try:
        group = WorkerGroup.of_supervisor(supervisor)
    except (OSError, ValueError):
        return None
    if group is None:
        return None
    found = group.trigger()
    return found[1] if found is not None else None


def _running(pids: Iterable[int]) -> list[int]:
    """The children among *pids* that have not exited.

    ``WNOWAIT``: an exited child stays the supervisor's to reap, and its PID cannot be
    taken by another process while the supervisor still lists it.
    """
    running = []
    for pid in list(pids):
        try:
            exited = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:  # reaped already
            continue
        if exited is None:
            running.append(pid)
    return running
