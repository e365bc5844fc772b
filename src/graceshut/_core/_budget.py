"""The time of one run: its deadline, when each step must end, and what each took."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping

from ._phases import PHASES, Phase
from ._propagation import DelayEnd
from ._report import HandlerResult, PhaseResult


class Run:
    """The bookkeeping of one run of the sequence."""

    def __init__(self, reason: str, start: float, budget: float) -> None:
        self.reason = reason
        self.start = start
        self.deadline = start + budget
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
        try:
            yield
        finally:
            ended = time.monotonic()
            self.phases.append(PhaseResult(name, began - self.start, ended - began))


def reserved_after(needs: Mapping[Phase, float]) -> dict[Phase, float]:
    """For each phase, the seconds that the phases after it keep for themselves."""
    reserved: dict[Phase, float] = {}
    total = 0.0
    for phase in reversed(PHASES):
        reserved[phase] = total
        total += needs[phase]
    return reserved


def step_end(deadline: float, need: float, reserved: float) -> float:
    """When a step must end so that the steps after it keep their time (*reserved*).

    Each later phase keeps the longest timeout among its handlers. When what is left
    cannot cover this step and the later ones, all of them shrink in proportion, so a
    slow early phase never starves a later one and no phase is skipped outright.
    """
    remaining = deadline - time.monotonic()
    wanted = need + reserved
    if wanted <= remaining or wanted <= 0:
        return deadline - reserved
    return deadline - reserved * max(0.0, remaining) / wanted


def elastic_end(deadline: float, want: float, reserved: float) -> float:
    """When the propagation delay must end: cut first, before the handlers' time.

    Only when the handlers' timeouts alone exceed what is left does it get a share in
    proportion to its length, like the phases, rather than nothing at all.
    """
    remaining = deadline - time.monotonic()
    if reserved <= remaining:
        return deadline - reserved
    return step_end(deadline, want, reserved)
