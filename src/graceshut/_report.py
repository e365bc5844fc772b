"""What a shutdown did: one record per handler, and the run as a whole."""

from __future__ import annotations

import dataclasses
import enum
import os
from typing import Any

from ._phases import Phase


class Outcome(str, enum.Enum):
    """How a handler ended."""

    OK = "ok"
    ERROR = "error"
    TIMEOUT = "timeout"
    SKIPPED = "skipped"
    """Not started: no time was left for it before the deadline."""

    def __str__(self) -> str:
        return self.value


@dataclasses.dataclass(frozen=True)
class HandlerResult:
    """The record of one handler in one run."""

    name: str
    phase: Phase
    outcome: Outcome
    duration: float
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping."""
        return {
            "name": self.name,
            "phase": self.phase.value,
            "outcome": self.outcome.value,
            "duration": round(self.duration, 6),
            "error": self.error,
        }


@dataclasses.dataclass(frozen=True)
class PhaseResult:
    """When one step of the sequence ran, in seconds after the first trigger.

    The steps are the five phases plus ``propagation`` (the delay between announce and
    drain); the ``drain`` step includes the wait for in-flight work.
    """

    name: str
    started: float
    duration: float

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping."""
        return {
            "name": self.name,
            "started": round(self.started, 6),
            "duration": round(self.duration, 6),
        }


@dataclasses.dataclass(frozen=True)
class ShutdownReport:
    """The result of `Coordinator.shutdown`, the same object for every caller.

    Attributes:
        reason: What started the run.
        started_at: Wall-clock time of the first trigger (seconds since the epoch).
        duration: Seconds from the first trigger to the end of the ``report`` phase.
        in_flight_at_start: Requests and tracked work running at the first trigger.
        in_flight_abandoned: Work still running when the drain ran out of time.
        abandoned: What graceshut ended: ``GET /path`` (no query string) for requests,
            ``WEBSOCKET /path``, a tracked job's name; streams cut after ``stream_grace``
            included.
        handlers: One record per handler, in phase order.
        phases: When each step ran, in order.
        pid: The process that ran the sequence.
    """

    reason: str
    started_at: float
    duration: float
    in_flight_at_start: int
    in_flight_abandoned: int
    handlers: tuple[HandlerResult, ...]
    phases: tuple[PhaseResult, ...] = ()
    abandoned: tuple[str, ...] = ()
    pid: int = dataclasses.field(default_factory=os.getpid)

    @property
    def ok(self) -> bool:
        """True when every handler succeeded and no in-flight work was abandoned."""
        return self.in_flight_abandoned == 0 and self.handlers_ok

    @property
    def handlers_ok(self) -> bool:
        """True when every handler's outcome is ``ok``."""
        return all(h.outcome is Outcome.OK for h in self.handlers)

    @property
    def exit_code(self) -> int:
        """The process exit status: 0 when every handler succeeded, else 1.

        Abandoned in-flight work (a long poll still open at the deadline) shows in
        `in_flight_abandoned` and `ok`, but does not fail the exit status: a pod with
        streaming clients would otherwise exit 1 on every rollout.
        """
        return 0 if self.handlers_ok else 1

    def failed(self) -> tuple[HandlerResult, ...]:
        """The handlers whose outcome was not ``ok``."""
        return tuple(h for h in self.handlers if h.outcome is not Outcome.OK)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping: the route answers with it, the logs summarize it."""
        return {
            "ok": self.ok,
            "reason": self.reason,
            "started_at": self.started_at,
            "duration": round(self.duration, 6),
            "in_flight_at_start": self.in_flight_at_start,
            "in_flight_abandoned": self.in_flight_abandoned,
            "abandoned": list(self.abandoned),
            "pid": self.pid,
            "handlers": [h.to_dict() for h in self.handlers],
            "phases": [p.to_dict() for p in self.phases],
        }

    def summary(self) -> str:
        """One line for a log or a termination message."""
        counts: dict[str, int] = {}
        for h in self.handlers:
            counts[h.outcome.value] = counts.get(h.outcome.value, 0) + 1
        parts = ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "no handlers"
        verdict = "clean" if self.ok else "with failures"
        return (
            f"shutdown ({self.reason}) finished {verdict} in {self.duration:.3f}s: {parts}; "
            f"{self.in_flight_at_start} in flight at start, {self.in_flight_abandoned} abandoned"
        )
