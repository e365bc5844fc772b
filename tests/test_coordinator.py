from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable

import anyio
import anyio.abc
import pytest

import graceshut
from graceshut import Coordinator, Outcome, Phase, ShutdownContext

pytestmark = pytest.mark.anyio


def fast(**kwargs: float) -> Coordinator:
    settings = {"grace_period": 10.0, "safety_margin": 1.0, "propagation_delay": 0.0}
    settings.update(kwargs)
    return Coordinator(**settings, environ={})


async def test_phases_run_in_order_and_handlers_of_a_phase_concurrently() -> None:
    """Phases run announce→report; handlers within one phase overlap in time."""
    coordinator = fast()
    events: list[str] = []

    for phase in reversed(graceshut.Phase):

        @coordinator.on_shutdown(phase, name=f"{phase}-a")
        async def first(ctx: ShutdownContext) -> None:
            events.append(f"{ctx.phase}-a-start")
            await anyio.sleep(0.05)
            events.append(f"{ctx.phase}-a-end")

        @coordinator.on_shutdown(phase, name=f"{phase}-b")
        async def second(ctx: ShutdownContext) -> None:
            events.append(f"{ctx.phase}-b-start")
            await anyio.sleep(0.05)
            events.append(f"{ctx.phase}-b-end")

    report = await coordinator.shutdown()
    assert report.ok
    phases_seen = [e.split("-")[0] for e in events]
    assert phases_seen == sorted(phases_seen, key=[p.value for p in Phase].index)
    for phase in Phase:
        window = [e for e in events if e.startswith(phase.value)]
        # both started before either ended: they ran concurrently
        assert {window[0], window[1]} == {f"{phase}-a-start", f"{phase}-b-start"}


async def test_concurrent_phase_takes_the_longest_handler_not_the_sum() -> None:
    """Twenty handlers of one phase all run at once: each waits until all twenty have begun."""
    coordinator = fast()
    began: list[int] = []
    all_began = anyio.Event()

    def waiter(i: int) -> Callable[[], Awaitable[None]]:
        async def wait_for_the_others() -> None:
            began.append(i)
            if len(began) == 20:
                all_began.set()
            # Run one after the other, the first would wait here until its timeout.
            await all_began.wait()

        return wait_for_the_others

    for i in range(20):
        coordinator.add_handler(waiter(i), name=f"h{i}", timeout=2.0)
    report = await coordinator.shutdown()
    assert [h.outcome for h in report.handlers] == [Outcome.OK] * 20
    assert sorted(began) == list(range(20))


async def test_sync_handlers_run_in_a_worker_thread_with_or_without_context() -> None:
    """Sync handlers run off the event loop thread; the context is passed when asked for."""
    coordinator = fast()
    loop_thread = threading.get_ident()
    seen: dict[str, object] = {}

    @coordinator.on_shutdown
    def bare() -> None:
        seen["bare"] = threading.get_ident()

    @coordinator.on_shutdown(phase=Phase.RELEASE, timeout=2)
    def with_context(ctx: ShutdownContext) -> None:
        seen["ctx"] = ctx
        seen["remaining"] = ctx.remaining()
        seen["ctx_thread"] = threading.get_ident()

    report = await coordinator.shutdown("test")
    assert report.ok
    assert seen["bare"] != loop_thread
    assert seen["ctx_thread"] != loop_thread
    ctx = seen["ctx"]
    assert isinstance(ctx, ShutdownContext)
    assert ctx.phase is Phase.RELEASE
    assert ctx.reason == "test"
    remaining = seen["remaining"]
    assert isinstance(remaining, float)
    # the handler's own 2 s timeout, not the run's 9 s budget
    assert 0 < remaining <= 2.0


async def test_failing_and_hung_handlers_are_recorded_and_never_block_the_rest() -> None:
    """An exception and a hang are recorded; the other handlers and phases still run."""
    coordinator = fast()
    ran: list[str] = []

    @coordinator.on_shutdown(phase="flush", name="boom")
    async def boom() -> None:
        raise RuntimeError("disk full")

    @coordinator.on_shutdown(phase="flush", name="hang", timeout=0.2)
    async def hang() -> None:
        await anyio.sleep_forever()

    let_go = threading.Event()
    thread_done = threading.Event()

    @coordinator.on_shutdown(phase="flush", name="sync-hang", timeout=0.2)
    def sync_hang() -> None:
        let_go.wait(10)  # held until the test lets it go, after the run
        thread_done.set()

    @coordinator.on_shutdown(phase="flush", name="fine")
    async def fine() -> None:
        ran.append("fine")

    @coordinator.on_shutdown(phase="release", name="later")
    async def later() -> None:
        ran.append("later")

    report = await coordinator.shutdown()
    abandoned_thread_still_running = not thread_done.is_set()
    let_go.set()
    outcomes = {h.name: h.outcome for h in report.handlers}
    assert outcomes == {
        "boom": Outcome.ERROR,
        "hang": Outcome.TIMEOUT,
        "sync-hang": Outcome.TIMEOUT,
        "fine": Outcome.OK,
        "later": Outcome.OK,
    }
    assert ran == ["fine", "later"]
    errors = {h.name: h.error for h in report.handlers}
    assert errors["boom"] == "RuntimeError: disk full"
    assert not report.ok
    assert report.exit_code == 1
    assert abandoned_thread_still_running, "the abandoned sync thread must not hold the sequence"


async def test_later_phases_keep_the_time_their_handlers_ask_for() -> None:
    """Stuck in-flight work and a slow drain handler are cut so release keeps its full timeout."""
    coordinator = fast(grace_period=3.0, safety_margin=0.5, propagation_delay=0.5)
    deadlines: dict[str, float] = {}

    @coordinator.on_shutdown(phase="drain", name="slow-drain", timeout=1.2)
    async def slow_drain(ctx: ShutdownContext) -> None:
        deadlines["drain"] = ctx.deadline
        await anyio.sleep_forever()

    @coordinator.on_shutdown(phase="release", name="unlock", timeout=1.0)
    async def unlock(ctx: ShutdownContext) -> None:
        deadlines["release"] = ctx.deadline

    async def stuck(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        async with coordinator.track("stuck"):
            task_status.started()
            await anyio.sleep(10)

    async with anyio.create_task_group() as tg:
        await tg.start(stuck)
        report = await coordinator.shutdown()
        tg.cancel_scope.cancel()
    outcomes = {h.name: h.outcome for h in report.handlers}
    assert outcomes == {"slow-drain": Outcome.TIMEOUT, "unlock": Outcome.OK}
    assert report.in_flight_abandoned == 1
    # The drain was cut 1 s before the run's deadline, which is release's: release kept
    # its 1 s (a late start of the drain on a loaded machine shrinks it a little, in
    # proportion), where a drain given its own 1.2 s first would have left it 0.8 s.
    assert 0.9 < deadlines["release"] - deadlines["drain"] <= 1.0 + 1e-3
    steps = {p.name: p for p in report.phases}
    assert steps["drain"].duration >= 1.0, "the stuck work was waited for until the cut"
    assert report.duration < 2.5, "and the run ended within its budget"


async def test_propagation_delay_and_drain_are_cut_before_the_handlers_time() -> None:
    """A propagation delay longer than the grace period yields to the flush handler's time."""
    coordinator = fast(grace_period=2.0, safety_margin=0.5, propagation_delay=60.0)
    budget: list[float] = []

    @coordinator.on_shutdown(phase="flush", timeout=1.0)
    async def save(ctx: ShutdownContext) -> None:
        budget.append(ctx.remaining())

    report = await coordinator.shutdown()
    assert report.ok
    # Given its full 1 s, less what a loaded machine delays its start by; a delay that
    # took its share (60 : 1) would have left it a few milliseconds.
    assert budget[0] > 0.5
    assert report.duration < 2.0, "the 60 s delay was cut: the run ended within the grace period"


async def test_deadline_is_respected_when_every_handler_hangs() -> None:
    """With every phase hung, the run lasts its budget and ends before the grace period."""
    coordinator = fast(grace_period=3.0, safety_margin=1.0)
    for phase in Phase:

        async def hang() -> None:
            await anyio.sleep_forever()

        coordinator.add_handler(hang, phase=phase, timeout=1.5, name=f"hang-{phase}")
    started = time.monotonic()
    report = await coordinator.shutdown()
    elapsed = time.monotonic() - started
    # Six hung phases of 1.5 s each would take 9 s: they shared the 2 s budget instead.
    assert report.duration >= 2.0 - 0.01
    assert elapsed < 3.0, "ended before the grace period, when SIGKILL would come"
    outcomes = [h.outcome for h in report.handlers]
    assert Outcome.OK not in outcomes
    assert Outcome.TIMEOUT in outcomes
    assert [h.phase for h in report.handlers] == list(Phase), "every phase got its turn"


async def test_overcommitted_phases_share_the_budget_in_proportion() -> None:
    """When timeouts exceed the budget, a hung early phase gets its share, not all of it."""
    coordinator = fast(grace_period=2.0, safety_margin=0.5)
    deadlines: dict[str, float] = {}

    @coordinator.on_shutdown(phase="announce", timeout=1.0, name="early")
    async def early(ctx: ShutdownContext) -> None:
        deadlines["early"] = ctx.deadline
        await anyio.sleep_forever()

    @coordinator.on_shutdown(phase="report", timeout=1.5, name="late")
    async def late(ctx: ShutdownContext) -> None:
        deadlines["late"] = ctx.deadline

    report = await coordinator.shutdown()
    outcomes = {h.name: h.outcome for h in report.handlers}
    assert outcomes == {"early": Outcome.TIMEOUT, "late": Outcome.OK}
    early_result = report.handlers[0]
    # 1.5 s shared 1.0 : 1.5 -> 0.6 s for announce, 0.9 s kept for report; given its own
    # 1 s first, announce would have left report 0.5 s. (A late start shrinks both.)
    kept_for_report = deadlines["late"] - deadlines["early"]
    assert 0.75 < kept_for_report <= 0.9 + 1e-3
    assert early_result.duration >= 0.5, "announce was not cut before its share"


async def test_shutdown_runs_once_for_150_concurrent_callers() -> None:
    """150 concurrent and 10 later callers all get the same report; each handler ran once."""
    coordinator = fast()
    calls: list[str] = []

    @coordinator.on_shutdown(phase="announce")
    async def announce() -> None:
        calls.append("announce")
        await anyio.sleep(0.05)

    @coordinator.on_shutdown(phase="flush")
    def flush() -> None:
        calls.append("flush")

    reports: list[graceshut.ShutdownReport] = []

    async def call(i: int) -> None:
        reports.append(await coordinator.shutdown(f"caller-{i}"))

    async with anyio.create_task_group() as tg:
        for i in range(150):
            tg.start_soon(call, i)
    for i in range(10):
        reports.append(await coordinator.shutdown(f"late-{i}"))
    assert len(reports) == 160
    assert all(r is reports[0] for r in reports)
    assert calls == ["announce", "flush"]
    assert reports[0].reason.startswith("caller-")


async def test_cancelled_caller_does_not_cancel_the_sequence() -> None:
    """A caller that gives up waiting leaves the sequence running to completion."""
    coordinator = fast()
    done = anyio.Event()

    @coordinator.on_shutdown
    async def slow() -> None:
        await anyio.sleep(0.3)
        done.set()

    with anyio.move_on_after(0.05):
        await coordinator.shutdown()
    assert coordinator.shutting_down
    assert coordinator.report is None
    report = await coordinator.shutdown()
    assert done.is_set()
    assert report.ok


async def test_drain_waits_for_tracked_work_and_wakes_at_once() -> None:
    """The drain step ends as soon as the last tracked job ends, with no polling delay."""
    coordinator = fast()
    finished_at: list[float] = []

    async def job(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        async with coordinator.track("export"):
            task_status.started()
            await anyio.sleep(0.3)
            finished_at.append(time.monotonic())

    drained_at: list[float] = []

    @coordinator.on_shutdown(phase="flush")
    async def after_drain() -> None:
        drained_at.append(time.monotonic())

    async with anyio.create_task_group() as tg:
        await tg.start(job)
        report = await coordinator.shutdown()
    assert report.in_flight_at_start == 1
    assert report.in_flight_abandoned == 0
    # Ended by the job's end, not at the drain's deadline 9 s away. How soon after the
    # job's end it wakes is a speed: benchmarks/drain_latency.py measures it.
    assert 0 <= drained_at[0] - finished_at[0] < 5


async def test_drain_gives_up_on_work_that_outlives_the_deadline() -> None:
    """Work still running at the drain's end is counted as abandoned in the report."""
    coordinator = fast(grace_period=1.5, safety_margin=0.5)

    finished = anyio.Event()

    async def stuck(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        async with coordinator.track("stuck-job"):
            task_status.started()
            await anyio.sleep(5)
            finished.set()

    async with anyio.create_task_group() as tg:
        await tg.start(stuck)
        report = await coordinator.shutdown()
        assert not finished.is_set(), "the drain did not wait for the work to finish"
        tg.cancel_scope.cancel()
    assert report.duration < 1.5, "within the grace period"
    assert report.in_flight_abandoned == 1
    assert not report.ok


async def test_wait_for_drain_releases_consumers_when_the_drain_begins() -> None:
    """A background consumer waiting on wait_for_drain() stops at the drain step."""
    coordinator = fast(propagation_delay=0.2)
    stopped: list[float] = []

    async def consumer(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        task_status.started()
        await coordinator.wait_for_drain()
        stopped.append(time.monotonic())

    async with anyio.create_task_group() as tg:
        await tg.start(consumer)
        started = time.monotonic()
        await coordinator.shutdown()
    assert stopped[0] - started >= 0.19
    assert coordinator.draining


async def test_readiness_flips_at_trigger_and_state_follows_the_phases() -> None:
    """shutting_down is true from the trigger; draining only from the drain step."""
    coordinator = fast(propagation_delay=0.3)
    states: list[tuple[bool, bool, Phase | None]] = []

    @coordinator.on_shutdown(phase="announce")
    def announce() -> None:
        states.append((coordinator.shutting_down, coordinator.draining, coordinator.phase))

    @coordinator.on_shutdown(phase="flush")
    def flush() -> None:
        states.append((coordinator.shutting_down, coordinator.draining, coordinator.phase))

    assert not coordinator.shutting_down
    coordinator.attach()
    coordinator.trigger("SIGTERM")
    assert coordinator.shutting_down
    assert not coordinator.draining
    report = await coordinator.shutdown("ignored")
    assert report.reason == "SIGTERM"
    assert states == [(True, False, Phase.ANNOUNCE), (True, True, Phase.FLUSH)]


async def test_trigger_from_another_thread_starts_the_sequence() -> None:
    """trigger() is safe from a foreign thread once the coordinator is attached."""
    coordinator = fast()
    coordinator.attach()
    await anyio.to_thread.run_sync(coordinator.trigger, "thread")
    report = await coordinator.shutdown()
    assert report.reason == "thread"


def test_trigger_without_an_event_loop_is_a_clear_error() -> None:
    """trigger() before attach() says what to do instead."""
    with pytest.raises(RuntimeError, match="attach"):
        fast().trigger("x")


async def test_report_listeners_see_the_final_report_and_may_fail() -> None:
    """on_report listeners get the report; a failing one does not stop the next."""
    coordinator = fast()
    seen: list[graceshut.ShutdownReport] = []

    @coordinator.on_report
    def broken(report: graceshut.ShutdownReport) -> None:
        raise ValueError("oops")

    coordinator.on_report(seen.append)
    report = await coordinator.shutdown()
    assert seen == [report]


async def test_report_to_dict_is_json_ready() -> None:
    """The report serializes with every field the contract names."""
    import json

    coordinator = fast()

    @coordinator.on_shutdown(name="x")
    def x() -> None:
        raise OSError("nope")

    report = await coordinator.shutdown("manual")
    data = json.loads(json.dumps(report.to_dict()))
    assert data["reason"] == "manual"
    assert data["ok"] is False
    assert data["in_flight_at_start"] == 0
    assert isinstance(data["started_at"], float)
    assert data["duration"] >= 0
    assert data["handlers"] == [
        {
            "name": "x",
            "phase": "flush",
            "outcome": "error",
            "duration": data["handlers"][0]["duration"],
            "error": "OSError: nope",
        }
    ]
    assert "1 error" in report.summary()


def test_registration_errors_are_raised_at_registration() -> None:
    """Duplicate names, unknown phases, bad timeouts and bad signatures fail at once."""
    coordinator = fast(grace_period=10.0, safety_margin=1.0)

    def handler() -> None: ...

    coordinator.add_handler(handler, name="one")
    with pytest.raises(ValueError, match="already registered"):
        coordinator.add_handler(handler, name="one")
    with pytest.raises(ValueError, match="unknown phase 'flsh'"):
        coordinator.add_handler(handler, phase="flsh", name="two")
    with pytest.raises(ValueError, match=r"longer than the whole shutdown budget of 9s"):
        coordinator.add_handler(handler, timeout=9.5, name="three")
    with pytest.raises(ValueError, match="timeout"):
        coordinator.add_handler(handler, timeout=0, name="four")
    with pytest.raises(TypeError, match="timeout"):
        coordinator.add_handler(handler, timeout="5", name="five")  # type: ignore[arg-type]

    def two_args(a: object, b: object) -> None: ...

    with pytest.raises(TypeError, match="no argument or one"):
        coordinator.add_handler(two_args, name="six")
    with pytest.raises(TypeError, match="callable"):
        coordinator.add_handler("not callable", name="seven")  # type: ignore[arg-type]
    assert [h.name for h in coordinator.handlers] == ["one"]


async def test_registering_after_shutdown_started_is_refused() -> None:
    """A handler added once the run has begun would silently never run: refuse it."""
    coordinator = fast()
    await coordinator.shutdown()
    with pytest.raises(RuntimeError, match="already started"):
        coordinator.add_handler(lambda: None, name="late")


def test_phase_accepts_names_in_any_case() -> None:
    """Phase.parse takes the enum or its name, case-insensitively."""
    assert Phase.parse("Release") is Phase.RELEASE
    assert Phase.parse(Phase.DRAIN) is Phase.DRAIN
    assert str(Phase.FLUSH) == "flush"


def test_default_handler_name_is_the_qualified_function_name() -> None:
    """Without name=, the handler is named module.qualname."""
    coordinator = fast()

    @coordinator.on_shutdown
    def save_cache() -> None: ...

    (handler,) = coordinator.handlers
    assert handler.name.endswith(
        "test_default_handler_name_is_the_qualified_function_name.<locals>.save_cache"
    )
    assert handler.phase is Phase.FLUSH
    assert handler.timeout == 5.0


async def test_report_times_every_step_of_the_sequence() -> None:
    """The report lists each step with its start (after the trigger) and duration."""
    coordinator = fast(propagation_delay=0.2)

    @coordinator.on_shutdown("flush")
    async def flush() -> None:
        await anyio.sleep(0.1)

    report = await coordinator.shutdown()
    steps = {p.name: p for p in report.phases}
    assert list(steps) == ["announce", "propagation", "drain", "flush", "release", "report"]
    # The delay counts from the trigger, so it ends 0.2 s after it however late it began.
    assert steps["propagation"].started + steps["propagation"].duration >= 0.19
    assert steps["flush"].duration >= 0.09
    assert steps["flush"].started >= steps["drain"].started >= steps["propagation"].started
    assert report.to_dict()["phases"][3]["name"] == "flush"


async def test_abandoned_work_is_reported_but_does_not_fail_the_exit_status() -> None:
    """Exit status follows the handlers (the contract); abandoned work shows in the report."""
    coordinator = fast(grace_period=1.5, safety_margin=0.5)

    async def stream(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        async with coordinator.track("long-poll"):
            task_status.started()
            await anyio.sleep(5)

    async with anyio.create_task_group() as tg:
        await tg.start(stream)
        report = await coordinator.shutdown()
        tg.cancel_scope.cancel()
    assert report.in_flight_abandoned == 1
    assert not report.ok
    assert report.handlers_ok
    assert report.exit_code == 0


async def test_two_triggers_at_once_never_run_the_handlers_twice() -> None:
    """A trigger from another thread racing shutdown() still runs each handler once."""
    coordinator = fast()
    calls: list[str] = []

    @coordinator.on_shutdown
    def flush() -> None:
        calls.append("flush")

    coordinator.attach()
    threads = [threading.Thread(target=coordinator.trigger, args=(f"t{i}",)) for i in range(20)]
    for thread in threads:
        thread.start()
    report = await coordinator.shutdown("main")
    for thread in threads:
        thread.join()
    await anyio.sleep(0.1)
    assert calls == ["flush"]
    assert coordinator.report is report


async def test_handlers_that_raise_base_exceptions_are_recorded_and_the_rest_run(
    anyio_backend: str,
) -> None:
    """SystemExit, a stray cancellation or a coroutine from a sync function: errors, not ok."""
    coordinator = fast()
    ran: list[str] = []

    @coordinator.on_shutdown("flush", name="exits")
    def exits() -> None:
        raise SystemExit(3)

    if anyio_backend == "asyncio":  # trio has no way to raise a stray Cancelled

        @coordinator.on_shutdown("flush", name="stray-cancel")
        async def stray_cancel() -> None:
            import asyncio

            task = asyncio.ensure_future(asyncio.sleep(10))
            task.cancel()
            await task  # the usual pattern, forgetting to catch CancelledError

    async def work() -> None: ...

    coordinator.add_handler(lambda: work(), phase="flush", name="forgot-async")  # noqa: PLW0108 - the point

    @coordinator.on_shutdown("release", name="after")
    def after() -> None:
        ran.append("after")

    report = await coordinator.shutdown()
    outcomes = {h.name: (h.outcome, h.error) for h in report.handlers}
    assert outcomes["exits"] == (Outcome.ERROR, "SystemExit: 3")
    if anyio_backend == "asyncio":
        assert outcomes["stray-cancel"] == (Outcome.ERROR, "cancelled")
    assert outcomes["forgot-async"][0] is Outcome.ERROR
    assert "async def" in str(outcomes["forgot-async"][1])
    assert outcomes["after"] == (Outcome.OK, None)
    assert ran == ["after"]
    assert report.exit_code == 1


async def test_several_tasks_can_wait_for_the_drain_to_empty() -> None:
    """in_flight.wait_idle() wakes every waiter, the drain included."""
    coordinator = fast()
    woke: list[str] = []

    @coordinator.on_shutdown("drain", name="waiter")
    async def waiter() -> None:
        await coordinator.in_flight.wait_idle()
        woke.append("handler")

    async def job(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        async with coordinator.track("job"):
            task_status.started()
            await anyio.sleep(0.3)

    async with anyio.create_task_group() as tg:
        await tg.start(job)
        report = await coordinator.shutdown()
    assert woke == ["handler"]
    assert report.ok, "the waiting handler was woken before its timeout"


async def test_a_handler_that_swallows_its_cancellation_cannot_hold_the_sequence(
    caplog: pytest.LogCaptureFixture, anyio_backend: str
) -> None:
    """Cancelled at its timeout, it runs its `except` at once, then is left behind."""
    coordinator = fast()
    saw_cancellation: list[str] = []
    let_go = anyio.Event()

    @coordinator.on_shutdown("flush", name="stubborn", timeout=0.2)
    async def stubborn() -> None:
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            saw_cancellation.append("flush")
            with anyio.move_on_after(30):
                await let_go.wait()  # and goes on as if nothing happened
            saw_cancellation.append("stubborn gave up")

    @coordinator.on_shutdown("release", name="after")
    async def after() -> None:
        saw_cancellation.append("release ran")

    report = await coordinator.shutdown()
    seen_at_the_end = list(saw_cancellation)
    let_go.set()
    outcomes = {h.name: h.outcome for h in report.handlers}
    assert outcomes == {"stubborn": Outcome.TIMEOUT, "after": Outcome.OK}
    assert seen_at_the_end[:1] == ["flush"], "its except ran before the next phase"
    assert "release ran" in seen_at_the_end
    if anyio_backend == "asyncio":  # on trio its next await is cancelled again
        assert seen_at_the_end == ["flush", "release ran"], "the sequence went on without it"
        assert "1 handler still running after its timeout" in caplog.text


async def test_a_timed_out_handler_is_a_timeout_whatever_it_does_after() -> None:
    """Returning quietly, or raising from its clean-up, once cancelled: still a timeout."""
    coordinator = fast()

    @coordinator.on_shutdown("flush", name="returns", timeout=0.1)
    async def returns() -> None:
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            return

    @coordinator.on_shutdown("flush", name="raises", timeout=0.1)
    async def raises() -> None:
        try:
            await anyio.sleep_forever()
        finally:
            raise RuntimeError("clean-up failed")

    report = await coordinator.shutdown()
    outcomes = {h.name: h.outcome for h in report.handlers}
    assert outcomes == {"returns": Outcome.TIMEOUT, "raises": Outcome.TIMEOUT}
    assert all(h.duration >= 0.09 for h in report.handlers), "each ran until its timeout"
