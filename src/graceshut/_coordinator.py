"""The coordinator: registration, triggers and the lifespan around one shutdown run.

The parts are modules of their own: `_registry` keeps the handlers, `_run_state` what
one run changes, `_membership` the pod's other workers, `_sequence` runs the steps,
`_budget` times them and `_signals` chains SIGTERM and SIGINT.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar, overload

import anyio

from ._background import spawn as spawn_tracked
from ._config import Seconds, Settings, resolve_settings
from ._final import FinalFlush
from ._handlers import Handler, HandlerFunc, make_handler
from ._loop import LoopHandle
from ._membership import PodMembership
from ._phases import Phase
from ._registry import DrainHook, Registry, ReportListener, Unsubscribe
from ._report import ShutdownReport
from ._run_state import RunState
from ._sequence import Sequence
from ._signals import SignalChain
from ._tracker import InFlight

if TYPE_CHECKING:
    from collections.abc import Mapping

logger = logging.getLogger("graceshut")

F = TypeVar("F", bound=HandlerFunc)


class Coordinator:
    """Runs the shutdown sequence once, whatever starts it, within one deadline.

    Handlers are registered per phase with `on_shutdown` or `add_handler`; the
    sequence runs on the first trigger (`shutdown`, `trigger`, a signal, the
    shutdown route, the lifespan shutdown) and every later trigger joins it.

    Args:
        grace_period: The pod's ``terminationGracePeriodSeconds``. ``None`` reads
            ``GRACESHUT_GRACE_PERIOD``, else 30.
        safety_margin: Seconds kept back before the grace period ends, for the server's
            own exit. ``None`` reads ``GRACESHUT_SAFETY_MARGIN``, else 1.
        propagation_delay: Seconds the app keeps serving after readiness fails, while
            routers learn that the pod is going. ``None`` reads
            ``GRACESHUT_PROPAGATION_DELAY``, else 5.
        stream_grace: Seconds a response still streaming when the drain begins gets to
            end by itself (it learns of the drain from `draining` or `drain_started`)
            before graceshut ends it. ``None`` reads ``GRACESHUT_STREAM_GRACE``, else 5.
        environ: Where to read the variables (default `os.environ`); for tests.

    Each setting may also be `graceshut.env_default(value)`: your default, which the
    variable still overrides.

    Raises:
        ConfigError: A setting is not a number, negative, or leaves no time.

    Example::

        coordinator = graceshut.Coordinator()

        @coordinator.on_shutdown("flush", timeout=10)
        async def save_cache(ctx: graceshut.ShutdownContext) -> None:
            await cache.persist(timeout=ctx.remaining())
    """

    def __init__(
        self,
        grace_period: Seconds = None,
        safety_margin: Seconds = None,
        propagation_delay: Seconds = None,
        *,
        stream_grace: Seconds = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.settings: Settings = resolve_settings(
            grace_period, safety_margin, propagation_delay, environ, stream_grace
        )
        #: The hot state: flags and in-flight count, read by the middleware per request.
        self.in_flight = InFlight()
        self.drain_started = threading.Event()
        """Set when the drain begins: for sync code (a generator in a worker thread) that
        waits with a timeout, ``coordinator.drain_started.wait(1.0)``."""
        self._registry = Registry()
        self._state = RunState()

    # -- registration -------------------------------------------------------------

    @overload
    def on_shutdown(self, phase: F, /) -> F: ...

    @overload
    def on_shutdown(
        self,
        phase: Phase | str = ...,
        *,
        timeout: float = ...,
        name: str | None = ...,
        once_per_pod: bool = ...,
        fallback: HandlerFunc | None = ...,
    ) -> Callable[[F], F]: ...

    def on_shutdown(
        self,
        phase: Any = Phase.FLUSH,
        *,
        timeout: float = 5.0,
        name: str | None = None,
        once_per_pod: bool = False,
        fallback: HandlerFunc | None = None,
    ) -> Any:
        """Register the decorated function as a shutdown handler.

        The function may be async or sync and may take one argument, the
        `ShutdownContext`. It returns unchanged. Sync ones run in a daemon thread of their
        own, so one stuck past its timeout never holds up the process exit; they cannot
        call back into the event loop (``anyio.from_thread``): make such a handler async.

        Args:
            phase: The `Phase` (or its name) to run in; ``flush`` by default:
                ``@on_shutdown("release")`` or ``@on_shutdown(phase=Phase.RELEASE)``.
            timeout: Seconds the handler may take. Then it is cancelled and recorded as
                timed out; what it does on the cancellation without awaiting (a
                ``finally``, a log line) runs before the sequence goes on, and one that
                swallows the cancellation to await on is left behind.
            name: The name in logs and reports; the function's qualified name by default.
            once_per_pod: With several worker processes (gunicorn, ``uvicorn --workers``),
                run only in the worker that got the first trigger, not in every one: for
                notifying a load balancer or a webhook. Locks, buffers and pools are per
                process: leave it False for them.
            fallback: Runs when the handler fails or times out, async or sync like a
                handler, with the `ShutdownContext` whose ``error`` says why; within
                the same deadline (the handler is cut off a quarter of its time, at
                most 1 s, early to leave it room). Its outcome shows in the report
                beside the handler's (`HandlerResult.fallback`).

        Raises:
            ValueError: Unknown phase, duplicate name, or a timeout that does not fit in
                the grace period.
        """
        if callable(phase) and not isinstance(phase, (str, Phase)):
            self.add_handler(
                phase, timeout=timeout, name=name, once_per_pod=once_per_pod, fallback=fallback
            )
            return phase

        def register(func: F) -> F:
            self.add_handler(
                func,
                phase=phase,
                timeout=timeout,
                name=name,
                once_per_pod=once_per_pod,
                fallback=fallback,
            )
            return func

        return register

    def add_handler(
        self,
        func: HandlerFunc,
        *,
        phase: Phase | str = Phase.FLUSH,
        timeout: float = 5.0,
        name: str | None = None,
        once_per_pod: bool = False,
        fallback: HandlerFunc | None = None,
    ) -> None:
        """Register *func* as a shutdown handler; `on_shutdown` without the decorator."""
        handler = make_handler(
            func, phase, timeout, name, once_per_pod=once_per_pod, fallback=fallback
        )
        if self.shutting_down:
            raise RuntimeError(
                f"cannot register handler {handler.name!r}: shutdown has already started"
            )
        self._registry.add(handler, self.settings)

    def on_report(self, listener: ReportListener) -> ReportListener:
        """Call *listener* with the final `ShutdownReport`, before any waiter wakes.

        Listeners run on the event loop thread and should be quick (write a file, set a
        metric); an exception is logged and ignored. Usable as a decorator.
        """
        self._registry.report_listeners.add(listener)
        return listener

    def on_final_flush(self, name: str, flush: FinalFlush) -> Unsubscribe:
        """Run the sync *flush(report, timeout)* after the report, as the sequence's last step.

        For telemetry that should carry the shutdown's own records (`graceshut.contrib.otel`
        uses it): each flush runs on a daemon thread of its own, all at once, after the
        report listeners; the sequence waits for them until its deadline. One still
        running then is abandoned (never joined) and reported as ``abandoned`` in
        `ShutdownReport.final_flushes`; it never delays the exit.

        Returns:
            A callable that takes the flush back out (idempotent).
        """
        return self._registry.final_flushes.add((name, flush))

    def remove_report_listener(self, listener: ReportListener) -> None:
        """Stop calling *listener* (added with `on_report`); nothing if it is not there."""
        self._registry.report_listeners.remove(listener)

    def forget_run(self) -> None:
        """Forget a finished run and the loop it ran on, keeping the handlers.

        For test harnesses that serve the same app again (`graceshut.testing` does);
        an app in production shuts down once. A run still under way goes on, unseen.
        """
        self.in_flight.reset()
        self.drain_started.clear()
        self._state = RunState()

    @property
    def handlers(self) -> tuple[Handler, ...]:
        """The registered handlers, in registration order."""
        return self._registry.handlers

    # -- state ----------------------------------------------------------------------

    @property
    def shutting_down(self) -> bool:
        """True from the first trigger on: readiness fails from this moment."""
        return self.in_flight.shutting_down

    @property
    def draining(self) -> bool:
        """True from the start of the drain step on: new requests are refused.

        Streams and long-polls check it to end early (from async or sync code, any
        thread); `wait_for_drain` and `drain_started` wait for it.
        """
        return self.in_flight.draining

    @property
    def phase(self) -> Phase | None:
        """The phase running now, or None (before, between announce and drain, after)."""
        return self._state.phase

    @property
    def report(self) -> ShutdownReport | None:
        """The report once the sequence has finished, else None."""
        return self._state.report

    @property
    def reason(self) -> str | None:
        """What started the shutdown, or None before it started."""
        return self._state.reason

    # -- in-flight work -------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def track(self, name: str) -> AsyncIterator[None]:
        """Hold the drain step open while a piece of non-request work runs.

        At the end of the drain's share of the deadline the block is cancelled (its code
        unwinds, as under `anyio.move_on_after`) and the job is reported as abandoned.

        Example::

            async with coordinator.track("nightly-export"):
                await export()
        """
        scope = self.in_flight.start_job(name)
        try:
            with scope:
                yield
        finally:
            self.in_flight.end_job(scope)

    async def wait_for_drain(self) -> None:
        """Return when the drain step begins: time for consumers, loops and streams to stop.

        A long-poll races it against its own wait and answers early, so that its
        client polls again at once, elsewhere ("Streaming and long-lived requests" in
        the docs has the example).
        """
        if self.in_flight.draining:
            return
        event = anyio.Event()
        self._state.drain_waiters.append(event)
        await event.wait()

    def on_drain(self, hook: DrainHook) -> Unsubscribe:
        """Run the async *hook* when the drain begins, alongside the drain handlers.

        Hooks are the drain's own machinery (the middleware closes WebSockets with one):
        no timeout of their own, cut off at the end of the drain, not in the report.

        Returns:
            A callable that unsubscribes the hook (idempotent).
        """
        return self._registry.drain_hooks.add(hook)

    def spawn(
        self,
        func: Callable[..., Awaitable[object]],
        *args: object,
        name: str | None = None,
        timeout: float | None = None,
    ) -> None:
        """Run *func(*args)* as fire-and-forget work that the drain waits for.

        From a request handler (on the loop's thread): counted in flight from this call
        on, as under `track`; cancelled after *timeout* seconds (None: only the drain's
        deadline), its failures logged. *name* shows in logs and the report.
        """
        spawn_tracked(self, self._attached(), func, args, name=name, timeout=timeout)

    # -- triggers -------------------------------------------------------------------

    def attach(self) -> None:
        """Bind to the running event loop so that `trigger` works from signal handlers.

        Call it from async code; the lifespan and `shutdown` do it for you.
        """
        self._attached()

    def _attached(self) -> LoopHandle:
        loop = self._state.loop
        if loop is None:
            loop = self._state.loop = LoopHandle()
            self.in_flight.on_trio = loop.is_trio
            self.in_flight.refresh()
        return loop

    def call_soon_threadsafe(self, func: Callable[[], object]) -> bool:
        """Run *func* soon on the attached loop's thread; safe from signal handlers.

        Returns False, without calling it, when no loop is attached.
        """
        loop = self._state.loop
        if loop is None:
            return False
        loop.call_soon_threadsafe(func)
        return True

    def trigger(self, reason: str, *, pod_wide: bool = False) -> None:
        """Start the sequence in the background if it has not started; never blocks.

        Safe from signal handlers and other threads once `attach` has run. Readiness
        fails before this returns.

        Args:
            reason: What started it, for the logs and the report.
            pod_wide: With several worker processes, start the sequence in every worker
                of the pod and run the once-per-pod handlers here (what the shutdown
                route does). Without it, only this process stops, as when a supervisor
                recycles one worker.

        Raises:
            RuntimeError: No event loop is attached yet.
        """
        loop = self._state.loop
        if loop is None:
            raise RuntimeError(
                "Coordinator.trigger() needs an event loop: call attach() (or run the "
                "lifespan) first, or await shutdown() from async code"
            )
        if self._state.start(reason, self.in_flight, pod_wide=pod_wide):
            loop.call_soon_threadsafe(self._spawn_sequence)

    async def shutdown(self, reason: str = "manual", *, pod_wide: bool = False) -> ShutdownReport:
        """Run the sequence if it has not run, and return its report.

        Every caller, concurrent or later, gets the same `ShutdownReport` and no handler
        runs twice. Cancelling a caller does not cancel the sequence. *pod_wide* is as
        for `trigger`.
        """
        self.attach()
        if self._state.start(reason, self.in_flight, pod_wide=pod_wide):
            self._spawn_sequence()
        return await self.wait()

    async def wait(self) -> ShutdownReport:
        """Wait until the sequence has run, without starting it, and return its report.

        For a server's shutdown trigger: serve until graceshut has drained and finished.
        """
        state = self._state
        if not state.complete:  # the report may be there while the final flushes run
            event = anyio.Event()
            state.waiters.append(event)
            await event.wait()
        assert state.report is not None  # noqa: S101 - set before any waiter wakes
        return state.report

    @contextlib.asynccontextmanager
    async def lifespan(self, *, signals: bool = True) -> AsyncIterator[None]:
        """Serve inside this block; leaving it runs (or joins) the shutdown sequence.

        With *signals*, SIGTERM and SIGINT handlers are installed on entry, chained to the
        ones already there (the server's own), and restored on exit. Framework-agnostic:
        `graceshut.starlette.install` uses it for the ASGI lifespan.
        """
        loop = self._attached()
        chain = SignalChain(self) if signals else None
        state = self._state
        try:
            if chain is not None:
                chain.install()
            state.pod = PodMembership.join()
            if state.pod is not None:
                state.pod.follow(loop, self._trigger_from_sibling)
            yield
            with anyio.CancelScope(shield=True):
                await self.shutdown("lifespan")
        finally:
            if state.pod is not None:
                state.pod.leave()
                state.pod = None
            if chain is not None:
                chain.uninstall()

    def pod_triggered(self) -> bool:
        """True once this worker, or any worker of its pod, started a shutdown."""
        if self.shutting_down:
            return True
        pod = self._state.pod
        return pod is not None and pod.triggered()

    def others_serving(self) -> bool:
        """With several workers per pod: whether a sibling serves on while this one stops.

        True when a supervisor recycles this one worker; False when the whole pod stops,
        and with one process.
        """
        pod = self._state.pod
        return pod is not None and pod.others_serving()

    async def pod_report(self) -> dict[str, Any]:
        """Wait for the sequence and return the whole pod's report as JSON-ready data.

        With one process it is `ShutdownReport.to_dict`; with several worker processes it
        also waits (until the deadline) for every worker's report and lists them under
        ``workers``, and ``ok`` is true only if every worker's run was.
        """
        report = await self.wait()
        data = report.to_dict()
        state = self._state
        if state.pod is None:
            return data
        workers = await state.pod.gather(state.started_monotonic + self.settings.budget)
        data["workers"] = workers
        data["ok"] = all(bool(w.get("ok")) for w in workers)
        return data

    def _trigger_from_sibling(self, reason: str, started_at: float) -> None:
        if self._state.start(reason, self.in_flight, started_at=started_at, from_sibling=True):
            self._spawn_sequence()

    def _spawn_sequence(self) -> None:
        sequence = Sequence(
            self.settings, self._registry, self._state, self.in_flight, self.drain_started
        )
        self._attached().spawn(sequence.run)
