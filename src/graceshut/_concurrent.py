"""Running a phase's handlers at once, each until its own deadline.

This uses the event loop's own tasks rather than an anyio task group with a cancel
scope per handler: a thousand no-op handlers cost about 5 ms as asyncio tasks and 11 ms
as trio tasks, against 26 ms through anyio (``benchmarks/handlers.py``). Handlers still
use anyio freely: anyio works in any task of the running loop.

The rule, the same on both loops: a call that passes its deadline is cancelled and
counts as timed out. What it does on the cancellation without waiting (a ``finally``, a
log line) runs before the sequence goes on; on asyncio, a call that swallows the
cancellation and awaits on is abandoned, so that no handler holds the sequence past its
deadline (on trio the next await raises the cancellation again).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

from ._loop import running_on_trio
from ._report import Outcome

Call = Callable[[], Awaitable[Any]]


@dataclasses.dataclass(frozen=True)
class Finished:
    """How one call ended: its outcome, when (monotonic), and what it raised."""

    outcome: Outcome
    at: float
    error: BaseException | None = None


async def run_concurrently(calls: Sequence[Call], deadlines: Sequence[float]) -> list[Finished]:
    """Run every call at once; return, in order, how each ended. Never raises for them."""
    if not calls:
        return []
    if running_on_trio():
        return await _run_on_trio(calls, deadlines)
    return await _run_on_asyncio(calls, deadlines)


async def _run_on_asyncio(calls: Sequence[Call], deadlines: Sequence[float]) -> list[Finished]:
    loop = asyncio.get_running_loop()
    finished_at = [0.0] * len(calls)
    tasks: list[asyncio.Task[BaseException | None]] = []
    for index, call in enumerate(calls):
        task = loop.create_task(_awaited(call))
        task.add_done_callback(_stamp(finished_at, index))
        tasks.append(task)
    try:
        timed_out = await _wait_or_cancel(tasks, deadlines)
    except BaseException:
        for task in tasks:
            task.cancel()
        raise
    results = []
    for index, task in enumerate(tasks):
        if index in timed_out:
            results.append(Finished(Outcome.TIMEOUT, deadlines[index]))
        elif task.cancelled():
            # Not our timeout: a cancellation raised inside the handler.
            results.append(Finished(Outcome.ERROR, finished_at[index], asyncio.CancelledError()))
        elif (error := task.result()) is not None:
            results.append(Finished(Outcome.ERROR, finished_at[index], error))
        else:
            results.append(Finished(Outcome.OK, finished_at[index]))
    return results


async def _wait_or_cancel(
    tasks: Sequence[asyncio.Task[Any]], deadlines: Sequence[float]
) -> set[int]:
    """Wait for *tasks*, cancelling each at its deadline; return the ones cancelled."""
    timed_out: set[int] = set()
    while True:
        now = time.monotonic()
        waiting = [i for i, task in enumerate(tasks) if not task.done() and i not in timed_out]
        expired = [i for i in waiting if deadlines[i] <= now]
        if expired:
            timed_out.update(expired)
            for i in expired:
                tasks[i].cancel()
            # One turn of the loop to act on the cancellation (a `finally`, an `except`
            # that logs); whatever awaits longer is abandoned.
            await asyncio.wait([tasks[i] for i in expired], timeout=0)
            continue
        if not waiting:
            return timed_out
        wake = min(deadlines[i] for i in waiting)
        await asyncio.wait([tasks[i] for i in waiting], timeout=wake - now)


async def _awaited(call: Call) -> BaseException | None:
    # A task that raises SystemExit or KeyboardInterrupt takes the event loop down with
    # it: hand every error back as a value instead.
    try:
        await call()
    except asyncio.CancelledError:
        raise
    except BaseException as exc:
        return exc
    return None


def _stamp(finished_at: list[float], index: int) -> Callable[[asyncio.Task[Any]], None]:
    def stamp(_: asyncio.Task[Any]) -> None:
        finished_at[index] = time.monotonic()

    return stamp


async def _run_on_trio(calls: Sequence[Call], deadlines: Sequence[float]) -> list[Finished]:
    import trio  # noqa: PLC0415 - only reached when trio is running

    results: list[Finished | None] = [None] * len(calls)

    async def run_one(index: int, call: Call, deadline: float) -> None:
        try:
            with trio.move_on_after(max(0.0, deadline - time.monotonic())) as scope:
                await call()
        except trio.Cancelled:
            raise  # an enclosing scope's: not this handler's to record
        except BaseException as exc:  # a SystemExit from a sync handler too
            results[index] = Finished(Outcome.ERROR, time.monotonic(), exc)
            return
        if scope.cancelled_caught:
            results[index] = Finished(Outcome.TIMEOUT, deadline)
        else:
            results[index] = Finished(Outcome.OK, time.monotonic())

    async with trio.open_nursery() as nursery:
        for index, call in enumerate(calls):
            nursery.start_soon(run_one, index, call, deadlines[index])
    return cast("list[Finished]", results)  # every task set its slot or the nursery raised
