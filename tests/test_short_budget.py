"""The short-budget rule: the propagation delay and the drain give way before flush and release."""

from __future__ import annotations

import time

import anyio
import anyio.abc
import pytest

from graceshut import Coordinator, Outcome, ShutdownContext

pytestmark = pytest.mark.anyio


async def test_a_short_budget_cuts_the_delay_and_the_drain_not_the_flush() -> None:
    """A hung drain handler and a long delay are cut short before the flush loses any time."""
    # 5.5 s for a 30 s delay, a drain handler that asks 5 s and a flush that needs 2 of
    # its 3 s: sharing in proportion would leave the flush about 1.3 s, and cut it.
    coordinator = Coordinator(
        grace_period=6.0, safety_margin=0.5, propagation_delay=30.0, environ={}
    )
    events: list[str] = []

    @coordinator.on_shutdown(phase="drain", name="consumer", timeout=5.0)
    async def consumer() -> None:
        events.append("drain handler starts")
        await anyio.sleep_forever()

    @coordinator.on_shutdown(phase="flush", name="save", timeout=3.0)
    async def save(ctx: ShutdownContext) -> None:
        events.append("flush starts")
        await anyio.sleep(2.0)
        events.append("flush done")

    async def stuck(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        async with coordinator.track("export"):
            task_status.started()
            await anyio.sleep(60)

    async with anyio.create_task_group() as tg:
        await tg.start(stuck)
        report = await coordinator.shutdown()
        tg.cancel_scope.cancel()

    outcomes = {h.name: h.outcome for h in report.handlers}
    assert outcomes == {"consumer": Outcome.TIMEOUT, "save": Outcome.OK}
    assert events == ["drain handler starts", "flush starts", "flush done"]
    steps = {p.name: p for p in report.phases}
    assert [p.name for p in report.phases] == [
        "announce", "propagation", "drain", "flush", "release", "report"
    ]  # fmt: skip
    # The delay gave way entirely (the drain's 5 s and the flush's 3 s do not fit in
    # 5.5 s), then the drain ended where the flush's 3 s begin.
    assert steps["propagation"].duration < 1.0
    assert report.abandoned == ("export",)
    assert steps["flush"].started >= steps["drain"].started + steps["drain"].duration
    assert report.duration <= 5.5 + 0.5


async def test_with_room_the_drain_handler_keeps_its_time_too() -> None:
    """When the budget covers the drain handler and the flush, the delay alone gives way."""
    coordinator = Coordinator(
        grace_period=6.0, safety_margin=0.5, propagation_delay=30.0, environ={}
    )
    ran: list[str] = []

    @coordinator.on_shutdown(phase="drain", name="consumer", timeout=1.5)
    async def consumer() -> None:
        await anyio.sleep(0.5)
        ran.append("consumer")

    @coordinator.on_shutdown(phase="flush", name="save", timeout=2.0)
    async def save() -> None:
        await anyio.sleep(0.5)
        ran.append("save")

    started = time.monotonic()
    report = await coordinator.shutdown()
    assert ran == ["consumer", "save"]
    assert report.ok
    steps = {p.name: p for p in report.phases}
    # The delay ended where the drain handler's and the flush's time begin: 5.5 - 3.5.
    assert 1.0 < steps["propagation"].duration < 3.0
    assert time.monotonic() - started <= 5.5 + 0.5


async def test_overcommitted_timeouts_give_every_phase_a_share() -> None:
    """When flush and release alone ask for more than the budget, no phase is skipped outright."""
    coordinator = Coordinator(grace_period=2.5, safety_margin=0.5, propagation_delay=5, environ={})
    got: dict[str, float] = {}

    @coordinator.on_shutdown(phase="drain", name="consumer", timeout=2.0)
    async def consumer(ctx: ShutdownContext) -> None:
        got["drain"] = ctx.deadline - time.monotonic()
        await anyio.sleep_forever()

    @coordinator.on_shutdown(phase="flush", name="save", timeout=2.0)
    async def save(ctx: ShutdownContext) -> None:
        got["flush"] = ctx.deadline - time.monotonic()
        await anyio.sleep_forever()

    @coordinator.on_shutdown(phase="release", name="unlock", timeout=2.0)
    async def unlock(ctx: ShutdownContext) -> None:
        got["release"] = ctx.deadline - time.monotonic()

    report = await coordinator.shutdown()
    outcomes = {h.name: h.outcome for h in report.handlers}
    assert outcomes == {"consumer": Outcome.TIMEOUT, "save": Outcome.TIMEOUT, "unlock": Outcome.OK}
    # 2 s for 6 s of asks: about a third each, the release's share kept from the hung flush.
    assert set(got) == {"drain", "flush", "release"}
    assert all(0.2 < share < 1.5 for share in got.values())
    assert report.duration <= 2.0 + 0.5
