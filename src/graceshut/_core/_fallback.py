"""A handler's fallback: what runs when the handler fails or times out.

A fallback shares its handler's deadline rather than getting time of its own, so adding
one never moves a later phase. The handler is therefore cut off a little early: a
quarter of its window, at most `MAX_RESERVE` seconds, is kept for the fallback. That
share is small next to a database's timeout and large next to what a fallback does
(spilling 10,000 rows to a local file took 0.15-0.2 s, ``benchmarks/spill.py``).

The two attempts run one after the other inside the one call that the phase's runner
(`graceshut._core._concurrent`) starts and cuts off at the deadline; `Attempts` records how
each ended, for the report.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from anyio import get_cancelled_exc_class, move_on_after

from ._concurrent import Finished
from ._report import Outcome

MAX_RESERVE = 1.0
"""Seconds of a handler's window kept for its fallback, at most."""

#: Calls the handler (error None) or the fallback (error set) with its own deadline.
Invoke = Callable[[float, "BaseException | None"], Awaitable[object]]


@dataclasses.dataclass
class Attempts:
    """How a handler and its fallback ended, filled in as each ends."""

    handler: Finished | None = None
    fallback_started: float | None = None
    fallback: Finished | None = None
    detail: Mapping[str, Any] | None = None


def handler_deadline(started: float, deadline: float) -> float:
    """When a handler that has a fallback is cut off: early enough to leave it its share."""
    return deadline - min(MAX_RESERVE, max(0.0, deadline - started) / 4)


async def run_with_fallback(invoke: Invoke, deadline: float, attempts: Attempts) -> None:
    """Run the handler until its shortened deadline, then the fallback if it failed.

    Never raises for the handler or the fallback (their outcomes go to *attempts*); a
    cancellation from outside goes on.
    """
    started = time.monotonic()
    own = handler_deadline(started, deadline)
    attempts.handler, _ = await _attempt(lambda: invoke(own, None), own)
    if attempts.handler.outcome is Outcome.OK:
        return
    error = attempts.handler.error
    if attempts.handler.outcome is Outcome.TIMEOUT or error is None:
        error = TimeoutError(f"did not finish within {own - started:.3f}s")
    attempts.fallback_started = time.monotonic()
    failing = error
    attempts.fallback, returned = await _attempt(lambda: invoke(deadline, failing), deadline)
    if isinstance(returned, Mapping):
        attempts.detail = returned


async def _attempt(call: Callable[[], Awaitable[object]], deadline: float) -> tuple[Finished, Any]:
    """Await *call* until *deadline* (monotonic); how it ended, and what it returned."""
    returned: object = None
    failure: BaseException | None = None
    with move_on_after(max(0.0, deadline - time.monotonic())) as scope:
        try:
            returned = await call()
        except get_cancelled_exc_class():
            raise  # ours is caught by the scope; anyone else's goes on
        except BaseException as exc:  # a SystemExit from a sync handler too
            failure = exc
    if scope.cancel_called:  # timed out, whatever it did after (as the phase runner)
        return Finished(Outcome.TIMEOUT, deadline), None
    if failure is not None:
        return Finished(Outcome.ERROR, time.monotonic(), failure), None
    return Finished(Outcome.OK, time.monotonic()), returned
