"""Handler fallbacks: run when the handler fails or times out, within the same deadline."""

from __future__ import annotations

import json
import logging
import threading

import anyio
import pytest

from graceshut import Coordinator, Outcome, ShutdownContext
from graceshut._core._fallback import MAX_RESERVE, handler_deadline
from graceshut.contrib.termination import render_termination_message

pytestmark = pytest.mark.anyio


def fast() -> Coordinator:
    return Coordinator(grace_period=10, safety_margin=1, propagation_delay=0, environ={})


async def test_a_failing_handler_hands_its_error_and_time_to_the_fallback() -> None:
    """The fallback gets the handler's exception in ctx.error and time left; it shows beside."""
    coordinator = fast()
    seen: list[tuple[BaseException | None, float]] = []

    async def spill(ctx: ShutdownContext) -> dict[str, object]:
        seen.append((ctx.error, ctx.remaining()))
        return {"spilled": 3, "records": "rows", "to": "/spill/x.jsonl"}

    @coordinator.on_shutdown("flush", timeout=2, name="flush-db", fallback=spill)
    async def flush() -> None:
        raise ConnectionRefusedError("db down")

    report = await coordinator.shutdown()

    (result,) = report.handlers
    assert result.outcome is Outcome.ERROR
    assert result.error == "ConnectionRefusedError: db down"
    assert result.fallback is not None
    assert result.fallback.outcome is Outcome.OK
    assert result.fallback.detail == {"spilled": 3, "records": "rows", "to": "/spill/x.jsonl"}
    ((error, remaining),) = seen
    assert isinstance(error, ConnectionRefusedError)
    assert 0 < remaining <= 2.0, "within the handler's own 2 s, not the run's 9 s"
    data = json.loads(json.dumps(report.to_dict()))
    assert data["handlers"][0]["fallback"]["detail"]["spilled"] == 3
    assert "1 fallback ran, 1 ok" in report.summary()
    assert not report.ok  # rescued, but the handler's own job was not done


async def test_a_timed_out_handler_leaves_its_fallback_the_reserved_share() -> None:
    """A hung sync handler is cut off early; the sync fallback gets a TimeoutError and time."""
    coordinator = fast()
    release = threading.Event()
    hang_ended = threading.Event()
    seen: list[tuple[type[BaseException], float]] = []

    def fallback(ctx: ShutdownContext) -> None:
        assert ctx.error is not None
        seen.append((type(ctx.error), ctx.remaining()))

    def hang() -> None:
        release.wait(10)
        hang_ended.set()

    coordinator.add_handler(hang, phase="flush", timeout=2, name="hang", fallback=fallback)
    try:
        report = await coordinator.shutdown()
        assert not hang_ended.is_set(), "the run did not wait for the hung thread"
    finally:
        release.set()

    (result,) = report.handlers
    assert result.outcome is Outcome.TIMEOUT
    # Cut at 2 s less a quarter (not before), so that the fallback has the rest.
    assert 1.5 - 0.05 <= result.duration < 2.0
    assert result.fallback is not None
    assert result.fallback.outcome is Outcome.OK
    ((kind, remaining),) = seen
    assert kind is TimeoutError
    assert 0 < remaining <= 0.5, "the fallback ran within the quarter kept for it"


async def test_a_failing_fallback_is_recorded_and_never_blocks_other_handlers() -> None:
    """Fallback errors and hangs are recorded; siblings and later phases run on time."""
    coordinator = fast()
    ran: list[str] = []

    async def broken(ctx: ShutdownContext) -> None:
        raise OSError("volume gone")

    async def stuck(ctx: ShutdownContext) -> None:
        await anyio.sleep(30)
        ran.append("stuck fallback ended")  # had the run waited 30 s for it

    async def fail() -> None:
        raise RuntimeError("boom")

    coordinator.add_handler(fail, phase="flush", timeout=1, name="a", fallback=broken)
    coordinator.add_handler(fail, phase="flush", timeout=1, name="b", fallback=stuck)

    @coordinator.on_shutdown("flush", timeout=1, name="sibling")
    async def sibling() -> None:
        ran.append("sibling")

    @coordinator.on_shutdown("release", timeout=1, name="later")
    async def later() -> None:
        ran.append("later")

    report = await coordinator.shutdown()

    assert ran == ["sibling", "later"]
    by_name = {h.name: h for h in report.handlers}
    assert by_name["a"].fallback is not None
    assert by_name["a"].fallback.outcome is Outcome.ERROR
    assert by_name["a"].fallback.error == "OSError: volume gone"
    assert by_name["b"].fallback is not None
    assert by_name["b"].fallback.outcome is Outcome.TIMEOUT
    assert "fallback" not in by_name["sibling"].to_dict()


async def test_a_handler_that_succeeds_does_not_run_its_fallback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No failure, no fallback: the report's record has no fallback key, nothing is logged."""
    coordinator = fast()
    called: list[int] = []
    coordinator.add_handler(lambda: None, name="fine", fallback=lambda _ctx: called.append(1))
    with caplog.at_level(logging.INFO, "graceshut"):
        report = await coordinator.shutdown()
    assert report.ok
    assert called == []
    assert report.handlers[0].fallback is None
    assert "fallback" not in report.handlers[0].to_dict()
    assert not [r for r in caplog.records if "fallback" in r.getMessage()]


async def test_fallback_outcome_is_logged_and_in_the_termination_message(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The log line of the fallback carries its fields; the termination message names it."""
    coordinator = fast()

    def spill(ctx: ShutdownContext) -> dict[str, object]:
        return {"spilled": 7, "records": "entries", "to": "/data/spill/cache.jsonl"}

    spill.name = "spill.file"  # type: ignore[attr-defined]

    def fail() -> None:
        raise ConnectionError("redis down")

    coordinator.add_handler(fail, name="cache", fallback=spill)
    with caplog.at_level(logging.INFO, "graceshut"):
        report = await coordinator.shutdown()

    (line,) = [r for r in caplog.records if "fallback spill.file ok" in r.getMessage()]
    assert line.__dict__["fallback"] == "spill.file"
    assert line.__dict__["detail"]["spilled"] == 7
    message = render_termination_message(report)
    assert "fallback spill.file ok: spilled 7 entries to /data/spill/cache.jsonl" in message


def test_bad_fallbacks_are_refused_at_registration() -> None:
    """A fallback that is not callable or takes two arguments fails at registration."""
    coordinator = fast()
    with pytest.raises(TypeError, match="fallback must be callable"):
        coordinator.add_handler(lambda: None, name="x", fallback="spill")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must take no argument or one"):
        coordinator.add_handler(lambda: None, name="y", fallback=lambda _a, _b: None)


def test_the_fallback_share_is_a_quarter_at_most_one_second() -> None:
    """A 2 s window keeps 0.5 s for the fallback, a 30 s window keeps MAX_RESERVE."""
    assert handler_deadline(0.0, 2.0) == pytest.approx(1.5)
    assert handler_deadline(0.0, 30.0) == pytest.approx(30.0 - MAX_RESERVE)
