"""The drain's wait: until nothing is in flight, ending what still runs on time.

The core knows the count and the tracked jobs; what serves requests (the ASGI
middleware) registers an ender with `Coordinator.on_deadline`, which finds and ends its
own requests and streams. The wait itself parks on the count's event, so the drain
ends the moment the last piece of work does, without polling.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Protocol

import anyio

from ._tracker import InFlight


class Ender(Protocol):
    """Ends what runs now (only streams, or everything) and returns their labels."""

    def __call__(self, state: InFlight, *, streams_only: bool) -> list[str]: ...


#: Seconds kept at the end of the drain for what was ended to unwind.
UNWIND = 0.5


async def drain(
    state: InFlight, *, streams_at: float, end: float, enders: Iterable[Ender]
) -> list[str]:
    """Wait until nothing is in flight, ending streams at *streams_at* and all at *end*.

    Everything is ended a little before *end* (`UNWIND`), so that it has unwound (its
    ``finally`` run, its count given back) when the drain step is over.

    Returns:
        The labels of what was ended, in the order it was ended.
    """
    span = max(0.0, end - time.monotonic())
    cut_at = end - min(UNWIND, span / 5)
    ended: list[str] = []
    if streams_at < cut_at:
        await _wait_idle(state, streams_at)
        if state.count:
            for ender in enders:
                ended += ender(state, streams_only=True)
    await _wait_idle(state, cut_at)
    if state.count:
        for ender in enders:
            ended += ender(state, streams_only=False)
        ended += _end_jobs(state)
        await _wait_idle(state, end)
    return ended


async def _wait_idle(state: InFlight, until: float) -> None:
    with anyio.move_on_after(max(0.0, until - time.monotonic())):
        await state.wait_idle()


def _end_jobs(state: InFlight) -> list[str]:
    """Cancel the tracked jobs (`Coordinator.track`, `Coordinator.spawn`)."""
    labels = []
    for scope, name in list(state.jobs.items()):
        scope.cancel()
        labels.append(name)
    return labels
