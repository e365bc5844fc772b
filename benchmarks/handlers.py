"""The shutdown sequence itself: its overhead, its concurrency, and its deadline.

- sequence: 1,000 async no-op handlers spread over the five phases, timed from the
  call to `shutdown()` to its report.
- concurrency: 100 handlers in one phase that each sleep 100 ms: concurrency, not a sum.
- overshoot: every handler hung (two per phase that never return, one sync handler
  stuck in a thread) and one request that never ends, with a propagation delay as long
  as the budget: how far past `trigger + grace_period - safety_margin` the sequence ends.

Baselines in the same run: the loop a user writes today in a lifespan shutdown (each
handler awaited in turn under `asyncio.wait_for`), and asgi-lifecycle's shutdown hooks
(the same, inside a library).

    python benchmarks/run.py sequence concurrency overshoot [--quick]
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Sequence

import _asgi
import anyio
import anyio.lowlevel
import peers
from _harness import Config, Line, Measure, median, ratio, version_of

from graceshut import Phase

PHASES = list(Phase)
SEQUENCE_GOAL_MS = 20.0
CONCURRENCY_GOAL_MS = 110.0
OVERSHOOT_GOAL_MS = 20.0

Hook = Callable[[], Awaitable[None]]


async def noop() -> None:
    """A handler with nothing to do."""


def sync_noop() -> None:
    """A sync handler with nothing to do (runs in a worker thread)."""


# -- the three ways to run handlers ----------------------------------------------


async def run_graceshut(
    hooks: Sequence[tuple[Callable[[], object], Phase]],
    *,
    handler_timeout: float,
    budget: float = 29.0,
    propagation_delay: float = 0.0,
) -> tuple[float, float]:
    """Register *hooks*, run the sequence; return (registration, sequence) seconds."""
    coordinator = _asgi.new_coordinator(
        grace_period=budget + 1.0, safety_margin=1.0, propagation_delay=propagation_delay
    )
    started = time.perf_counter()
    for index, (hook, phase) in enumerate(hooks):
        coordinator.add_handler(hook, phase=phase, timeout=handler_timeout, name=f"hook-{index}")
    registered = time.perf_counter()
    report = await coordinator.shutdown()
    finished = time.perf_counter()
    if len(report.handlers) != len(hooks):
        raise RuntimeError(f"{len(report.handlers)} results for {len(hooks)} handlers")
    return registered - started, finished - registered


async def run_sequential(hooks: Sequence[Hook], *, handler_timeout: float) -> float:
    """What a lifespan shutdown does today: each handler in turn, under its own timeout."""
    started = time.perf_counter()
    for hook in hooks:
        with contextlib.suppress(asyncio.TimeoutError, Exception):
            await asyncio.wait_for(hook(), handler_timeout)
    return time.perf_counter() - started


async def run_asgi_lifecycle(hooks: Sequence[Hook], *, handler_timeout: float) -> float | None:
    """asgi-lifecycle's shutdown hooks; None when it is not installed."""
    module = peers.asgi_lifecycle()
    if module is None:
        return None
    module.Lifespan.reset_instance()
    lifespan = module.Lifespan.get_instance()
    lifespan._shutdown_timeout = handler_timeout  # noqa: SLF001 - its only timeout setting
    for index, hook in enumerate(hooks):
        lifespan.on_shutdown(name=f"hook-{index}")(hook)
    context = module.LifespanContext(service_type="app")
    await lifespan.startup(context)
    started = time.perf_counter()
    await lifespan.shutdown(context)
    elapsed = time.perf_counter() - started
    module.Lifespan.reset_instance()
    return elapsed


async def floor_anyio(hooks: Sequence[tuple[Hook, Phase]], *, handler_timeout: float) -> float:
    """The least a concurrent anyio runner does: per phase a task group, per handler a
    task under `move_on_after`, and nothing else (no results, no logging, no deadline)."""

    async def guarded(hook: Hook) -> None:
        with anyio.move_on_after(handler_timeout):
            await hook()

    started = time.perf_counter()
    for phase in PHASES:
        async with anyio.create_task_group() as tg:
            for hook, where in hooks:
                if where is phase:
                    tg.start_soon(guarded, hook)
    return time.perf_counter() - started


async def floor_asyncio(hooks: Sequence[tuple[Hook, Phase]], *, handler_timeout: float) -> float:
    """The same floor in plain asyncio: `gather` of tasks under `asyncio.wait_for`."""
    started = time.perf_counter()
    for phase in PHASES:
        await asyncio.gather(
            *(asyncio.wait_for(hook(), handler_timeout) for hook, where in hooks if where is phase)
        )
    return time.perf_counter() - started


def _lifecycle_line(values: list[float | None], graceshut: float, note: str = "") -> Line:
    if any(v is None for v in values):
        return Line(peers.missing(peers.ASGI_LIFECYCLE), None)
    value = median([v for v in values if v is not None]) * 1e3
    return Line(
        f"{peers.label(peers.ASGI_LIFECYCLE)} shutdown hooks", value, ratio(graceshut, value), note
    )


# -- sequence --------------------------------------------------------------------


def measure_sequence(config: Config) -> list[Measure]:
    """1,000 no-op handlers across the five phases."""
    count = 1000
    rounds = config.pick(7, 2)
    hooks = [(noop, PHASES[i % len(PHASES)]) for i in range(count)]
    sync_hooks = [(sync_noop, PHASES[i % len(PHASES)]) for i in range(count)]
    ours: list[float] = []
    registration: list[float] = []
    ours_sync: list[float] = []
    ours_trio: list[float] = []
    sequential: list[float] = []
    lifecycle: list[float | None] = []
    floors: dict[str, list[float]] = {"anyio": [], "asyncio": []}
    for _ in range(rounds):
        register, run = asyncio.run(run_graceshut(hooks, handler_timeout=5.0))
        registration.append(register)
        ours.append(run)
        ours_sync.append(asyncio.run(run_graceshut(sync_hooks, handler_timeout=5.0))[1])
        if version_of("trio") is not None:
            ours_trio.append(_trio_sequence(hooks))
        plain = [hook for hook, _ in hooks]
        sequential.append(asyncio.run(run_sequential(plain, handler_timeout=5.0)))
        lifecycle.append(asyncio.run(run_asgi_lifecycle(plain, handler_timeout=5.0)))
        floors["anyio"].append(asyncio.run(floor_anyio(hooks, handler_timeout=5.0)))
        floors["asyncio"].append(asyncio.run(floor_asyncio(hooks, handler_timeout=5.0)))
    graceshut = median(ours) * 1e3
    baseline = median(sequential) * 1e3
    anyio_floor = median(floors["anyio"]) * 1e3
    asyncio_floor = median(floors["asyncio"]) * 1e3
    return [
        Measure(
            key="sequence",
            title="sequence: 1,000 no-op handlers, 5 phases",
            unit="ms",
            graceshut=graceshut,
            goal=f"<= {SEQUENCE_GOAL_MS:g} ms",
            met=graceshut <= SEQUENCE_GOAL_MS,
            lines=[
                Line(
                    "sequential, each under asyncio.wait_for", baseline, ratio(graceshut, baseline)
                ),
                _lifecycle_line(lifecycle, graceshut),
                Line(
                    "floor: anyio task + move_on_after each",
                    anyio_floor,
                    ratio(graceshut, anyio_floor),
                    "not a library: concurrency and timeouts only, nothing recorded",
                ),
                Line(
                    "floor: asyncio.gather of wait_for",
                    asyncio_floor,
                    ratio(graceshut, asyncio_floor),
                    "not a library: the same in plain asyncio",
                ),
            ],
            detail=(
                f"async handlers, asyncio, no logging configured; {rounds} rounds, median; "
                + (f"on trio: {median(ours_trio) * 1e3:.1f} ms; " if ours_trio else "")
                + f"the same with 1,000 sync no-op handlers (worker threads): "
                f"{median(ours_sync) * 1e3:.1f} ms; registering the 1,000 handlers took "
                f"{median(registration) * 1e3:.1f} ms (not in the sequence time)"
            ),
        )
    ]


# -- concurrency -----------------------------------------------------------------


def measure_concurrency(config: Config) -> list[Measure]:
    """100 handlers that each sleep 100 ms, in one phase."""
    count, nap = 100, 0.1
    rounds = config.pick(5, 2)
    # Sequential baselines take count x nap (10 s): the quick run times a tenth of them.
    baseline_count = config.pick(count, 10)
    scale = count / baseline_count

    async def sleeper() -> None:
        await anyio.sleep(nap)

    def sync_sleeper() -> None:
        time.sleep(nap)

    ours = [
        asyncio.run(run_graceshut([(sleeper, Phase.FLUSH)] * count, handler_timeout=5.0))[1]
        for _ in range(rounds)
    ]
    ours_sync = [
        asyncio.run(run_graceshut([(sync_sleeper, Phase.FLUSH)] * count, handler_timeout=5.0))[1]
        for _ in range(rounds)
    ]
    trio = [_trio_run(sleeper, count) for _ in range(rounds) if version_of("trio") is not None]
    hooks = [sleeper] * baseline_count
    sequential = asyncio.run(run_sequential(hooks, handler_timeout=5.0)) * scale
    lifecycle = asyncio.run(run_asgi_lifecycle(hooks, handler_timeout=5.0))
    graceshut = median(ours) * 1e3
    note = f"timed {baseline_count} handlers, x{scale:g}" if scale != 1 else "1 round"
    detail = (
        f"asyncio; {rounds} rounds, median; 100 sync handlers that time.sleep(0.1) in "
        f"worker threads: {median(ours_sync) * 1e3:.1f} ms"
    )
    if trio:
        detail += f"; on trio: {median(trio) * 1e3:.1f} ms"
    return [
        Measure(
            key="concurrency",
            title="concurrency: 100 handlers x 100 ms sleep",
            unit="ms",
            graceshut=graceshut,
            goal=f"<= {CONCURRENCY_GOAL_MS:g} ms",
            met=graceshut <= CONCURRENCY_GOAL_MS,
            lines=[
                Line(
                    "sequential, each under asyncio.wait_for",
                    sequential * 1e3,
                    ratio(graceshut, sequential * 1e3),
                    note,
                ),
                _lifecycle_line(
                    [None if lifecycle is None else lifecycle * scale], graceshut, note
                ),
            ],
            detail=detail,
        )
    ]


def _trio_sequence(hooks: Sequence[tuple[Callable[[], object], Phase]]) -> float:
    async def main() -> float:
        return (await run_graceshut(hooks, handler_timeout=5.0))[1]

    return anyio.run(main, backend="trio")


def _trio_run(hook: Callable[[], Awaitable[None]], count: int) -> float:
    async def main() -> float:
        _, run = await run_graceshut([(hook, Phase.FLUSH)] * count, handler_timeout=5.0)
        return run

    return anyio.run(main, backend="trio")


# -- overshoot -------------------------------------------------------------------


async def graceshut_overshoot(budget: float) -> float:
    """Seconds past the deadline at which `shutdown()` returns, everything hung."""
    coordinator = _asgi.new_coordinator(
        grace_period=budget + 1.0, safety_margin=1.0, propagation_delay=budget
    )
    budget = coordinator.settings.budget  # exactly what the deadline uses
    stuck = threading.Event()
    request_may_end = anyio.Event()

    async def hung() -> None:
        await anyio.sleep_forever()

    def hung_in_a_thread() -> None:
        stuck.wait(60)

    for phase in PHASES:
        for index in range(2):
            coordinator.add_handler(hung, phase=phase, timeout=budget, name=f"{phase}-{index}")
    coordinator.add_handler(hung_in_a_thread, phase=Phase.FLUSH, timeout=budget)

    async def endless(scope: _asgi.Scope, receive: _asgi.Receive, send: _asgi.Send) -> None:
        await request_may_end.wait()
        await send(_asgi.START)
        await send(_asgi.BODY)

    middleware = _asgi.graceshut_middleware(endless, coordinator)
    async with anyio.create_task_group() as tg:
        tg.start_soon(middleware, _asgi.make_scope(), _asgi.receive, _asgi.discard)
        while not coordinator.in_flight.count:
            await anyio.lowlevel.checkpoint()
        started = time.monotonic()
        report = await coordinator.shutdown()
        overshoot = time.monotonic() - started - budget
        stuck.set()
        request_may_end.set()
    if report.ok or report.in_flight_abandoned != 1:
        raise RuntimeError("the hung handlers and request were expected in the report")
    return overshoot


def hung_hooks(count: int) -> list[Hook]:
    """*count* async handlers that never return."""

    async def hung() -> None:
        await asyncio.Event().wait()

    return [hung] * count


async def sequential_overshoot(budget: float) -> float:
    """The same hung handlers awaited in turn, each with the whole budget as timeout."""
    stuck = threading.Event()

    async def hung_in_a_thread() -> None:
        await asyncio.to_thread(stuck.wait, 60)

    hooks = [*hung_hooks(10), hung_in_a_thread]
    elapsed = await run_sequential(hooks, handler_timeout=budget)
    stuck.set()
    return elapsed - budget


async def asgi_lifecycle_overshoot(budget: float) -> float | None:
    """asgi-lifecycle's hooks, all hung (async only: it runs sync hooks on the loop)."""
    elapsed = await run_asgi_lifecycle(hung_hooks(11), handler_timeout=budget)
    return None if elapsed is None else elapsed - budget


def measure_overshoot(config: Config) -> list[Measure]:
    """How far past its deadline the sequence ends when nothing cooperates."""
    budget = config.pick_float(1.0, 0.2)
    rounds = config.pick(5, 2)
    ours = [asyncio.run(graceshut_overshoot(budget)) for _ in range(rounds)]
    sequential = asyncio.run(sequential_overshoot(budget)) * 1e3
    lifecycle = asyncio.run(asgi_lifecycle_overshoot(budget))
    graceshut = median(ours) * 1e3
    return [
        Measure(
            key="overshoot",
            title="deadline overshoot, every handler hung",
            unit="ms",
            graceshut=graceshut,
            goal=f"<= {OVERSHOOT_GOAL_MS:g} ms",
            met=graceshut <= OVERSHOOT_GOAL_MS,
            lines=[
                Line(
                    "sequential, each under asyncio.wait_for",
                    sequential,
                    ratio(graceshut, sequential),
                    "no overall deadline: 11 x the timeout; 1 round",
                ),
                _lifecycle_line(
                    [None if lifecycle is None else lifecycle],
                    graceshut,
                    "per-hook timeout only; 11 async hooks; 1 round",
                ),
            ],
            detail=(
                f"budget (grace period - safety margin) {budget:g} s, propagation delay "
                f"{budget:g} s, 2 hung async handlers per phase with timeout={budget:g} s, "
                f"1 sync handler stuck in a thread, 1 request that never ends; overshoot = "
                f"shutdown() return - (call + budget), worst of {rounds} rounds "
                f"{max(ours) * 1e3:.1f} ms, median reported"
            ),
        )
    ]


if __name__ == "__main__":
    import run

    sys.exit(run.main(["sequence", "concurrency", "overshoot", *sys.argv[1:]]))
