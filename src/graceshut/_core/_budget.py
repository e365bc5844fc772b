"""The time of one run: its deadline, when each step must end, and what each took."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator, Mapping

from ._phases import PHASES, Phase
from ._propagation import DelayEnd
from ._report import HandlerResult, PhaseResult

ENV_PROGRESS_FILE = "GRACESHUT_PROGRESS_FILE"
"""A file the run appends a JSON line to as each step begins and ends: what a SIGKILL
cut off can be told from it afterwards (``graceshut simulate`` sets it)."""


class Run:
    """The bookkeeping of one run of the sequence."""

    def __init__(self, reason: str, start: float, budget: float) -> None:
        self.reason = reason
        self.start = start
        self.deadline = start + budget
        self.deadline_source = "config"
        """Where the deadline came from: ``config`` or ``api`` (the pod's deletion)."""
        self.deadline_detail = ""
        """One line on how the deadline was chosen, for the report."""
        self.progress: str | None = None
        """Where to note the steps as they go (`ENV_PROGRESS_FILE`), if anywhere."""
        self.handlers: list[HandlerResult] = []
        self.phases: list[PhaseResult] = []
        self.abandoned = 0
        self.ended: list[str] = []
        self.delay_end: DelayEnd | None = None
        """How the propagation delay ended; None when there was none."""

    def remaining(self) -> float:
        """Seconds until the deadline of the whole sequence."""
        return self.deadline - time.monotonic()

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Record when the step *name* started and how long it took."""
        began = time.monotonic()
        self.note("begin", step=name)
        try:
            yield
        finally:
            ended = time.monotonic()
            self.phases.append(PhaseResult(name, began - self.start, ended - began))
            self.note("end", step=name)

    def note(self, event: str, **fields: object) -> None:
        """Append *event* to the progress file, when there is one; never fails the run.

        One ``write`` of one line on a file opened for appending: a SIGKILL leaves
        whole lines behind.
        """
        if self.progress is None:
            return
        record = {
            "event": event,
            "t": round(time.monotonic() - self.start, 3),
            "wall": round(time.time(), 3),
            **fields,
        }
        line = (json.dumps(record) + "\n").encode()
        with contextlib.suppress(OSError):
            fd = os.open(self.progress, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)


def reserved_after(needs: Mapping[Phase, float]) -> dict[Phase, float]:
    """For each phase, the seconds that the phases after it keep for themselves."""
    reserved: dict[Phase, float] = {}
    total = 0.0
    for phase in reversed(PHASES):
        reserved[phase] = total
        total += needs[phase]
    return reserved


def step_end(deadline: float, need: float, reserved: float) -> float:
    """When a firm step (announce, flush, release, report) must end.

    *reserved* is what the firm steps after it keep. When what is left cannot cover
    this step and those, all of them shrink in proportion, so a slow early phase never
    starves a later one and no phase is skipped outright.
    """
    remaining = deadline - time.monotonic()
    wanted = need + reserved
    if wanted <= remaining or wanted <= 0:
        return deadline - reserved
    return deadline - reserved * max(0.0, remaining) / wanted


def elastic_end(deadline: float, want: float, reserved: float, firm: float) -> float:
    """When an elastic step (the propagation delay, the drain) must end.

    The short-budget rule: the elastic steps give way before the firm phases (announce,
    flush, release, report) lose any of their time. *reserved* is all the time kept
    after this step, *firm* the firm phases' part of it; the propagation delay gives way
    to the drain's handlers too. While what is left covers the firm phases, the step
    ends where *reserved* begins, at once when that is already past. Only when the
    firm phases alone ask for more than what is left (their timeouts overcommit the
    budget) does every step share in proportion (`step_end`), so that no phase is
    skipped outright.
    """
    if firm <= deadline - time.monotonic():
        return min(deadline, deadline - reserved)
    return step_end(deadline, want, reserved)
