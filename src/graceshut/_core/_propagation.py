"""The propagation delay: a fixed wait, or one that ends when traffic has visibly stopped.

With ``propagation_delay="auto"`` the delay ends early only on evidence that every
router stopped sending, and never before ``propagation_floor``:

- before the trigger the pod was busy: requests came fast enough that the quiet window
  spans `EVIDENCE_GAPS` mean gaps between them (counted per request, not per
  connection: ingress controllers keep pools);
- since the trigger, no new request came for the whole quiet window. Requests on
  connections opened before the trigger are not new routing: each was told to close.

If a router still sent at the pod's old rate, a silence that long would have a chance
of about e^-10 (0.005 %). Without that evidence (an idle pod, a trickle, no source of
evidence such as a worker pod) the delay runs to ``propagation_cap``: silence at low
traffic proves nothing. Either way the delay never eats the time later phases keep
(`_budget.elastic_end`).
"""

from __future__ import annotations

import enum
import time
from typing import Protocol

import anyio

from ._config import Settings

#: Mean gaps between requests that the quiet window must span to count as evidence.
EVIDENCE_GAPS = 10.0


class DelayEnd(str, enum.Enum):
    """How the propagation delay ended."""

    FIXED = "fixed"
    """A fixed delay ran its length."""
    EVIDENCE = "evidence"
    """``auto``: the pod was busy, and no new request came for the quiet window."""
    CAP = "cap"
    """``auto``: no evidence before the cap."""
    BUDGET = "budget"
    """The delay was cut so that the later phases keep their time."""

    def __str__(self) -> str:
        return self.value


class Evidence(Protocol):
    """What the edge knows of the traffic: the rate before the trigger, arrivals since."""

    def triggered(self) -> None:
        """Note the trigger: measure the rate before it, and the connections open at it.

        Called by the first trigger before readiness fails, from any thread.
        """

    def rate_before(self) -> float:
        """Requests per second over the last stretch before the trigger."""

    def last_arrival(self) -> float | None:
        """`time.monotonic` of the last new request since the trigger, or None."""

    def arrived(self, client: object, server: object) -> None:
        """A request after the trigger, from ASGI's ``client`` to its ``server``."""

    def reset(self) -> None:
        """Forget a run (`Coordinator.forget_run`)."""


async def wait_propagation(
    settings: Settings, start: float, end: float, evidence: Evidence | None
) -> DelayEnd:
    """Serve through the delay that started at *start*, never past *end*; how it ended.

    *end* is where the budget cuts the delay (`_budget.elastic_end`).
    """
    if not settings.propagation_auto:
        until = start + settings.propagation_delay
        await _sleep_until(min(until, end))
        return DelayEnd.FIXED if until <= end else DelayEnd.BUDGET
    cap_at = start + settings.propagation_delay
    last = min(cap_at, end)
    over = DelayEnd.CAP if cap_at <= end else DelayEnd.BUDGET
    if evidence is None:
        await _sleep_until(last)
        return over
    quiet = settings.quiet_window
    if evidence.rate_before() * quiet < EVIDENCE_GAPS:
        await _sleep_until(last)
        return over
    floor_at = start + settings.propagation_floor
    while True:
        arrival = evidence.last_arrival()
        quiet_at = max(floor_at, (start if arrival is None else arrival) + quiet)
        if quiet_at >= last:
            await _sleep_until(last)
            return over
        if time.monotonic() >= quiet_at:
            return DelayEnd.EVIDENCE
        await _sleep_until(quiet_at)


async def _sleep_until(when: float) -> None:
    delay = when - time.monotonic()
    if delay > 0:
        await anyio.sleep(delay)
