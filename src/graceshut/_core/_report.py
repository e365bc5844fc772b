"""What a shutdown did: one record per handler, and the run as a whole."""

from __future__ import annotations

import dataclasses
import enum
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ._phases import Phase

if TYPE_CHECKING:
    from ._final import FinalFlushResult


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
class FallbackResult:
    """The record of a handler's fallback, which ran because the handler failed.

    Attributes:
        name: The fallback's name.
        outcome: ``ok``, ``error`` or ``timeout``.
        duration: Seconds from the handler's end to the fallback's.
        error: What went wrong, or None.
        detail: What the fallback returned when it returned a mapping (JSON-ready):
            the spill fallbacks say ``spilled``, ``records`` and ``to`` there.
    """

    name: str
    outcome: Outcome
    duration: float
    error: str | None = None
    detail: Mapping[str, Any] | None = None

    def describe(self) -> str:
        """One line: ``spill.file ok: spilled 7 rows to /data/spill/...`` for a spill."""
        text = f"{self.name} {self.outcome.value}"
        if self.error:
            return f"{text}: {self.error}"
        detail = self.detail
        if not detail:
            return text
        if "spilled" in detail and "to" in detail:
            records = detail.get("records", "records")
            return f"{text}: spilled {detail['spilled']} {records} to {detail['to']}"
        return f"{text}: " + ", ".join(f"{key}={value}" for key, value in detail.items())

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping."""
        return {
            "name": self.name,
            "outcome": self.outcome.value,
            "duration": round(self.duration, 6),
            "error": self.error,
            "detail": dict(self.detail) if self.detail is not None else None,
        }


@dataclasses.dataclass(frozen=True)
class HandlerResult:
    """The record of one handler in one run.

    Attributes:
        fallback: How the handler's fallback went, when it had one and it ran (the
            handler failed or timed out); None otherwise. The handler's own outcome
            stays what it was: a rescued failure is still a failure.
    """

    name: str
    phase: Phase
    outcome: Outcome
    duration: float
    error: str | None = None
    fallback: FallbackResult | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping; the ``fallback`` key only when a fallback ran."""
        data: dict[str, Any] = {
            "name": self.name,
            "phase": self.phase.value,
            "outcome": self.outcome.value,
            "duration": round(self.duration, 6),
            "error": self.error,
        }
        if self.fallback is not None:
            data["fallback"] = self.fallback.to_dict()
        return data


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
        propagation: How the propagation delay ended: ``fixed`` (it ran its length),
            ``evidence`` or ``cap`` (``propagation_delay="auto"``), ``budget`` (cut
            for the later phases); None when there was none (its length is the
            ``propagation`` step in `phases`).
        deadline_source: Where the run's deadline came from: ``config`` (the first
            trigger + the grace period - the safety margin) or ``api`` (the pod's
            ``deletionTimestamp``, sooner, from the API server).
        budget: Seconds from the first trigger to the deadline the run used.
        deadline_detail: One line on how that deadline was chosen (and, when the API
            server was asked but not used, why).
        finished: Tracked work (`Coordinator.track` jobs, gRPC calls by method) that
            ended by itself after the first trigger, counted by name.
        tasks: What became of background tasks (a task queue's worker: Celery), by
            outcome (``finished``, ``restored``, ``cancelled``), each as
            ``name[id]``; empty in a web process.
        final_flushes: How each final flush (telemetry sent after the report, such as
            `graceshut.contrib.otel`'s) went: ``ok``, ``error`` or ``abandoned``. They
            do not change `ok` or the exit status: telemetry that could not be sent is
            no failure of the shutdown.
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
    propagation: str | None = None
    deadline_source: str = "config"
    budget: float | None = None
    deadline_detail: str = ""
    finished: Mapping[str, int] = dataclasses.field(default_factory=dict)
    tasks: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    final_flushes: tuple[FinalFlushResult, ...] = ()

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
            "propagation": self.propagation,
            "deadline_source": self.deadline_source,
            "budget": None if self.budget is None else round(self.budget, 3),
            "deadline_detail": self.deadline_detail,
            "finished": dict(self.finished),
            "tasks": {outcome: list(labels) for outcome, labels in self.tasks.items()},
            "final_flushes": [f.to_dict() for f in self.final_flushes],
        }

    def summary(self) -> str:
        """One line for a log or a termination message."""
        counts: dict[str, int] = {}
        for h in self.handlers:
            counts[h.outcome.value] = counts.get(h.outcome.value, 0) + 1
        parts = ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "no handlers"
        fallbacks = [h.fallback for h in self.handlers if h.fallback is not None]
        if fallbacks:
            rescued = sum(1 for f in fallbacks if f.outcome is Outcome.OK)
            parts += f" ({len(fallbacks)} fallback{'s' if len(fallbacks) > 1 else ''} ran, "
            parts += f"{rescued} ok)"
        verdict = "clean" if self.ok else "with failures"
        line = (
            f"shutdown ({self.reason}) finished {verdict} in {self.duration:.3f}s: {parts}; "
            f"{self.in_flight_at_start} in flight at start, {self.in_flight_abandoned} abandoned"
        )
        if self.tasks:
            line += "; tasks: " + ", ".join(
                f"{len(labels)} {outcome}" for outcome, labels in self.tasks.items()
            )
        return line
