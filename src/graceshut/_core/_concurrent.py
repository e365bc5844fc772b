"""Running a phase's handlers at once, each until its own deadline.

This uses the event loop's own tasks rather than an anyio task group with a cancel
scope per handler: a thousand no-op handlers cost about 5 ms as asyncio tasks and 11 ms
as trio tasks, against 26 ms through anyio (``benchmarks/handlers.py``). Handlers still
use anyio freely: anyio works in any task of the running loop.

The rules, the same on both loops:

- a call that passes its deadline is cancelled and counts as timed out, whatever it does
  next (returns, raises from a ``finally``);
- what it does on the cancellation without waiting (a ``finally``, a log line) runs
  before the phase ends; on asyncio, a call that swallows the cancellation and awaits
  on is left behind (on trio the next await raises the cancellation again), so no
  handler holds the sequence past its deadline;
- *on_done* hears of each call as soon as it has ended, so its log line is written then.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from ._loop import running_on_trio
from ._report import Outcome

Call = Callable[[], Awaitable[Any]]

#: Timed-out asyncio tasks that went on running: kept referenced (a task nobody
#: references may be collected mid-flight), and counted by `still_running`.
_left_behind: set[asyncio.Task[Any]] = set()


@dataclasses.dataclass(frozen=True)
class Finished:
    """How one call ended: its outcome, when (monotonic), and what it raised."""

    outcome: Outcome
    at: float
    error: BaseException | None = None


OnDone = Callable[[int, Finished], object]


def still_running() -> int:
    """How many timed-out handlers are still running in the background (asyncio)."""
    return sum(1 for task in _left_behind if not task.done())


async def run_concurrently(
    calls: Sequence[Call], deadlines: Sequence[float], on_done: OnDone
) -> None:
    """Run every call at once, each until its deadline; tell *on_done* how each ended.

    Never raises for a call. If the caller is cancelled, the calls still running are
    cancelled and reported as errors ("cancelled") before the cancellation goes on.
    """
    if not calls:
        return
    if running_on_trio():
        await _run_on_trio(calls, deadlines, on_done)
    else:
        await _run_on_asyncio(calls, deadlines, on_done)


# -- asyncio ---------------------------------------------------------------------------


async def _run_on_asyncio(
    calls: Sequence[Call], deadlines: Sequence[float], on_done: OnDone
) -> None:
    loop = asyncio.get_running_loop()
    reported = [False] * len(calls)

    def report(index: int, finished: Finished) -> None:
        if not reported[index]:
            reported[index] = True
            on_done(index, finished)

    tasks = [loop.create_task(_awaited(call, index, report)) for index, call in enumerate(calls)]
    try:
        await _wait_or_cancel(tasks, deadlines, report)
    except BaseException:
        for index, task in enumerate(tasks):
            if not task.done():
                task.cancel()
                report(index, Finished(Outcome.ERROR, time.monotonic(), asyncio.CancelledError()))
        raise


async def _awaited(call: Call, index: int, report: OnDone) -> None:
    # A task that raises SystemExit or KeyboardInterrupt takes the event loop down with
    # it: every error is reported, none leaves the task but the cancellation.
    try:
        await call()
    except asyncio.CancelledError:
        # Ours at the deadline (already reported as a timeout), or one raised inside
        # the handler, which is an error like any other.
        report(index, Finished(Outcome.ERROR, time.monotonic(), asyncio.CancelledError()))
        raise
    except BaseException as exc:
        report(index, Finished(Outcome.ERROR, time.monotonic(), exc))
    else:
        report(index, Finished(Outcome.OK, time.monotonic()))


async def _wait_or_cancel(
    tasks: Sequence[asyncio.Task[Any]], deadlines: Sequence[float], report: OnDone
) -> None:
    """Wait for *tasks*, cancelling (and reporting) each at its deadline."""
    timed_out: set[int] = set()
    while True:
        now = time.monotonic()
        waiting = [i for i, task in enumerate(tasks) if not task.done() and i not in timed_out]
        expired = [i for i in waiting if deadlines[i] <= now]
        if expired:
            for i in expired:
                timed_out.add(i)
                report(i, Finished(Outcome.TIMEOUT, deadlines[i]))
                tasks[i].cancel()
            # One turn of the loop to act on the cancellation (a `finally`, an `except`
            # that logs); whatever awaits longer is left behind.
            await asyncio.wait([tasks[i] for i in expired], timeout=0)
            _left_behind.update(tasks[i] for i in expired if not tasks[i].done())
            continue
        if not waiting:
            _left_behind.difference_update([t for t in _left_behind if t.done()])
            return
        wake = min(deadlines[i] for i in waiting)
        await asyncio.wait([tasks[i] for i in waiting], timeout=wake - now)


# -- trio ------------------------------------------------------------------------------


async def _run_on_trio(calls: Sequence[Call], deadlines: Sequence[float], on_done: OnDone) -> None:
    import trio  # noqa: PLC0415 - only reached when trio is running

    async def run_one(index: int, call: Call, deadline: float) -> None:
        finished: Finished | None = None
        try:
            with trio.move_on_after(max(0.0, deadline - time.monotonic())) as scope:
                await call()
        except trio.Cancelled:
            # An enclosing scope's, not this handler's timeout: say so, and let it go on.
            on_done(index, Finished(Outcome.ERROR, time.monotonic(), None))
            raise
        except BaseException as exc:  # a SystemExit from a sync handler too
            finished = Finished(Outcome.ERROR, time.monotonic(), exc)
        if scope.cancel_called:  # timed out, whatever it did after (as on asyncio)
            finished = Finished(Outcome.TIMEOUT, deadline)
        on_done(index, finished or Finished(Outcome.OK, time.monotonic()))

    async with trio.open_nursery() as nursery:
        for index, call in enumerate(calls):
            nursery.start_soon(run_one, index, call, deadlines[index])
