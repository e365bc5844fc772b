"""Running a phase's calls at once on the loop's own tasks, on asyncio and trio."""

from __future__ import annotations

import time

import anyio
import pytest

from graceshut import Outcome
from graceshut._core._concurrent import Finished, run_concurrently

pytestmark = pytest.mark.anyio


async def quick() -> None:
    await anyio.sleep(0)


async def hangs() -> None:
    await anyio.sleep_forever()


async def fails() -> None:
    raise ValueError("bad")


async def exits() -> None:
    raise SystemExit(2)


async def test_each_call_is_reported_as_it_ends_with_its_outcome() -> None:
    seen: list[tuple[int, Finished, float]] = []
    now = time.monotonic()

    def on_done(index: int, finished: Finished) -> None:
        seen.append((index, finished, time.monotonic()))

    await run_concurrently(
        [hangs, quick, fails, exits], [now + 0.3, now + 5, now + 5, now + 5], on_done
    )
    returned = time.monotonic()
    by_index = {index: finished for index, finished, _ in seen}
    assert sorted(by_index) == [0, 1, 2, 3], "each call reported once"
    assert len(seen) == 4
    assert by_index[0].outcome is Outcome.TIMEOUT
    assert by_index[0].at == now + 0.3, "a timeout is stamped with its deadline"
    assert by_index[1].outcome is Outcome.OK
    assert by_index[2].outcome is Outcome.ERROR
    assert isinstance(by_index[2].error, ValueError)
    assert by_index[3].outcome is Outcome.ERROR
    assert isinstance(by_index[3].error, SystemExit), "never reaches the event loop"
    order = [index for index, _, _ in seen]
    assert order[-1] == 0, "the others were reported as they ended, before the hung one"
    assert all(now <= f.at <= returned for f in by_index.values())


async def test_cancelling_the_caller_reports_what_still_runs_as_cancelled() -> None:
    seen: dict[int, Finished] = {}
    now = time.monotonic()
    with anyio.move_on_after(0.2):
        await run_concurrently([quick, hangs], [now + 30, now + 30], seen.setdefault)
    assert seen[0].outcome is Outcome.OK
    assert seen[1].outcome is Outcome.ERROR, "cut off by the caller, not by its own timeout"


async def test_no_calls_is_nothing_to_do() -> None:
    def never(_index: int, _finished: Finished) -> None:
        pytest.fail("nothing to report")

    await run_concurrently([], [], never)
