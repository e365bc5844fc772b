"""Test your graceshut wiring in your own suite: no real signals, short timings.

Works under anyio's pytest plugin and under pytest-asyncio alike: nothing here needs a
particular plugin, only a running event loop. The pytest plugin (loaded automatically
when graceshut is installed) offers the same as fixtures: `graceshut_serve` and
`graceshut_fast_env`.

Example::

    import graceshut.testing
    from myapp import app, coordinator

    async def test_cache_is_saved_on_shutdown():
        async with graceshut.testing.serve(app, coordinator) as harness:
            await harness.client.get("/hit/a")     # httpx, if installed
            report = await harness.shutdown()      # what a preStop call does
        assert report.ok
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import anyio

from ._core._config import Settings, resolve_settings
from ._process import _watchdog
from ._process._signals import signals_enabled

if TYPE_CHECKING:
    from ._core._coordinator import Coordinator
    from ._core._report import ShutdownReport
    from ._http._responses import ASGIApp

__all__ = ["AppHarness", "LifespanError", "fast_settings", "serve"]


class LifespanError(RuntimeError):
    """The app's lifespan startup or shutdown failed; the message is the app's."""


@contextlib.contextmanager
def fast_settings(
    coordinator: Coordinator,
    *,
    grace_period: float = 5.0,
    safety_margin: float = 0.5,
    propagation_delay: float = 0.0,
) -> Iterator[Settings]:
    """Give *coordinator* test-sized timings inside the block; the old ones come back after.

    Handlers registered with timeouts longer than the shortened grace period keep them;
    they are simply cut at the new deadline.
    """
    saved = coordinator.settings
    coordinator.settings = resolve_settings(
        grace_period, safety_margin, propagation_delay, environ={}, stream_grace=saved.stream_grace
    )
    try:
        yield coordinator.settings
    finally:
        coordinator.settings = saved


class AppHarness:
    """An app whose lifespan is running, with ways to shut it down as a pod would be."""

    def __init__(self, app: ASGIApp, coordinator: Coordinator, *, real_signals: bool) -> None:
        self.app = app
        self.coordinator = coordinator
        self._real_signals = real_signals
        self.client: Any = _make_client(app)
        """An ``httpx.AsyncClient`` bound to the app (None when httpx is not installed)."""
        self.handed_on: list[int] = []
        """Signals graceshut handed on to "the server" after its sequence (real signals)."""

    async def shutdown(self, reason: str = "test") -> ShutdownReport:
        """Run the sequence as a preStop call would, while the app still serves."""
        return await self.coordinator.shutdown(reason)

    @property
    def report(self) -> ShutdownReport | None:
        """The report once the sequence has run."""
        return self.coordinator.report

    def send_signal(self, signum: int = signal.SIGTERM) -> None:
        """Send a real signal to this process; only with ``serve(..., real_signals=True)``."""
        if not self._real_signals:
            raise RuntimeError(
                "real signals are off in tests: use serve(..., real_signals=True) to send "
                "them, or harness.shutdown() to run the sequence without one"
            )
        os.kill(os.getpid(), signum)


@contextlib.asynccontextmanager
async def serve(
    app: ASGIApp,
    coordinator: Coordinator,
    *,
    grace_period: float = 5.0,
    safety_margin: float = 0.5,
    propagation_delay: float = 0.0,
    real_signals: bool = False,
) -> AsyncIterator[AppHarness]:
    """Run *app*'s lifespan around the block, with test timings and no signal handlers.

    Leaving the block runs the lifespan shutdown, as a server does when it stops: the
    sequence runs then if the block did not start it. The report is on
    ``harness.report`` (and ``coordinator.report``) afterwards.

    A coordinator runs its sequence once; one that already ran (an app module shared by
    several tests) is reset to a fresh run first, keeping its handlers.

    Args:
        app: The ASGI app (with `graceshut.starlette.install` applied).
        coordinator: Its coordinator.
        grace_period: Test-sized grace period (see `fast_settings`).
        safety_margin: Test-sized safety margin.
        propagation_delay: Test-sized propagation delay; 0 by default.
        real_signals: Install graceshut's SIGTERM and SIGINT handlers in the test process,
            for tests that send real signals with `AppHarness.send_signal`.
    """
    if coordinator.shutting_down:
        coordinator.forget_run()
    token = signals_enabled.set(real_signals)
    try:
        with fast_settings(
            coordinator,
            grace_period=grace_period,
            safety_margin=safety_margin,
            propagation_delay=propagation_delay,
        ):
            harness = AppHarness(app, coordinator, real_signals=real_signals)
            with _stand_in_server_handlers(harness, enabled=real_signals):
                async with _lifespan(app, coordinator):
                    if harness.client is None:
                        yield harness
                    else:
                        async with harness.client:
                            yield harness
    finally:
        signals_enabled.reset(token)


@contextlib.contextmanager
def _stand_in_server_handlers(harness: AppHarness, *, enabled: bool) -> Iterator[None]:
    """Stand in for a server's SIGTERM/SIGINT handlers, so the test process is not ended."""
    if not enabled:
        yield
        return
    handled = (signal.SIGTERM, signal.SIGINT)
    previous = {s: signal.getsignal(s) for s in handled}

    def record(signum: int, frame: object) -> None:
        harness.handed_on.append(signum)

    for signum in handled:
        signal.signal(signum, record)
    try:
        # The stand-in "server" never exits: the exit watchdog must not end the test run.
        with _watchdog.suppressed():
            yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


class _LifespanDriver:
    """The server's side of the ASGI lifespan protocol, over two memory streams."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.supported = True
        self.to_app, self._app_inbox = anyio.create_memory_object_stream[Any](math.inf)
        self._app_outbox, self.from_app = anyio.create_memory_object_stream[Any](math.inf)

    async def run_app(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}}
        scope["state"] = {}
        try:
            await self.app(scope, self._app_inbox.receive, self._app_outbox.send)
        except Exception as exc:  # the app reports it too (lifespan.*.failed), or not
            await self._app_outbox.send({"type": "app.raised", "message": repr(exc)})
        else:
            await self._app_outbox.send({"type": "app.returned"})

    async def step(self, kind: str) -> str | None:
        """Send ``lifespan.<kind>``; None when it went well, else what went wrong."""
        await self.to_app.send({"type": f"lifespan.{kind}"})
        message = await self.from_app.receive()
        if message["type"] == "app.returned":
            self.supported = False
            return None
        if message["type"] in (f"lifespan.{kind}.failed", "app.raised"):
            return f"lifespan {kind} failed: {message.get('message', '')}"
        if message["type"] != f"lifespan.{kind}.complete":
            return f"unexpected lifespan message {message['type']!r}"
        return None

    def streams(self) -> tuple[Any, ...]:
        return (self.to_app, self._app_inbox, self._app_outbox, self.from_app)


@contextlib.asynccontextmanager
async def _lifespan(app: ASGIApp, coordinator: Coordinator) -> AsyncIterator[None]:
    """Drive the ASGI lifespan protocol: startup on entry, shutdown on exit.

    An app that returns without answering does not support the lifespan: it is served
    without, and leaving the block runs the sequence directly.
    """
    driver = _LifespanDriver(app)
    failure: str | None = None
    async with contextlib.AsyncExitStack() as stack:
        for stream in driver.streams():
            await stack.enter_async_context(stream)
        tg = await stack.enter_async_context(anyio.create_task_group())
        tg.start_soon(driver.run_app)
        failure = await driver.step("startup")
        if failure is None:
            try:
                yield
            finally:
                with anyio.CancelScope(shield=True):
                    if driver.supported:
                        failure = await driver.step("shutdown")
                    else:
                        await coordinator.shutdown("lifespan")
        tg.cancel_scope.cancel()
    if failure is not None:
        raise LifespanError(failure)


def _make_client(app: ASGIApp) -> Any:
    try:
        import httpx  # noqa: PLC0415 - optional
    except ImportError:  # pragma: no cover - httpx is in every test environment we know
        return None
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")
