"""Memory per in-flight request with 10,000 requests held open at once.

Each app gets 10,000 concurrent in-process requests whose handler waits on one event;
tracemalloc measures the Python memory in use once they are all parked, against the
moment before they started. The scopes are made before the measurement (the server
makes them for any app). The bare app's figure is the floor: the task and coroutine
any in-flight request costs; each wrapper's own cost is what it adds over that.

    python benchmarks/run.py memory [--quick]
"""

from __future__ import annotations

import asyncio
import gc
import sys
import tracemalloc
from collections.abc import Callable

import _asgi
from _harness import Config, Line, Measure, median, ratio

Factory = Callable[[_asgi.App], _asgi.App]


async def held_open(factory: Factory, requests: int) -> float:
    """Bytes per request while *requests* wait inside the app built by *factory*."""
    release = asyncio.Event()
    all_parked = asyncio.Event()
    parked = 0

    async def waiting(scope: _asgi.Scope, receive: _asgi.Receive, send: _asgi.Send) -> None:
        nonlocal parked
        parked += 1
        if parked == requests:
            all_parked.set()
        await release.wait()
        await send(_asgi.START)
        await send(_asgi.BODY)

    app = factory(waiting)
    scopes = [_asgi.make_scope() for _ in range(requests)]
    for _ in range(10):  # warm up: first calls fill caches that are not per request
        await factory(_asgi.bare_app)(_asgi.make_scope(), _asgi.receive, _asgi.discard)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    tasks = [asyncio.ensure_future(app(s, _asgi.receive, _asgi.discard)) for s in scopes]
    await all_parked.wait()
    gc.collect()
    during = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    release.set()
    await asyncio.gather(*tasks)
    return (during - before) / requests


def measure(config: Config) -> list[Measure]:
    """Bytes each in-flight request costs, graceshut against the other counters."""
    requests = config.pick(10_000, 2_000)
    rounds = config.pick(3, 1)
    factories: dict[str, tuple[Factory, str]] = {
        "bare app": (lambda app: app, ""),
        "graceshut": (_asgi.graceshut_middleware, ""),
    }
    for name, (_, note) in _asgi.wrappers(_asgi.bare_app).items():
        factories[name] = (_wrapper_factory(name), note)
    samples: dict[str, list[float]] = {name: [] for name in factories}
    for _ in range(rounds):
        for name, (factory, _) in factories.items():
            samples[name].append(asyncio.run(held_open(factory, requests)))
    result = {name: median(values) for name, values in samples.items()}
    bare = result.pop("bare app")
    graceshut = result.pop("graceshut") - bare
    lines = [
        Line(name, value - bare, ratio(graceshut, value - bare), factories[name][1])
        for name, value in result.items()
    ]
    lines += [Line(text, None) for text in _asgi.missing_wrappers()]
    return [
        Measure(
            key="memory",
            title=f"memory per in-flight request ({requests:,} held)",
            unit="B",
            graceshut=graceshut,
            goal="report bytes/request",
            met=None,
            lines=lines,
            detail=(
                f"added over the bare app, whose in-flight request (task + coroutine) costs "
                f"{bare:,.0f} B; graceshut's total {bare + graceshut:,.0f} B/request; "
                f"tracemalloc, asyncio, {requests:,} requests held at once, {rounds} rounds, median"
            ),
        )
    ]


def _wrapper_factory(name: str) -> Factory:
    def build(app: _asgi.App) -> _asgi.App:
        return _asgi.wrappers(app)[name][0]

    return build


if __name__ == "__main__":
    import run

    sys.exit(run.main(["memory", *sys.argv[1:]]))
