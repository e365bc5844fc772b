"""Where `GracefulShutdownMiddleware.__call__` spends its time while serving, part by part.

Three views of today's HTTP hot path (a request while serving on asyncio), in-process:

1. Parts: subclasses of the real middleware whose ``__call__`` is a copy of its hot path
   with one part removed ("ablation": the time that part costs) or built another way
   ("alternative": what the part would cost done differently), timed against the bare
   app, a copy with nothing changed and the real middleware in the same interleaved
   rounds. The unchanged copy must read as the real one: that checks the copy.
2. Memory: what a held-open request keeps alive, for the variants that change it.
3. Lines: py-spy samples a loop of requests through the real middleware and each
   sample is charged to the line it was executing (its leaf frame). Skipped, saying
   so, when py-spy is not installed (it is, in benchmarks/.venv).

The copies import the middleware's private parts, so a change of the middleware that
leaves them behind fails this command (tests/test_benchmarks.py runs it).

    python3 benchmarks/run.py profile [--quick]
"""

from __future__ import annotations

import asyncio
import collections
import functools
import re
import shutil
import subprocess
import sys
import tempfile
import time
from asyncio import CancelledError
from pathlib import Path
from types import MethodType

import _asgi
from _harness import BENCHMARKS, Config, save_result
from memory import held_open
from middleware_overhead import interleaved

import graceshut
from graceshut._http._middleware import GracefulShutdownMiddleware, _was_cut


class Copy(GracefulShutdownMiddleware):
    """The hot path as it is: the check that a copy reads as the real middleware."""

    async def __call__(self, scope: _asgi.Scope, receive: _asgi.Receive, send: _asgi.Send) -> None:
        state = self._state
        if scope["type"] == "http" and scope["path"] not in self.routes and state.fast:
            send = MethodType(self._send, send)
            state.started += 1
            try:
                await self.app(scope, receive, send)
            except CancelledError:
                if not _was_cut(state):
                    raise
                await self._answer_cut(send)
            finally:
                state.ended += 1
                if state.watched:
                    await self._settle(send)
            return
        await super().__call__(scope, receive, send)


class NoRouteLookup(GracefulShutdownMiddleware):
    """Without the route lookup: the probes and the shutdown route would be counted."""

    async def __call__(self, scope: _asgi.Scope, receive: _asgi.Receive, send: _asgi.Send) -> None:
        state = self._state
        if scope["type"] == "http" and state.fast:
            send = MethodType(self._send, send)
            state.started += 1
            try:
                await self.app(scope, receive, send)
            except CancelledError:
                if not _was_cut(state):
                    raise
                await self._answer_cut(send)
            finally:
                state.ended += 1
                if state.watched:
                    await self._settle(send)
            return
        await super().__call__(scope, receive, send)


class NoSendWrapper(GracefulShutdownMiddleware):
    """Without the send wrapper: a response started after the trigger would not close."""

    async def __call__(self, scope: _asgi.Scope, receive: _asgi.Receive, send: _asgi.Send) -> None:
        state = self._state
        if scope["type"] == "http" and scope["path"] not in self.routes and state.fast:
            state.started += 1
            try:
                await self.app(scope, receive, send)
            except CancelledError:
                if not _was_cut(state):
                    raise
                await self._answer_cut(send)
            finally:
                state.ended += 1
                if state.watched:
                    await self._settle(send)
            return
        await super().__call__(scope, receive, send)


class NoCounter(GracefulShutdownMiddleware):
    """Without the counter: the drain could not wait for the request."""

    async def __call__(self, scope: _asgi.Scope, receive: _asgi.Receive, send: _asgi.Send) -> None:
        state = self._state
        if scope["type"] == "http" and scope["path"] not in self.routes and state.fast:
            send = MethodType(self._send, send)
            try:
                await self.app(scope, receive, send)
            except CancelledError:
                if not _was_cut(state):
                    raise
                await self._answer_cut(send)
            return
        await super().__call__(scope, receive, send)


class NoCutAnswer(GracefulShutdownMiddleware):
    """Without the ``except``: a request ended at the deadline would get no 503."""

    async def __call__(self, scope: _asgi.Scope, receive: _asgi.Receive, send: _asgi.Send) -> None:
        state = self._state
        if scope["type"] == "http" and scope["path"] not in self.routes and state.fast:
            send = MethodType(self._send, send)
            state.started += 1
            try:
                await self.app(scope, receive, send)
            finally:
                state.ended += 1
                if state.watched:
                    await self._settle(send)
            return
        await super().__call__(scope, receive, send)


class PartialWrapper(GracefulShutdownMiddleware):
    """The send wrapper built with `functools.partial` instead of `types.MethodType`."""

    async def __call__(self, scope: _asgi.Scope, receive: _asgi.Receive, send: _asgi.Send) -> None:
        state = self._state
        if scope["type"] == "http" and scope["path"] not in self.routes and state.fast:
            send = functools.partial(self._send, send)
            state.started += 1
            try:
                await self.app(scope, receive, send)
            except CancelledError:
                if not _was_cut(state):
                    raise
                await self._answer_cut(send)
            finally:
                state.ended += 1
                if state.watched:
                    await self._settle(send)
            return
        await super().__call__(scope, receive, send)


class ClosureWrapper(GracefulShutdownMiddleware):
    """The send wrapper as a closure made per request."""

    async def __call__(self, scope: _asgi.Scope, receive: _asgi.Receive, send: _asgi.Send) -> None:
        state = self._state
        if scope["type"] == "http" and scope["path"] not in self.routes and state.fast:
            closing, server_send = self._send, send

            def send(message: _asgi.Message) -> object:  # type: ignore[misc]
                return closing(server_send, message)

            state.started += 1
            try:
                await self.app(scope, receive, send)  # type: ignore[arg-type]
            except CancelledError:
                if not _was_cut(state):
                    raise
                await self._answer_cut(send)  # type: ignore[arg-type]
            finally:
                state.ended += 1
                if state.watched:
                    await self._settle(send)  # type: ignore[arg-type]
            return
        await super().__call__(scope, receive, send)


class PassThrough(GracefulShutdownMiddleware):
    """Only calls the app: the floor of any middleware."""

    async def __call__(self, scope: _asgi.Scope, receive: _asgi.Receive, send: _asgi.Send) -> None:
        await self.app(scope, receive, send)


REAL = "the real middleware"
COPY = "copy of the hot path"
VARIANTS: dict[str, tuple[type[GracefulShutdownMiddleware], str]] = {
    COPY: (Copy, "check: reads as the real one"),
    "without the route lookup": (NoRouteLookup, "ablation: probes would count"),
    "without the send wrapper": (NoSendWrapper, "ablation: loses Connection: close"),
    "without the counter": (NoCounter, "ablation: loses the drain"),
    "without the except CancelledError": (NoCutAnswer, "ablation: no 503 for a cut request"),
    "send wrapper as functools.partial": (PartialWrapper, "alternative"),
    "send wrapper as a closure": (ClosureWrapper, "alternative"),
    "pass-through only": (PassThrough, "ablation: the floor of any middleware"),
}
MEMORY = (REAL, "without the send wrapper", "send wrapper as functools.partial")


async def _parts(config: Config) -> dict[str, object]:
    requests = config.pick(50_000, 2_000)
    rounds = config.pick(15, 2)
    bare = _asgi.bare_app
    apps: dict[str, _asgi.App] = {"bare app": bare, REAL: _asgi.graceshut_middleware(bare)}
    for name, (cls, _) in VARIANTS.items():
        apps[name] = _asgi.graceshut_middleware(bare, cls=cls)
    result = await interleaved(apps, requests, rounds)
    base, copy = result["bare app"], result[COPY]
    rows = [
        {
            "variant": name,
            "kind": VARIANTS[name][1] if name in VARIANTS else "",
            "us_per_request": value * 1e6,
            "added_us": (value - base) * 1e6,
            "vs_copy_ns": (value - copy) * 1e9,
        }
        for name, value in result.items()
        if name != "bare app"
    ]
    print(f"parts of the hot path: {requests:,} requests x {rounds} rounds, median")
    print(f"{'variant':<36} {'us/req':>7} {'added':>7} {'vs copy':>9}  kind")
    for row in rows:
        print(
            f"{row['variant']:<36} {row['us_per_request']:>7.3f} {row['added_us']:>7.3f} "
            f"{row['vs_copy_ns']:>+7.0f}ns  {row['kind']}"
        )
    return {"requests": requests, "rounds": rounds, "bare_us": base * 1e6, "variants": rows}


def _memory(config: Config) -> dict[str, object]:
    """Bytes per held-open request, added over the bare app's."""
    requests = config.pick(10_000, 1_000)

    def factory(name: str) -> _asgi.App:
        if name == REAL:
            return _asgi.graceshut_middleware  # type: ignore[return-value]
        cls = VARIANTS[name][0]
        return functools.partial(_asgi.graceshut_middleware, cls=cls)  # type: ignore[return-value]

    bare = asyncio.run(held_open(lambda app: app, requests))
    rows = [
        {"variant": name, "bytes": asyncio.run(held_open(factory(name), requests)) - bare}  # type: ignore[arg-type]
        for name in MEMORY
    ]
    print(f"\nmemory per in-flight request, {requests:,} held at once (added over bare)")
    for row in rows:
        print(f"{row['variant']:<36} {row['bytes']:>6.0f} B")
    return {"requests": requests, "rows": rows}


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


def _sample(seconds: float) -> tuple[list[str], float] | str:
    """py-spy's raw samples of `spin`, and its us/request; or why there are none."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(py_spy).exists():
        return "py-spy not installed (it is in benchmarks/.venv)"
    with tempfile.TemporaryDirectory() as tmp:
        raw, speed = Path(tmp) / "samples.txt", Path(tmp) / "us_per_request.txt"
        command = [
            py_spy, "record", "--nonblocking", "--rate", "997", "--format", "raw",
            "--full-filenames", "--output", str(raw), "--",
            sys.executable, str(BENCHMARKS / "profile_request_path.py"),
            "--spin", str(seconds), str(speed),
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0 or not raw.exists():
            return f"py-spy failed: {done.stderr.strip()[-300:]}"
        return raw.read_text().splitlines(), float(speed.read_text())


def _lines(config: Config, added_us: float) -> dict[str, object]:
    seconds = config.pick_float(10.0, 2.0)
    sampled = _sample(seconds)
    if isinstance(sampled, str):
        print(f"\nline-level view skipped: {sampled}")
        return {"skipped": sampled}
    samples, us_per_request = sampled
    package = str(Path(graceshut.__file__).parent)
    by_line: collections.Counter[tuple[str, str, int]] = collections.Counter()
    inside = 0
    for entry in samples:
        stack, _, count_text = entry.rpartition(" ")
        frames = stack.split(";")
        leaf = _FRAME.match(frames[-1])
        if leaf is None or leaf["func"] == "<module>" or not any(package in f for f in frames):
            continue  # outside a request: the loop, building scopes, importing
        inside += int(count_text)
        if leaf["file"].startswith(package):
            by_line[leaf["file"], leaf["func"], int(leaf["line"])] += int(count_text)
    own = sum(by_line.values())
    if not own:
        print("\nline-level view skipped: no samples in graceshut's code")
        return {"skipped": "no samples in graceshut's code"}
    rows = [
        {
            "share": count / own,
            "ns": count / own * added_us * 1e3,
            "where": f"{Path(path).name}:{line}",
            "function": func.replace("GracefulShutdownMiddleware.", ""),
            "source": _source_line(path, line),
        }
        for (path, func, line), count in by_line.most_common(12)
    ]
    print(f"\nline-level (py-spy, {seconds:g} s): {own / inside:.0%} of samples in graceshut")
    for row in rows:
        print(f"{row['share']:>6.1%} {row['ns']:>5.0f} ns  {row['where']:<20} {row['source']}")
    return {
        "seconds": seconds,
        "us_per_request": us_per_request,
        "share_in_graceshut": own / inside,
        "rows": rows,
    }


def main(config: Config, results: Path | None = None, note: str = "") -> int:
    """Print the three views and save them as ``<results>/profile.json``."""
    parts = asyncio.run(_parts(config))
    real = next(r for r in parts["variants"] if r["variant"] == REAL)  # type: ignore[attr-defined]
    memory = _memory(config)
    lines = _lines(config, real["added_us"])
    command = "python3 benchmarks/run.py profile" + (" --quick" if config.quick else "")
    payload = {"parts": parts, "memory": memory, "lines": lines}
    save_result(results, "profile", command, payload, quick=config.quick, note=note)
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--spin"]:
        spin(float(sys.argv[2]), Path(sys.argv[3]))
    else:
        import run

        sys.exit(run.main(["profile", *sys.argv[1:]]))
