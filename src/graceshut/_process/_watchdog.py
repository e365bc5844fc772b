"""The exit watchdog: a process that always ends inside the grace period.

The sequence keeps its deadline, but the process does not end with it: after the report
come the server's own shutdown, then the joining of non-daemon threads, then the
``atexit`` hooks, where tracing SDKs, error reporters and log shippers flush. Any of them
can hang: OpenTelemetry's ``shutdown()`` joins its export thread with no timeout, and
with a collector that accepts but never answers a uvicorn app exited 30.9 s after
SIGTERM with a 6 s grace period (opentelemetry-sdk 1.45). The kubelet then SIGKILLs it:
status 137 instead of 0, and whatever the hook held is lost.

Once the process is on its way out (graceshut handed the signal on after its sequence),
a daemon thread waits until ``grace period - safety margin / 2`` after the first
trigger, the exit work's share of the margin. If the process still runs then, it logs
what was still running (the server's shutdown, which non-daemon threads, which
``atexit`` hook), runs the forced-exit hooks (the termination message), flushes the log
handlers and ends the process with the report's exit status through ``os._exit``.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import CodeType, FrameType
from typing import TYPE_CHECKING

from .._core._logs import flush_logs

if TYPE_CHECKING:
    from .._core._config import Settings
    from .._core._report import ShutdownReport

logger = logging.getLogger("graceshut")


@dataclasses.dataclass(frozen=True)
class ForcedExit:
    """What the watchdog tells its hooks before it ends the process.

    Attributes:
        report: The report of the run; its ``exit_code`` is the status.
        still_running: What kept the process from exiting, in words.
        after: Seconds from the first trigger to the forced exit.
    """

    report: ShutdownReport
    still_running: str
    after: float


ForcedExitHook = Callable[[ForcedExit], object]

_hooks: list[ForcedExitHook] = []
_lock = threading.Lock()
_armed: _Watchdog | None = None
_in_atexit = False
_suppressed = 0


def on_forced_exit(hook: ForcedExitHook) -> ForcedExitHook:
    """Call *hook* before the watchdog ends the process (process-wide, quick work only)."""
    if hook not in _hooks:
        _hooks.append(hook)
    return hook


def remove_forced_exit_hook(hook: ForcedExitHook) -> None:
    """Stop calling *hook*; nothing if it was not there."""
    if hook in _hooks:
        _hooks.remove(hook)


def exit_time(report: ShutdownReport, settings: Settings) -> float:
    """Seconds from now until the watchdog's moment for *report* (may be negative)."""
    at = report.started_at + settings.grace_period - settings.safety_margin / 2
    return at - time.time()


def arm(report: ShutdownReport, settings: Settings) -> None:
    """Start the watchdog for *report*, once per process; the process is about to exit.

    If its moment has passed already (a preStop call that used the whole budget, then
    SIGTERM), the exit work still gets half the safety margin.
    """
    global _armed  # noqa: PLW0603 - one process, one exit
    # Not blocking: a signal handler may call this while the main thread, which it
    # interrupted, holds the lock; that call is already arming the watchdog.
    if not _lock.acquire(blocking=False):
        return
    try:
        if _armed is not None or _suppressed:
            return
        delay = max(exit_time(report, settings), settings.safety_margin / 2)
        _armed = _Watchdog(report, delay, flush_for=settings.safety_margin * 0.4)
    finally:
        _lock.release()
    # Registered now, so it runs before the exit functions registered earlier (LIFO):
    # from here on, what runs at exit is an atexit hook.
    atexit.register(_mark_atexit)
    _armed.start()


@contextlib.contextmanager
def suppressed() -> Iterator[None]:
    """No watchdog inside the block: a test harness whose "server" never exits."""
    global _suppressed  # noqa: PLW0603
    with _lock:
        _suppressed += 1
    try:
        yield
    finally:
        with _lock:
            _suppressed -= 1


def armed() -> bool:
    """Whether the watchdog waits for this process's exit."""
    return _armed is not None


def disarm() -> None:
    """Stop a watchdog that is waiting; for tests."""
    global _armed
    with _lock:
        watchdog, _armed = _armed, None
    if watchdog is not None:
        watchdog.cancel()
        atexit.unregister(_mark_atexit)


def _mark_atexit() -> None:
    global _in_atexit  # noqa: PLW0603
    _in_atexit = True


class _Watchdog:
    def __init__(self, report: ShutdownReport, delay: float, *, flush_for: float) -> None:
        self.report = report
        self._delay = delay
        self._flush_for = flush_for
        self._cancelled = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="graceshut-exit-watchdog", daemon=True
        )

    def start(self) -> None:
        logger.debug(
            "exit watchdog armed: the process ends in %.2fs at the latest",
            self._delay,
            extra={"remaining": self._delay},
        )
        self._thread.start()

    def cancel(self) -> None:
        self._cancelled.set()

    def _run(self) -> None:
        if self._cancelled.wait(self._delay):
            return
        report = self.report
        what = still_running()
        after = time.time() - report.started_at
        logger.error(
            "exit forced %.2fs after the shutdown began, with status %d: still running: %s",
            after,
            report.exit_code,
            what,
            extra={
                "reason": report.reason,
                "outcome": "forced",
                "still_running": what,
                "exit_status": report.exit_code,
                "duration": after,
            },
        )
        forced = ForcedExit(report, what, after)
        for hook in _hooks:
            try:
                hook(forced)
            except Exception:
                logger.exception("forced-exit hook %r failed", hook)
        # On a thread of its own: the main thread may hold a handler's lock (stuck in a
        # network handler's emit), and then a flush from here would wait forever.
        flusher = threading.Thread(target=flush_logs, args=(self._flush_for,), daemon=True)
        flusher.start()
        flusher.join(self._flush_for + 0.05)
        os._exit(report.exit_code)


def still_running() -> str:
    """What the main thread does now: the server's shutdown, threads, or an atexit hook."""
    main = threading.main_thread()
    frame = sys._current_frames().get(main.ident or -1)  # noqa: SLF001 - the only way to look
    if frame is None:
        return "the interpreter's own finalization"
    stack = _stack(frame)
    if threading._shutdown.__code__ in {f.f_code for f in stack}:  # type: ignore[attr-defined]  # noqa: SLF001
        names = [
            t.name for t in threading.enumerate() if t is not main and not t.daemon and t.is_alive()
        ]
        return "non-daemon threads: " + (", ".join(names) or "(ending)")
    where = _where(frame)
    if _in_atexit:
        return f"atexit hook {_name(stack[-1].f_code)}, in {where}"
    return f"the server's shutdown, in {where}"


def _stack(frame: FrameType) -> list[FrameType]:
    """*frame* and its callers, innermost first."""
    stack: list[FrameType] = []
    current: FrameType | None = frame
    while current is not None:
        stack.append(current)
        current = current.f_back
    return stack


def _where(frame: FrameType) -> str:
    return f"{_name(frame.f_code)} ({Path(frame.f_code.co_filename).name}:{frame.f_lineno})"


def _name(code: CodeType) -> str:
    return str(getattr(code, "co_qualname", code.co_name))
