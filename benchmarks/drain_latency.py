"""Time from the last in-flight request ending to the drain step being done.

One request is held open through the real middleware while the sequence reaches its
drain step; the request then ends (the app returns after sending its body) and the
clock stops when the first handler of the next phase (flush) starts. Baselines in the
same run: a drain loop that polls an in-flight counter every 100 ms, as uvicorn's own
shutdown does (the request ends at a random point between two polls), and svc-infra's
lifespan drain, which polls the same way. asyncio and trio; p99 over 1,000 trials.

    python benchmarks/run.py drain [--quick]
"""

from __future__ import annotations

import random
import sys
import time

import _asgi
import anyio
import anyio.lowlevel
import peers
from _harness import Config, Line, Measure, median, percentile, ratio, version_of
from starlette.applications import Starlette

GOAL_MS = 1.0
POLL = 0.1  # uvicorn's drain loop: while tasks: await asyncio.sleep(0.1)


async def graceshut_trial() -> float:
    """Seconds from the request's end to the flush phase's first handler."""
    coordinator = _asgi.new_coordinator(grace_period=10)
    flushed: list[float] = []
    ended: list[float] = []
    release = anyio.Event()

    @coordinator.on_shutdown("flush", name="mark")
    async def mark() -> None:
        flushed.append(time.perf_counter())

    async def app(scope: _asgi.Scope, receive: _asgi.Receive, send: _asgi.Send) -> None:
        await release.wait()
        await send(_asgi.START)
        await send(_asgi.BODY)
        ended.append(time.perf_counter())

    middleware = _asgi.graceshut_middleware(app, coordinator)
    async with anyio.create_task_group() as tg:
        tg.start_soon(middleware, _asgi.make_scope(), _asgi.receive, _asgi.discard)
        while not coordinator.in_flight.count:
            await anyio.lowlevel.checkpoint()
        tg.start_soon(coordinator.shutdown)
        while not coordinator.draining:
            await anyio.lowlevel.checkpoint()
        await anyio.sleep(random.uniform(0, 0.002))  # noqa: S311 - the drain now waits
        release.set()
    return flushed[0] - ended[0]


def request_ending_at_random(started: anyio.Event, ended: list[float]) -> _asgi.App:
    """An app whose request ends at a random point between two polls, and says when."""

    async def app(scope: _asgi.Scope, receive: _asgi.Receive, send: _asgi.Send) -> None:
        started.set()
        await anyio.sleep(random.uniform(0, POLL))  # noqa: S311
        await send(_asgi.START)
        await send(_asgi.BODY)
        ended.append(time.perf_counter())

    return app


async def polling_trial(into: list[float]) -> None:
    """A pure-ASGI counter and a drain loop that polls it every 100 ms."""
    started = anyio.Event()
    ended: list[float] = []
    app = request_ending_at_random(started, ended)

    counter = _asgi.PureCounter(app)
    async with anyio.create_task_group() as tg:
        tg.start_soon(counter, _asgi.make_scope(), _asgi.receive, _asgi.discard)
        await started.wait()
        while counter.in_flight:  # noqa: ASYNC110 - polling is what this baseline is
            await anyio.sleep(POLL)
        into.append(time.perf_counter() - ended[0])


async def svc_infra_trial(into: list[float]) -> None:
    """svc-infra: its middleware counts, its lifespan shutdown drains."""
    module = peers.svc_infra_shutdown()
    assert module is not None  # noqa: S101 - checked by the caller
    started = anyio.Event()
    ended: list[float] = []
    app = request_ending_at_random(started, ended)

    state_app = Starlette()
    module.install_graceful_shutdown(state_app, grace_seconds=10)
    middleware = module.InflightTrackerMiddleware(app)
    scope = _asgi.make_scope()
    scope["app"] = state_app
    async with anyio.create_task_group() as tg:
        async with state_app.router.lifespan_context(state_app):
            tg.start_soon(middleware, scope, _asgi.receive, _asgi.discard)
            await started.wait()
        into.append(time.perf_counter() - ended[0])


async def batched(trial: object, trials: int, batch: int = 250) -> list[float]:
    """Run polling *trial*s concurrently, *batch* at a time: each waits ~100 ms anyway."""
    samples: list[float] = []
    while len(samples) < trials:
        async with anyio.create_task_group() as tg:
            for _ in range(min(batch, trials - len(samples))):
                tg.start_soon(trial, samples)  # type: ignore[arg-type]
    return samples


async def sequential(trials: int) -> list[float]:
    """graceshut's trials one after the other: each times the wake-up it causes."""
    return [await graceshut_trial() for _ in range(trials)]


def _run(backend: str, config: Config) -> Measure:
    trials = config.pick(1000, 100)
    rounds = config.pick(3, 1)
    ours: list[list[float]] = []
    polls: list[list[float]] = []
    svcs: list[list[float]] = []
    use_svc = backend == "asyncio" and peers.svc_infra_shutdown() is not None
    for _ in range(rounds):
        ours.append(anyio.run(sequential, trials, backend=backend))
        polls.append(anyio.run(batched, polling_trial, trials, backend=backend))
        if use_svc:
            svcs.append(anyio.run(batched, svc_infra_trial, trials, backend=backend))

    def p(samples: list[list[float]], q: float) -> float:
        return median([percentile(s, q) for s in samples]) * 1e3

    graceshut = p(ours, 0.99)
    lines = [
        Line(
            "poll every 100 ms (uvicorn's drain loop)",
            p(polls, 0.99),
            ratio(graceshut, p(polls, 0.99)),
            f"p50 {p(polls, 0.5):.1f} ms",
        )
    ]
    if use_svc:
        lines.append(
            Line(
                f"{peers.label(peers.SVC_INFRA)} lifespan drain",
                p(svcs, 0.99),
                ratio(graceshut, p(svcs, 0.99)),
                f"p50 {p(svcs, 0.5):.1f} ms",
            )
        )
    elif backend == "asyncio":
        lines.append(Line(peers.missing(peers.SVC_INFRA), None))
    return Measure(
        key=f"drain-{backend}",
        title=f"drain: request ends -> drain done, p99, {backend}",
        unit="ms",
        graceshut=graceshut,
        goal=f"<= {GOAL_MS:g} ms p99",
        met=graceshut <= GOAL_MS,
        lines=lines,
        detail=(
            f"graceshut p50 {p(ours, 0.5):.3f} ms, max {p(ours, 1.0):.3f} ms; "
            f"{trials:,} trials x {rounds} rounds, median of the per-round percentiles; "
            "'done' is when the flush phase's first handler starts"
        ),
    )


def measure(config: Config) -> list[Measure]:
    """Drain latency on asyncio and on trio."""
    backends = ["asyncio"] + (["trio"] if version_of("trio") else [])
    return [_run(backend, config) for backend in backends]


if __name__ == "__main__":
    import run

    sys.exit(run.main(["drain", *sys.argv[1:]]))
