"""Time from the last in-flight request ending to the drain step completing.

Baseline in the same run: a drain loop that polls the in-flight count every 100 ms, as
uvicorn's own shutdown does. Runs on asyncio and trio; prints p50 and p99.

    python benchmarks/drain_latency.py [--trials N]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import anyio

import graceshut


async def graceshut_trial() -> float:
    coordinator = graceshut.Coordinator(
        grace_period=10, safety_margin=1, propagation_delay=0, environ={}
    )
    ended: list[float] = []
    drained: list[float] = []
    release = anyio.Event()

    @coordinator.on_shutdown("flush", name="mark")
    async def mark() -> None:
        drained.append(time.perf_counter())

    async def request() -> None:
        async with coordinator.track("request"):
            await release.wait()
            ended.append(time.perf_counter())

    async with anyio.create_task_group() as tg:
        tg.start_soon(request)
        await anyio.sleep(0)
        tg.start_soon(coordinator.shutdown)
        while not coordinator.draining:
            await anyio.sleep(0)
        await anyio.sleep(0.001)
        release.set()
    return drained[0] - ended[0]


async def polling_trial() -> float:
    in_flight = 1
    ended: list[float] = []

    async def request() -> None:
        nonlocal in_flight
        await anyio.sleep(0.0371)  # ends at an arbitrary point between two polls
        ended.append(time.perf_counter())
        in_flight -= 1

    async with anyio.create_task_group() as tg:
        tg.start_soon(request)
        while in_flight:
            await anyio.sleep(0.1)
        drained = time.perf_counter()
    return drained - ended[0]


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main(trials: int) -> None:
    print(f"# last request ends -> drain done, {trials} trials")
    print(f"# {platform.python_implementation()} {platform.python_version()}, {platform.machine()}")
    print(f"{'backend':<8} {'drain':<22} {'p50 ms':>8} {'p99 ms':>8}")
    for backend in ("asyncio", "trio"):
        samples = [anyio.run(graceshut_trial, backend=backend) for _ in range(trials)]
        polls = [anyio.run(polling_trial, backend=backend) for _ in range(min(trials, 20))]
        for name, data in (("graceshut (event)", samples), ("poll every 100 ms", polls)):
            print(
                f"{backend:<8} {name:<22} {statistics.median(data) * 1e3:>8.3f} "
                f"{percentile(data, 0.99) * 1e3:>8.3f}"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=1000)
    main(parser.parse_args().trials)
