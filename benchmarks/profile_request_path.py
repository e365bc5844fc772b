"""Where `GracefulShutdownMiddleware.__call__` spends its time, and what would cut it.

Three views of the HTTP request path, in-process (no network):

1. Variants: private copies of the middleware's HTTP path, each changed in one way,
   timed against the bare app and the real middleware in the same interleaved rounds.
   "ablation" variants remove a part to price it; "proposal" variants keep the
   behaviour and do the same work more cheaply.
2. Memory: what a held-open request keeps alive under the variants that change it.
3. Lines: py-spy samples a loop of requests through the real middleware and each
   sample is charged to the line it was executing (its leaf frame), which gives a
   line-level split of the added cost with no instrumentation overhead.

    python benchmarks/run.py profile [--quick]
"""

from __future__ import annotations

import asyncio
import collections
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import _asgi
from _harness import BENCHMARKS, Config
from memory import held_open
from middleware_overhead import interleaved

import graceshut
from graceshut._http._middleware import _with_connection_close


class _Base:
    """What every copy shares with the real middleware: the app, coordinator, routes."""

    def __init__(self, app: _asgi.App, coordinator: graceshut.Coordinator) -> None:
        real = _asgi.graceshut_middleware(app, coordinator)
        self.app = app
        self.coordinator = coordinator
        self.routes = real.routes
        self._refusal_headers = real._refusal_headers  # noqa: SLF001
        self._refusal_body = real._refusal_body  # noqa: SLF001

    async def _refuse(self, send: _asgi.Send) -> None:
        await send({"type": "http.response.start", "status": 503, "headers": self._refusal_headers})
        await send({"type": "http.response.body", "body": self._refusal_body})


class Copy(_Base):
    """The HTTP path of `GracefulShutdownMiddleware.__call__` as it is (sanity check)."""

    async def __call__(self, scope: _asgi.Scope, receive: _asgi.Receive, send: _asgi.Send) -> None:
        if scope["type"] == "http":
            route = self.routes.get(scope["path"])
            if route is not None:
                await route(scope, receive, send)
                return
            coordinator = self.coordinator
            if coordinator.draining:
                await self._refuse(send)
                return
            in_flight = coordinator.in_flight
            in_flight.count += 1
            try:

                async def send_closing(message: _asgi.Message) -> None:
                    if coordinator._shutting_down and message["type"] == "http.response.start":  # noqa: SLF001
                        message = _with_connection_close(message)
                    await send(message)

                await self.app(scope, receive, send_closing)
            finally:
                in_flight.exit()


class PlainSend(_Base):
    """Proposal A: the wrapper is a plain function that returns `send(...)`'s awaitable.

    The app awaits what it returns, so no coroutine is created and resumed for the
    wrapper on each message; the behaviour is the same.
    """

    async def __call__(self, scope: _asgi.Scope, receive: _asgi.Receive, send: _asgi.Send) -> None:
        if scope["type"] == "http":
            route = self.routes.get(scope["path"])
            if route is not None:
                await route(scope, receive, send)
                return
            coordinator = self.coordinator
            if coordinator.draining:
                await self._refuse(send)
                return
            in_flight = coordinator.in_flight
            in_flight.count += 1
            try:

                def send_closing(message: _asgi.Message) -> object:
                    if coordinator._shutting_down and message["type"] == "http.response.start":  # noqa: SLF001
                        message = _with_connection_close(message)
                    return send(message)

                await self.app(scope, receive, send_closing)  # type: ignore[arg-type]
            finally:
                in_flight.exit()


class InlineExit(_Base):
    """Proposal B: the decrement inlined, no `InFlight.exit()` method call."""

    async def __call__(self, scope: _asgi.Scope, receive: _asgi.Receive, send: _asgi.Send) -> None:
        if scope["type"] == "http":
            route = self.routes.get(scope["path"])
            if route is not None:
                await route(scope, receive, send)
                return
            coordinator = self.coordinator
            if coordinator.draining:
                await self._refuse(send)
                return
            in_flight = coordinator.in_flight
            in_flight.count += 1
            try:

                async def send_closing(message: _asgi.Message) -> None:
                    if coordinator._shutting_down and message["type"] == "http.response.start":  # noqa: SLF001
                        message = _with_connection_close(message)
                    await send(message)

                await self.app(scope, receive, send_closing)
            finally:
                in_flight.count -= 1
                if not in_flight.count and in_flight.waker is not None:
                    in_flight.wake()


class PlainSendInlineExit(_Base):
    """Proposals A + B together."""

    async def __call__(self, scope: _asgi.Scope, receive: _asgi.Receive, send: _asgi.Send) -> None:
        if scope["type"] == "http":
            route = self.routes.get(scope["path"])
            if route is not None:
                await route(scope, receive, send)
                return
            coordinator = self.coordinator
            if coordinator.draining:
                await self._refuse(send)
                return
            in_flight = coordinator.in_flight
            in_flight.count += 1
            try:

                def send_closing(message: _asgi.Message) -> object:
                    if coordinator._shutting_down and message["type"] == "http.response.start":  # noqa: SLF001
                        message = _with_connection_close(message)
                    return send(message)

                await self.app(scope, receive, send_closing)  # type: ignore[arg-type]
            finally:
                in_flight.count -= 1
                if not in_flight.count and in_flight.waker is not None:
                    in_flight.wake()


class SlotsSender:
    """A per-request sender object instead of a closure (for proposal C)."""

    __slots__ = ("coordinator", "send")

    def __init__(self, coordinator: graceshut.Coordinator, send: _asgi.Send) -> None:
        self.coordinator = coordinator
        self.send = send

    def __call__(self, message: _asgi.Message) -> object:
        if self.coordinator._shutting_down and message["type"] == "http.response.start":  # noqa: SLF001
            message = _with_connection_close(message)
        return self.send(message)


class SlotsObject(_Base):
    """Proposal C: a small __slots__ object as the wrapper, plain call, inlined exit."""

    async def __call__(self, scope: _asgi.Scope, receive: _asgi.Receive, send: _asgi.Send) -> None:
        if scope["type"] == "http":
            route = self.routes.get(scope["path"])
            if route is not None:
                await route(scope, receive, send)
                return
            coordinator = self.coordinator
            if coordinator.draining:
                await self._refuse(send)
                return
            in_flight = coordinator.in_flight
            in_flight.count += 1
            try:
                await self.app(scope, receive, SlotsSender(coordinator, send))  # type: ignore[arg-type]
            finally:
                in_flight.count -= 1
                if not in_flight.count and in_flight.waker is not None:
                    in_flight.wake()


def _send_closing(
    coordinator: graceshut.Coordinator, send: _asgi.Send, message: _asgi.Message
) -> object:
    if coordinator._shutting_down and message["type"] == "http.response.start":  # noqa: SLF001
        message = _with_connection_close(message)
    return send(message)


class PartialSend(_Base):
    """Proposal D: `functools.partial` of a module-level plain function, inlined exit.

    No closure cells, no per-message coroutine; the partial is made and called in C.
    """

    async def __call__(self, scope: _asgi.Scope, receive: _asgi.Receive, send: _asgi.Send) -> None:
        if scope["type"] == "http":
            route = self.routes.get(scope["path"])
            if route is not None:
                await route(scope, receive, send)
                return
            coordinator = self.coordinator
            if coordinator.draining:
                await self._refuse(send)
                return
            in_flight = coordinator.in_flight
            in_flight.count += 1
            try:
                await self.app(scope, receive, partial(_send_closing, coordinator, send))  # type: ignore[arg-type]
            finally:
                in_flight.count -= 1
                if not in_flight.count and in_flight.waker is not None:
                    in_flight.wake()


class NoRoutes(_Base):
    """Ablation: no route lookup (prices `self.routes.get(scope["path"])`)."""

    async def __call__(self, scope: _asgi.Scope, receive: _asgi.Receive, send: _asgi.Send) -> None:
        if scope["type"] == "http":
            coordinator = self.coordinator
            if coordinator.draining:
                await self._refuse(send)
                return
            in_flight = coordinator.in_flight
            in_flight.count += 1
            try:

                async def send_closing(message: _asgi.Message) -> None:
                    if coordinator._shutting_down and message["type"] == "http.response.start":  # noqa: SLF001
                        message = _with_connection_close(message)
                    await send(message)

                await self.app(scope, receive, send_closing)
            finally:
                in_flight.exit()


class NoWrapper(_Base):
    """Ablation: the app gets the server's `send` (prices the closure and its frames).

    Not a proposal as it stands: a response that starts after the trigger would lack
    ``Connection: close``.
    """

    async def __call__(self, scope: _asgi.Scope, receive: _asgi.Receive, send: _asgi.Send) -> None:
        if scope["type"] == "http":
            route = self.routes.get(scope["path"])
            if route is not None:
                await route(scope, receive, send)
                return
            coordinator = self.coordinator
            if coordinator.draining:
                await self._refuse(send)
                return
            in_flight = coordinator.in_flight
            in_flight.count += 1
            try:
                await self.app(scope, receive, send)
            finally:
                in_flight.exit()


class NoCounter(_Base):
    """Ablation: no in-flight count (prices the increment, try/finally and exit)."""

    async def __call__(self, scope: _asgi.Scope, receive: _asgi.Receive, send: _asgi.Send) -> None:
        if scope["type"] == "http":
            route = self.routes.get(scope["path"])
            if route is not None:
                await route(scope, receive, send)
                return
            coordinator = self.coordinator
            if coordinator.draining:
                await self._refuse(send)
                return

            async def send_closing(message: _asgi.Message) -> None:
                if coordinator._shutting_down and message["type"] == "http.response.start":  # noqa: SLF001
                    message = _with_connection_close(message)
                await send(message)

            await self.app(scope, receive, send_closing)


class PassThrough:
    """Ablation: a middleware that only awaits the app (the floor for any wrapper)."""

    def __init__(self, app: _asgi.App, coordinator: graceshut.Coordinator) -> None:
        self.app = app

    async def __call__(self, scope: _asgi.Scope, receive: _asgi.Receive, send: _asgi.Send) -> None:
        await self.app(scope, receive, send)


VARIANTS: dict[str, tuple[type, str]] = {
    "copy of the current code": (Copy, "sanity: should match the real middleware"),
    "A: send wrapper as a plain def": (PlainSend, "proposal, same behaviour"),
    "B: exit() inlined": (InlineExit, "proposal, same behaviour"),
    "A+B": (PlainSendInlineExit, "proposal, same behaviour"),
    "C: __slots__ sender + B": (SlotsObject, "proposal, same behaviour"),
    "D: functools.partial sender + B": (PartialSend, "proposal, same behaviour"),
    "without the route lookup": (NoRoutes, "ablation"),
    "without the send wrapper": (NoWrapper, "ablation: loses Connection: close"),
    "without the counter": (NoCounter, "ablation: loses the drain"),
    "pass-through only": (PassThrough, "ablation: the floor of any wrapper"),
}


async def _variants(config: Config) -> float:
    """Print the variants' table; return what the real middleware adds, in seconds."""
    requests = config.pick(20_000, 5_000)
    rounds = config.pick(41, 3)
    bare = _asgi.bare_app
    apps: dict[str, _asgi.App] = {
        "bare app": bare,
        "GracefulShutdownMiddleware (real)": _asgi.graceshut_middleware(bare),
    }
    for name, (cls, _) in VARIANTS.items():
        apps[name] = cls(bare, _asgi.new_coordinator())
    result = await interleaved(apps, requests, rounds)
    base = result["bare app"]
    real = result["GracefulShutdownMiddleware (real)"]
    copy = result["copy of the current code"]
    print(f"variants of the HTTP path: {requests:,} requests x {rounds} rounds, median")
    print(f"{'variant':<36} {'us/req':>7} {'added':>7} {'vs copy':>8}  kind")
    for name, value in result.items():
        kind = VARIANTS.get(name, (None, ""))[1]
        print(
            f"{name:<36} {value * 1e6:>7.3f} {(value - base) * 1e6:>7.3f} "
            f"{(value - copy) * 1e9:>+6.0f}ns  {kind}"
        )
    print("(differences within about 50 ns are run-to-run noise on a shared VM)")
    return real - base


# -- line-level sampling ---------------------------------------------------------

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*):(?P<line>\d+)\)$")


def spin(seconds: float, report: Path) -> None:
    """Send requests through the real middleware for *seconds* (py-spy watches)."""

    async def loop() -> float:
        app = _asgi.graceshut_middleware(_asgi.bare_app)
        receive, send = _asgi.receive, _asgi.discard
        done = 0
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            for scope in [_asgi.make_scope() for _ in range(10_000)]:
                await app(scope, receive, send)
            done += 10_000
        return (time.perf_counter() - started) / done

    report.write_text(f"{asyncio.run(loop()) * 1e6:.3f}")


def _source_line(path: str, line: int) -> str:
    try:
        return Path(path).read_text().splitlines()[line - 1].strip()
    except (OSError, IndexError):
        return "?"


def _lines(config: Config, added: float) -> None:
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(py_spy).exists():
        print("line-level view skipped: py-spy not installed (pip install py-spy)")
        return
    seconds = config.pick_float(10.0, 2.0)
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "samples.txt"
        command = [
            py_spy, "record", "--nonblocking", "--rate", "997", "--format", "raw",
            "--full-filenames", "--output", str(raw), "--",
            sys.executable, str(BENCHMARKS / "profile_request_path.py"),
            "--spin", str(seconds), str(Path(tmp) / "us_per_request.txt"),
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0 or not raw.exists():
            print(f"line-level view skipped: py-spy failed: {done.stderr.strip()[-300:]}")
            return
        us_per_request = float((Path(tmp) / "us_per_request.txt").read_text())
        samples = raw.read_text().splitlines()
    package = str(Path(graceshut.__file__).parent)
    by_line: collections.Counter[tuple[str, str, int]] = collections.Counter()
    by_place: collections.Counter[str] = collections.Counter()
    for entry in samples:
        stack, _, count_text = entry.rpartition(" ")
        frames = stack.split(";")
        if not any(package in frame for frame in frames):
            continue  # outside a request: the loop, building scopes, start-up
        leaf = _FRAME.match(frames[-1])
        if leaf is None:
            continue
        count = int(count_text)
        if leaf["func"] == "<module>":
            continue  # importing, not serving
        if leaf["file"].startswith(package):
            by_line[leaf["file"], leaf["func"], int(leaf["line"])] += count
            by_place["graceshut"] += count
        else:
            by_place[f"{Path(leaf['file']).name}:{leaf['func']}"] += count
    own = by_place["graceshut"]
    inside = sum(by_place.values())
    if not own:
        print("line-level view skipped: no samples in graceshut's code")
        return
    print()
    print(
        f"line-level (py-spy, {seconds:g} s, {us_per_request:.3f} us/request while sampled): "
        f"{inside:,} samples inside requests, {own:,} ({own / inside:.0%}) in graceshut's own "
        f"lines; the rest in the app and the server's send:"
    )
    shown = [(k, v) for k, v in by_place.most_common() if v / inside >= 0.01]
    print("  " + ", ".join(f"{k} {v / inside:.0%}" for k, v in shown))
    print(f"graceshut's share by line, and ns/request = share x the {added * 1e9:.0f} ns it adds:")
    print(f"{'share':>6} {'ns':>5}  {'line':<20} {'function':<26} source")
    for (path, func, line), count in by_line.most_common(20):
        share = count / own
        function = func.replace("GracefulShutdownMiddleware.", "").replace(".<locals>", "")
        print(
            f"{share:>6.1%} {share * added * 1e9:>5.0f}  {Path(path).name + ':' + str(line):<20} "
            f"{function:<26} {_source_line(path, line)[:60]}"
        )


def _unwrapped(app: _asgi.App) -> _asgi.App:
    return app


def _variant_factory(cls: type) -> Callable[[_asgi.App], _asgi.App]:
    def build(app: _asgi.App) -> _asgi.App:
        wrapped: _asgi.App = cls(app, _asgi.new_coordinator())
        return wrapped

    return build


def _memory(config: Config) -> None:
    """Bytes per held-open request for the variants that change what a request keeps."""
    requests = config.pick(10_000, 2_000)
    print()
    print(f"memory per in-flight request, {requests:,} held at once (tracemalloc, added over bare)")
    bare = asyncio.run(held_open(_unwrapped, requests))
    names = [
        "copy of the current code",
        "A+B",
        "C: __slots__ sender + B",
        "D: functools.partial sender + B",
        "without the send wrapper",
    ]
    for name in names:
        cls = VARIANTS[name][0]
        value = asyncio.run(held_open(_variant_factory(cls), requests))
        print(f"{name:<36} {value - bare:>6.0f} B")


def main(config: Config) -> int:
    """Print the three views."""
    added = asyncio.run(_variants(config))
    _memory(config)
    _lines(config, added)
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--spin"]:
        spin(float(sys.argv[2]), Path(sys.argv[3]))
    else:
        import run

        sys.exit(run.main(["profile", *sys.argv[1:]]))
