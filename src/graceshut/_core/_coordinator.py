"""The coordinator: triggers, state and the lifespan around one shutdown run.

The parts are modules of their own: `_registration` takes the handlers into
`_registry`, `_run_state` holds what one run changes, `_sequence` runs the steps and
`_budget` times them; the process layer's `_serving` chains SIGTERM and SIGINT and
joins the pod's worker group for the lifespan.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

import anyio

from .._process._serving import check_environment, serving
from ._background import spawn as spawn_tracked
from ._config import Delay, Seconds, Settings, resolve_settings
from ._loop import LoopHandle
from ._phases import Phase
from ._registration import Registration
from ._registry import Registry
from ._report import ShutdownReport
from ._run_state import RunState
from ._sequence import Sequence
from ._tracker import InFlight

if TYPE_CHECKING:
    from collections.abc import Mapping

logger = logging.getLogger("graceshut")


class Coordinator(Registration):
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
            ``GRACESHUT_PROPAGATION_DELAY``, else 5. ``"auto"`` ends it on evidence that
            routers stopped sending (docs/timeline.md has the rule): never before
            *propagation_floor*, at the latest after *propagation_cap*.
        propagation_floor: With ``"auto"``: the delay's least length. ``None`` reads
            ``GRACESHUT_PROPAGATION_FLOOR``, else 2.
        propagation_cap: With ``"auto"``: the delay's greatest length. ``None`` reads
            ``GRACESHUT_PROPAGATION_CAP``, else 15.
        quiet_window: With ``"auto"``: seconds without a new request that end the delay,
            once the pod was busy enough before the trigger for silence to mean
            something. ``None`` reads ``GRACESHUT_QUIET_WINDOW``, else 1.
        readiness_on_terminate: ``"fail"`` (readiness fails at the trigger) or
            ``"serve"`` (it stays 200 through the propagation delay and fails when the
            drain begins; for kube-proxy's fallback to serving terminating endpoints).
            ``None`` reads ``GRACESHUT_READINESS_ON_TERMINATE``, else ``"fail"``.
        stream_grace: Seconds a response still streaming when the drain begins gets to
            end by itself (it learns of the drain from `draining` or `drain_started`)
            before graceshut ends it. ``None`` reads ``GRACESHUT_STREAM_GRACE``, else 5.
        deadline_source: ``"config"`` (the default): the deadline is the first trigger +
            the grace period - the safety margin. ``"api"``: at the trigger, also read
            this pod from the API server (its service account needs ``get`` on its own
            pod) and take its ``metadata.deletionTimestamp`` as the end when it is
            sooner (``kubectl delete --grace-period``, evictions); at startup, take
            ``spec.terminationGracePeriodSeconds`` as the grace period when none is
            configured. ``None`` reads ``GRACESHUT_DEADLINE_SOURCE``, else ``config``.
        api_timeout: Seconds one read of the pod may take before the configured
            deadline stands. ``None`` reads ``GRACESHUT_API_TIMEOUT``, else 0.5.
        environ: Where to read the variables (default `os.environ`); for tests.

    Each setting may also be `graceshut.env_default(value)`: your default, which the
    variable still overrides.

    Raises:
        ConfigError: A setting is not a number, negative, or leaves no time; the
            deadline source is neither ``config`` nor ``api``; or
            ``GRACESHUT_WORKER_DIR`` is a relative path.

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
        propagation_delay: Delay = None,
        *,
        stream_grace: Seconds = None,
        propagation_floor: Seconds = None,
        propagation_cap: Seconds = None,
        quiet_window: Seconds = None,
        readiness_on_terminate: str | None = None,
        deadline_source: str | None = None,
        api_timeout: Seconds = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.settings: Settings = resolve_settings(
            grace_period,
            safety_margin,
            propagation_delay,
            environ,
            stream_grace,
            propagation_floor=propagation_floor,
            propagation_cap=propagation_cap,
            quiet_window=quiet_window,
            readiness_on_terminate=readiness_on_terminate,
            deadline_source=deadline_source,
            api_timeout=api_timeout,
        )
        check_environment(os.environ if environ is None else environ)  # fail here, not at start
        self._environ = environ
        #: The hot state: flags and in-flight count, read by the middleware per request.
        self.in_flight = InFlight()
        self.drain_started = threading.Event()
        """Set when the drain begins: for sync code (a generator in a worker thread) that
        waits with a timeout, ``coordinator.drain_started.wait(1.0)``."""
        self._registry = Registry()
        self._state = RunState()

    def forget_run(self) -> None:
        """Forget a finished run and the loop it ran on, keeping the handlers.

        For test harnesses that serve the same app again (`graceshut.testing` does);
        an app in production shuts down once. A run still under way goes on, unseen.
        """
        self.in_flight.reset()
        self.drain_started.clear()
        self._state = RunState()

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
    def drain_ends_at(self) -> float | None:
        """When the drain step ends (`time.monotonic`), once it has begun; else None.

        For a server stopped at the drain (a gRPC server's ``stop(grace)``): its grace is
        what is left of the drain's share of the deadline.
        """
        return self._state.drain_end

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

    def note_task(self, outcome: str, label: str) -> None:
        """Record what became of a background task, for the report's ``tasks``.

        For task-queue workers (`graceshut.celery` calls it): *outcome* is
        ``finished``, ``restored`` (handed back to the broker) or ``cancelled``;
        *label* names the task as ``name[id]``. Call it on the loop's thread.
        """
        self._state.tasks.setdefault(outcome, []).append(label)

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

    def lifespan(self, *, signals: bool = True) -> AbstractAsyncContextManager[None]:
        """Serve inside this block; leaving it runs (or joins) the shutdown sequence.

        With *signals*, SIGTERM and SIGINT handlers are installed on entry, chained to the
        ones already there (the server's own), and restored on exit. With several worker
        processes per pod, the worker joins its pod's group for the block. Framework-
        agnostic: `graceshut.starlette.install` uses it for the ASGI lifespan.
        """
        return serving(
            self,
            self._state,
            self._attached(),
            self._trigger_from_sibling,
            signals=signals,
            environ=self._environ,
        )

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
        deadline = state.deadline or state.started_monotonic + self.settings.budget
        workers = await state.pod.gather(deadline)
        data["workers"] = workers
        data["ok"] = all(bool(w.get("ok")) for w in workers)
        return data

    def _trigger_from_sibling(self, reason: str, started_at: float) -> None:
        if self._state.start(reason, self.in_flight, started_at=started_at, from_sibling=True):
            self._spawn_sequence()

    def _spawn_sequence(self) -> None:
        sequence = Sequence(
            self.settings,
            self._registry,
            self._state,
            self.in_flight,
            self.drain_started,
            environ=self._environ,
        )
        self._attached().spawn(sequence.run)
