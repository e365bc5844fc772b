"""Final flushes: telemetry sent after the report, inside the deadline, never past it.

Tracing and metrics SDKs hold the last spans and numbers of a pod in memory until they
are flushed, and the flush is worth most after the report, so that the shutdown's own
records go with it. The SDKs cannot be trusted to keep a timeout (OpenTelemetry's
``shutdown()`` joins its export thread with none), so each flush runs on a daemon thread
of its own and the sequence waits for it only until the deadline: one still running
then is abandoned (left running, never joined), logged and marked in the report, and the
exit is not delayed by it.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import anyio

if TYPE_CHECKING:
    from ._report import ShutdownReport

logger = logging.getLogger("graceshut")

FinalFlush = Callable[["ShutdownReport", float], object]
"""Called with the report and the seconds it may take; its return value is ignored."""

#: The least time a flush gets when the sequence used its whole budget: in-memory
#: exporters and flushes with nothing pending end in milliseconds.
_AT_LEAST = 0.1


@dataclasses.dataclass(frozen=True)
class FinalFlushResult:
    """How one final flush went.

    Attributes:
        name: The flush's name (``otel.traces``...).
        outcome: ``ok``, ``error``, or ``abandoned`` (still running at the deadline,
            left behind on a daemon thread).
        duration: Seconds until it ended, or until it was abandoned.
        error: What went wrong, or None.
    """

    name: str
    outcome: str
    duration: float
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping."""
        return {
            "name": self.name,
            "outcome": self.outcome,
            "duration": round(self.duration, 6),
            "error": self.error,
        }


class _Call:
    def __init__(self, name: str, func: FinalFlush) -> None:
        self.name = name
        self.func = func
        self.ended: float | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=f"graceshut-{name}", daemon=True)
        self._args: tuple[ShutdownReport, float] | None = None

    def start(self, report: ShutdownReport, timeout: float) -> None:
        self._args = (report, timeout)
        self.thread.start()

    def _run(self) -> None:
        assert self._args is not None  # noqa: S101 - set before the thread starts
        try:
            self.func(*self._args)
        except BaseException as exc:  # reported, never raised on a thread nobody joins
            self.error = exc
        finally:
            self.ended = time.monotonic()


async def run_final_flushes(
    flushes: Sequence[tuple[str, FinalFlush]], report: ShutdownReport, deadline: float
) -> tuple[FinalFlushResult, ...]:
    """Run every flush at once on daemon threads; wait for them until *deadline*."""
    if not flushes:
        return ()
    started = time.monotonic()
    end = max(deadline, started + _AT_LEAST)
    calls = [_Call(name, func) for name, func in flushes]
    for call in calls:
        call.start(report, end - started)
    # Polled rather than joined: a join would hold a worker thread past the deadline,
    # and plain threads cannot set an anyio event on either loop without a token.
    while any(call.ended is None for call in calls) and time.monotonic() < end:  # noqa: ASYNC110
        await anyio.sleep(0.005)
    return tuple(_result(call, started) for call in calls)


def _result(call: _Call, started: float) -> FinalFlushResult:
    fields: dict[str, Any] = {"phase": "report", "handler": call.name}
    if call.ended is None:
        duration = time.monotonic() - started
        logger.warning(
            "final flush %s abandoned after %.3fs: still running at the deadline, left "
            "behind so that the exit is not delayed",
            call.name,
            duration,
            extra={**fields, "outcome": "abandoned", "duration": duration},
        )
        return FinalFlushResult(call.name, "abandoned", duration, "still running at the deadline")
    duration = call.ended - started
    if call.error is not None:
        error = f"{type(call.error).__name__}: {call.error}"
        logger.warning(
            "final flush %s failed after %.3fs: %s",
            call.name,
            duration,
            error,
            extra={**fields, "outcome": "error", "duration": duration},
        )
        return FinalFlushResult(call.name, "error", duration, error)
    logger.info(
        "final flush %s: ok in %.3fs",
        call.name,
        duration,
        extra={**fields, "outcome": "ok", "duration": duration},
    )
    return FinalFlushResult(call.name, "ok", duration)
