"""Added cost per request of graceshut's middleware, in-process (raw ASGI calls, no network).

Timed in this thread's CPU time. Baselines in the same run, rounds interleaved: the
bare app, a pass-through middleware (the floor for any middleware), a hand-written
pure-ASGI counter (the floor for any counting middleware), Starlette's
BaseHTTPMiddleware counter, and the PyPI peers that have a middleware. Reports the
median of several rounds.

The goals are set against those floors: graceshut counts, sheds and can end every
request it serves, so it is held to at most 0.45 us added while serving (the counter
adds about 0.25 us), and 1 us while shutting down, when every response is rebuilt with
``Connection: close``.

    python benchmarks/run.py middleware [--quick]
"""

from __future__ import annotations

import asyncio
import gc
import sys
import time

import _asgi
from _harness import Config, Line, Measure, median, ratio

GOAL_US = 0.45
GOAL_SHUTTING_DOWN_US = 1.0


async def per_request(app: _asgi.App, requests: int) -> float:
    """CPU seconds per request through *app*, scopes made before the clock starts.

    The clock is this thread's CPU time, not the wall clock: while another process has
    the core (a busy machine), nothing is counted, so a round that was preempted does
    not read as a slow one. What other load still moves (caches, frequency) falls on
    every app alike, the rounds being interleaved.
    """
    scopes = [_asgi.make_scope() for _ in range(requests)]
    receive, send = _asgi.receive, _asgi.discard
    gc.collect()
    started = time.thread_time()
    for scope in scopes:
        await app(scope, receive, send)
    return (time.thread_time() - started) / requests


async def interleaved(apps: dict[str, _asgi.App], requests: int, rounds: int) -> dict[str, float]:
    """Median seconds per request for each app, the order rotated every round.

    A slow app (BaseHTTPMiddleware takes ~100 us a request) gets fewer requests per
    round, enough for about 0.2 s, so that it does not stretch the run.
    """
    samples: dict[str, list[float]] = {name: [] for name in apps}
    counts: dict[str, int] = {}
    names = list(apps)
    for name in names:  # warm up: first calls build caches and specialise bytecode
        warm = await per_request(apps[name], min(requests, 2000))
        counts[name] = max(min(requests, 1000), min(requests, int(0.2 / warm)))
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].append(await per_request(apps[name], counts[name]))
    return {name: median(values) for name, values in samples.items()}


async def _measure(config: Config) -> Measure:
    requests = config.pick(50_000, 5_000)
    rounds = config.pick(9, 3)
    bare = _asgi.bare_app
    shutting_down = _asgi.new_coordinator()
    shutting_down.in_flight.shutting_down = True  # the propagation delay's state
    shutting_down.in_flight.refresh()
    apps: dict[str, _asgi.App] = {
        "bare app": bare,
        "graceshut": _asgi.graceshut_middleware(bare),
        "graceshut (shutting down)": _asgi.graceshut_middleware(bare, shutting_down),
    }
    notes: dict[str, str] = {}
    for name, (app, note) in _asgi.wrappers(bare).items():
        apps[name] = app
        notes[name] = note
    result = await interleaved(apps, requests, rounds)
    base = result.pop("bare app")
    added = {name: value - base for name, value in result.items()}
    graceshut = added.pop("graceshut")
    closing = added.pop("graceshut (shutting down)")
    lines = [
        Line(name, value * 1e6, ratio(graceshut, value), notes.get(name, ""))
        for name, value in added.items()
    ]
    lines += [Line(text, None) for text in _asgi.missing_wrappers()]
    return Measure(
        key="middleware",
        title="middleware: added per request (in-process)",
        unit="us",
        graceshut=graceshut * 1e6,
        goal=f"<= {GOAL_US:g} us added; <= {GOAL_SHUTTING_DOWN_US:g} us shutting down",
        met=graceshut * 1e6 <= GOAL_US and closing * 1e6 <= GOAL_SHUTTING_DOWN_US,
        lines=lines,
        detail=(
            f"bare app {base * 1e6:.3f} us/request, graceshut {(base + graceshut) * 1e6:.3f} "
            f"us/request (x{(base + graceshut) / base:.2f}); while shutting down (every "
            f"response gets Connection: close) graceshut adds {closing * 1e6:.3f} us; "
            f"baseline values are what each adds over the bare app; "
            f"{requests:,} requests x {rounds} rounds, median"
        ),
        values={
            "graceshut while shutting down": closing * 1e6,
            "bare app itself (not added: its whole time)": base * 1e6,
        },
    )


def measure(config: Config) -> list[Measure]:
    """The in-process middleware cost, graceshut against every counter we can build."""
    return [asyncio.run(_measure(config))]


if __name__ == "__main__":
    import run

    sys.exit(run.main(["middleware", *sys.argv[1:]]))
