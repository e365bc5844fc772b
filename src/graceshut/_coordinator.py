"""The shutdown sequence: one run, five phases, one deadline."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar, overload

import anyio

from ._budget import Run, elastic_end, reserved_after, step_end
from ._concurrent import still_running
from ._config import Seconds, Settings, resolve_settings
from ._ending import drain
from ._handlers import Handler, HandlerFunc, make_handler, run_handlers
from ._loop import LoopHandle
from ._phases import PHASES, Phase
from ._report import HandlerResult, Outcome, ShutdownReport
from ._tracker import InFlight
from ._workers import WorkerGroup

if TYPE_CHECKING:
    from collections.abc import Mapping

logger = logging.getLogger("graceshut")

F = TypeVar("F", bound=HandlerFunc)
ReportListener = Callable[[ShutdownReport], object]
DrainHook = Callable[[], Awaitable[None]]

#: Triggers that arrive after the server has stopped serving: keeping on serving
#: for the propagation delay would only make the shutdown slower.
_SERVER_ALREADY_STOPPED = frozenset({"lifespan"})


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
        self._handlers: dict[str, Handler] = {}
        self._needs = dict.fromkeys(PHASES, 0.0)
        self._report_listeners: list[ReportListener] = []
        self._drain_hooks: list[DrainHook] = []
        self._loop: LoopHandle | None = None
        self.drain_started = threading.Event()
        """Set when the drain begins: for sync code (a generator in a worker thread) that
        waits with a timeout, ``coordinator.drain_started.wait(1.0)``."""
        self._phase: Phase | None = None
        self._reason: str | None = None
        self._started_monotonic = 0.0
        self._started_at = 0.0
        self._in_flight_at_start = 0
        self._report: ShutdownReport | None = None
        self._waiters: list[anyio.Event] = []
        self._drain_waiters: list[anyio.Event] = []
        self._group: WorkerGroup | None = None
        self._leader = True
        self._start_lock = threading.Lock()

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
        if self._shutting_down:
            raise RuntimeError(
                f"cannot register handler {handler.name!r}: shutdown has already started"
            )
        if handler.name in self._handlers:
            raise ValueError(
                f"a shutdown handler named {handler.name!r} is already registered: "
                "pass name= to tell them apart"
            )
        budget = self.settings.budget
        if handler.timeout > budget:
            raise ValueError(
                f"handler {handler.name!r} has timeout={handler.timeout:g}s, longer than the "
                f"whole shutdown budget of {budget:g}s (grace_period "
                f"{self.settings.grace_period:g} - safety_margin {self.settings.safety_margin:g})"
            )
        self._handlers[handler.name] = handler
        self._needs[handler.phase] = max(self._needs[handler.phase], handler.timeout)
        needed = sum(self._needs.values())
        if needed > budget:
            logger.warning(
                "handler timeouts add up to %.1fs across phases, more than the %.1fs budget: "
                "if they all run long, each phase (and the propagation delay) gets a share in "
                "proportion to what it asks for, and in-flight requests get no extra time",
                needed,
                budget,
                extra={"handler": handler.name, "phase": handler.phase.value},
            )

    def on_report(self, listener: ReportListener) -> ReportListener:
        """Call *listener* with the final `ShutdownReport`, before any waiter wakes.

        Listeners run on the event loop thread and should be quick (write a file, set a
        metric); an exception is logged and ignored. Usable as a decorator.
        """
        self._report_listeners.append(listener)
        return listener

    def _reset_for_testing(self) -> None:
        """Forget the run (not the handlers): `graceshut.testing` serves an app again."""
        self.in_flight.reset()
        self.drain_started.clear()
        self._loop = None
        self._phase = None
        self._reason = None
        self._report = None
        self._waiters.clear()
        self._drain_waiters.clear()
        self._group = None
        self._leader = True
        self._start_lock = threading.Lock()

    def _remove_report_listener(self, listener: ReportListener) -> None:
        with contextlib.suppress(ValueError):
            self._report_listeners.remove(listener)

    @property
    def handlers(self) -> tuple[Handler, ...]:
        """The registered handlers, in registration order."""
        return tuple(self._handlers.values())

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

    _shutting_down = shutting_down  # the spelling used inside this module

    @property
    def phase(self) -> Phase | None:
        """The phase running now, or None (before, between announce and drain, after)."""
        return self._phase

    @property
    def report(self) -> ShutdownReport | None:
        """The report once the sequence has finished, else None."""
        return self._report

    @property
    def reason(self) -> str | None:
        """What started the shutdown, or None before it started."""
        return self._reason

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
        in_flight = self.in_flight
        in_flight.enter()
        in_flight.named[name] += 1
        scope = anyio.CancelScope()
        in_flight.jobs[scope] = name
        try:
            with scope:
                yield
        finally:
            in_flight.jobs.pop(scope, None)
            in_flight.named[name] -= 1
            if not in_flight.named[name]:
                del in_flight.named[name]
            in_flight.exit()

    async def wait_for_drain(self) -> None:
        """Return when the drain step begins: time for consumers, loops and streams to stop.

        A long-poll races it against its own wait and answers early, so that its
        client polls again at once, elsewhere ("Streaming and long-lived requests" in
        the docs has the example).
        """
        if self.in_flight.draining:
            return
        event = anyio.Event()
        self._drain_waiters.append(event)
        await event.wait()

    def on_drain(self, hook: DrainHook) -> Callable[[], None]:
        """Run the async *hook* when the drain begins, alongside the drain handlers.

        Hooks are the drain's own machinery (the middleware closes WebSockets with one):
        no timeout of their own, cut off at the end of the drain, not in the report.

        Returns:
            A callable that unsubscribes the hook (idempotent).
        """
        self._drain_hooks.append(hook)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._drain_hooks.remove(hook)

        return unsubscribe

    def spawn(
        self,
        func: Callable[..., Awaitable[object]],
        *args: object,
        name: str | None = None,
        timeout: float | None = None,
    ) -> None:
        """Start *func(*args)* in the background; the drain waits for it to finish.

        Fire-and-forget work started from a request (send an email, write an audit
        record) that must not be lost in a shutdown. It runs as `track` does: counted in
        flight, ended at the drain's deadline if still running. Call it from the event
        loop's thread (a request handler).

        Args:
            func: An async callable.
            args: Its positional arguments.
            name: The name in logs and reports; the function's qualified name by default.
            timeout: Seconds it may take before it is cancelled; None for no limit of its
                own (the drain's deadline still applies).
        """
        from ._background import spawn  # noqa: PLC0415 - keeps this module small

        self.attach()
        assert self._loop is not None  # noqa: S101 - attach() ran
        spawn(self, self._loop, func, args, name=name, timeout=timeout)

    # -- triggers -------------------------------------------------------------------

    def attach(self) -> None:
        """Bind to the running event loop so that `trigger` works from signal handlers.

        Call it from async code; the lifespan and `shutdown` do it for you.
        """
        if self._loop is None:
            self._loop = LoopHandle()
            self.in_flight.on_trio = self._loop.is_trio
            self.in_flight.refresh()

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
        if self._loop is None:
            raise RuntimeError(
                "Coordinator.trigger() needs an event loop: call attach() (or run the "
                "lifespan) first, or await shutdown() from async code"
            )
        if self._mark_started(reason, pod_wide=pod_wide):
            self._loop.call_soon_threadsafe(self._spawn_sequence)

    async def shutdown(self, reason: str = "manual", *, pod_wide: bool = False) -> ShutdownReport:
        """Run the sequence if it has not run, and return its report.

        Every caller, concurrent or later, gets the same `ShutdownReport` and no handler
        runs twice. Cancelling a caller does not cancel the sequence. *pod_wide* is as
        for `trigger`.
        """
        self.attach()
        if self._mark_started(reason, pod_wide=pod_wide):
            self._spawn_sequence()
        return await self.wait()

    async def wait(self) -> ShutdownReport:
        """Wait until the sequence has run, without starting it, and return its report.

        For a server's shutdown trigger: serve until graceshut has drained and finished.
        """
        if self._report is None:
            event = anyio.Event()
            self._waiters.append(event)
            await event.wait()
        assert self._report is not None  # noqa: S101 - set before any waiter wakes
        return self._report

    @contextlib.asynccontextmanager
    async def lifespan(self, *, signals: bool = True) -> AsyncIterator[None]:
        """Serve inside this block; leaving it runs (or joins) the shutdown sequence.

        With *signals*, SIGTERM and SIGINT handlers are installed on entry, chained to the
        ones already there (the server's own), and restored on exit. Framework-agnostic:
        `graceshut.starlette.install` uses it for the ASGI lifespan.
        """
        from ._signals import SignalChain  # noqa: PLC0415 - avoids an import cycle

        self.attach()
        chain = SignalChain(self) if signals else None
        listener = anyio.CancelScope()
        group: WorkerGroup | None = None
        try:
            if chain is not None:
                chain.install()
            group = self._join_worker_group(listener)
            yield
            with anyio.CancelScope(shield=True):
                await self.shutdown("lifespan")
        finally:
            listener.cancel()
            if group is not None:
                group.leave()
                self._group = None
            if chain is not None:
                chain.uninstall()

    def _join_worker_group(self, listener: anyio.CancelScope) -> WorkerGroup | None:
        group = WorkerGroup.detect()
        if group is None:
            return None
        try:
            group.join()
        except OSError as exc:
            logger.warning(
                "cannot join the other worker processes in %s (%s): this worker will shut "
                "down on its own triggers only",
                group.directory,
                exc,
            )
            return None
        self._group = group

        async def listen() -> None:
            with listener:
                await group.listen(self._trigger_from_sibling)

        assert self._loop is not None  # noqa: S101 - attach() ran
        self._loop.spawn(listen)
        existing = group.trigger()
        if existing is not None:
            # Started (or restarted) after another worker began the shutdown.
            self._trigger_from_sibling(*existing)
        return group

    def _trigger_from_sibling(self, reason: str, started_at: float) -> None:
        if self._mark_started(reason, started_at=started_at, from_sibling=True):
            self._spawn_sequence()

    def pod_triggered(self) -> bool:
        """True once this worker, or any worker of its pod, started a shutdown."""
        if self._shutting_down:
            return True
        group = self._group
        return group is not None and group.triggered()

    async def pod_report(self) -> dict[str, Any]:
        """Wait for the sequence and return the whole pod's report as JSON-ready data.

        With one process it is `ShutdownReport.to_dict`; with several worker processes it
        also waits (until the deadline) for every worker's report and lists them under
        ``workers``, and ``ok`` is true only if every worker's run was.
        """
        report = await self.wait()
        data = report.to_dict()
        group = self._group
        if group is None:
            return data
        deadline = self._started_monotonic + self.settings.budget
        workers = await group.gather_reports(deadline)
        data["workers"] = workers
        data["ok"] = all(bool(w.get("ok")) for w in workers)
        return data

    def _mark_started(
        self,
        reason: str,
        *,
        pod_wide: bool = False,
        started_at: float | None = None,
        from_sibling: bool = False,
    ) -> bool:
        """Flip readiness at once; True for the first trigger only.

        Safe from signal handlers and threads: the first caller wins a non-blocking lock
        before anything else happens, so two triggers can never start two runs.
        """
        group = self._group
        if not self._start_lock.acquire(blocking=False):
            if pod_wide and group is not None and not group.triggered():
                # A preStop call reaching a worker that was already stopping on its own.
                self._leader = self._claim_pod(group, reason, time.time())[0]
            logger.debug("shutdown trigger %s joins the run under way", reason)
            return False
        now = time.time()
        started_at = now if started_at is None else started_at
        if group is None:
            self._leader = True
        elif pod_wide:
            self._leader, reason, started_at = self._claim_pod(group, reason, started_at)
        else:
            # A sibling's trigger, or one for this process only (a signal from the
            # supervisor, which also recycles single workers; the lifespan shutdown):
            # once-per-pod handlers are not this worker's to run.
            self._leader = False
            if not from_sibling:
                group.mark_stopping()
        # One deadline for the whole pod: counted from the first worker's trigger.
        self._started_monotonic = time.monotonic() - max(0.0, now - started_at)
        self._started_at = started_at
        self._reason = reason
        in_flight = self.in_flight
        self._in_flight_at_start = in_flight.count
        in_flight.shutting_down = True
        in_flight.refresh()
        return True

    @staticmethod
    def _claim_pod(group: WorkerGroup, reason: str, started_at: float) -> tuple[bool, str, float]:
        leader, reason, started_at = group.claim(reason, started_at)
        group.broadcast("trigger", reason=reason, started_at=started_at)
        return leader, reason, started_at

    def _spawn_sequence(self) -> None:
        assert self._loop is not None  # noqa: S101 - attach() ran before any trigger
        self._loop.spawn(self._run)

    # -- the sequence ---------------------------------------------------------------

    async def _run(self) -> None:
        reason = self._reason or "manual"
        run = Run(reason, self._started_monotonic, self.settings.budget)
        try:
            with anyio.CancelScope(shield=True):
                await self._sequence(run)
        finally:
            self._phase = None
            self._finish(run)

    async def _sequence(self, run: Run) -> None:
        settings = self.settings
        needs = self._phase_needs()
        after = reserved_after(needs)
        logger.info(
            "shutdown started (%s): %.1fs until the deadline",
            run.reason,
            run.remaining(),
            extra={
                "reason": run.reason,
                "in_flight": self._in_flight_at_start,
                "remaining": run.remaining(),
                "leader": self._leader,
            },
        )

        end = step_end(run.deadline, needs[Phase.ANNOUNCE], after[Phase.ANNOUNCE])
        await self._run_phase(run, Phase.ANNOUNCE, end)

        if run.reason not in _SERVER_ALREADY_STOPPED:
            self._phase = None
            end = elastic_end(run.deadline, settings.propagation_delay, after[Phase.ANNOUNCE])
            until = min(run.start + settings.propagation_delay, end)
            with run.step("propagation"):
                logger.info(
                    "propagation delay: serving for %.2fs more while routers catch up",
                    max(0.0, until - time.monotonic()),
                    extra={"phase": "propagation", "remaining": run.remaining()},
                )
                await _sleep_until(until)

        end = step_end(run.deadline, needs[Phase.DRAIN], after[Phase.DRAIN])
        await self._drain(run, end)

        for phase in (Phase.FLUSH, Phase.RELEASE, Phase.REPORT):
            end = step_end(run.deadline, needs[phase], after[phase])
            await self._run_phase(run, phase, end)

    async def _drain(self, run: Run, end: float) -> None:
        in_flight = self.in_flight
        in_flight.draining = True
        self.drain_started.set()
        self._phase = Phase.DRAIN
        for event in self._drain_waiters:
            event.set()
        self._drain_waiters.clear()
        streams_at = time.monotonic() + self.settings.stream_grace
        with run.step(Phase.DRAIN.value):
            logger.info(
                "draining %d in-flight requests and jobs",
                self.in_flight.count,
                extra={
                    "phase": "drain",
                    "in_flight": self.in_flight.count,
                    "remaining": run.remaining(),
                },
            )
            async with anyio.create_task_group() as tg:
                for hook in self._drain_hooks:
                    tg.start_soon(_run_hook, hook, end)
                tg.start_soon(self._run_handlers, run, Phase.DRAIN, end)
                ended = await drain(in_flight, streams_at=streams_at, end=end)
            run.ended = ended
            run.abandoned = max(len(ended), in_flight.count)
        fields = {"phase": "drain", "duration": run.phases[-1].duration}
        if run.abandoned:
            logger.warning(
                "drain ended %d requests, streams or jobs still running: %s",
                run.abandoned,
                ", ".join(run.ended) or dict(in_flight.named) or "requests",
                extra={
                    **fields,
                    "in_flight": run.abandoned,
                    "abandoned": run.ended,
                    "remaining": run.remaining(),
                },
            )
        else:
            logger.info(
                "drain complete in %.3fs",
                fields["duration"],
                extra={**fields, "remaining": run.remaining()},
            )

    async def _run_phase(self, run: Run, phase: Phase, end: float) -> None:
        self._phase = phase
        with run.step(phase.value):
            count = await self._run_handlers(run, phase, end)
        if count:
            duration = run.phases[-1].duration
            logger.info(
                "phase %s done in %.3fs",
                phase.value,
                duration,
                extra={"phase": phase.value, "duration": duration, "remaining": run.remaining()},
            )

    async def _run_handlers(self, run: Run, phase: Phase, end: float) -> int:
        handlers = [
            h
            for h in self._handlers.values()
            if h.phase is phase and (self._leader or not h.once_per_pod)
        ]
        if not handlers:
            return 0
        logger.info(
            "phase %s: %d handler%s",
            phase.value,
            len(handlers),
            "" if len(handlers) == 1 else "s",
            extra={"phase": phase.value, "remaining": run.remaining()},
        )
        await run_handlers(handlers, run.reason, end, run.deadline, into=run.handlers)
        return len(handlers)

    def _phase_needs(self) -> dict[Phase, float]:
        """For each phase, the longest timeout among its handlers (kept up to date)."""
        return dict(self._needs)

    def _finish(self, run: Run) -> None:
        recorded = {h.name for h in run.handlers}
        run.handlers += [
            HandlerResult(
                h.name, h.phase, Outcome.SKIPPED, 0.0, "did not run: the run was cut short"
            )
            for h in self._handlers.values()
            if h.name not in recorded and (self._leader or not h.once_per_pod)
        ]
        report = ShutdownReport(
            reason=run.reason,
            started_at=self._started_at,
            duration=time.monotonic() - run.start,
            in_flight_at_start=self._in_flight_at_start,
            in_flight_abandoned=run.abandoned,
            abandoned=tuple(run.ended),
            handlers=tuple(sorted(run.handlers, key=lambda h: PHASES.index(h.phase))),
            phases=tuple(run.phases),
        )
        self._report = report
        log = logger.info if report.ok else logger.warning
        log(
            "%s",
            report.summary(),
            extra={
                "reason": run.reason,
                "outcome": "ok" if report.ok else "failed",
                "duration": report.duration,
                "report": report.to_dict(),
            },
        )
        if left_behind := still_running():
            logger.warning(
                "%d handler%s still running after %s timeout, in the background: one that "
                "ignores its cancellation can keep the process from exiting",
                left_behind,
                "" if left_behind == 1 else "s",
                "its" if left_behind == 1 else "their",
                extra={"reason": run.reason, "outcome": "timeout", "in_flight": left_behind},
            )
        if self._group is not None:
            self._group.publish_report(report.to_dict())
        for listener in self._report_listeners:
            try:
                listener(report)
            except Exception:
                logger.exception("report listener %r failed", listener)
        for event in self._waiters:
            event.set()
        self._waiters.clear()


async def _sleep_until(when: float) -> None:
    delay = when - time.monotonic()
    if delay > 0:
        await anyio.sleep(delay)


async def _run_hook(hook: DrainHook, end: float) -> None:
    with anyio.move_on_after(max(0.0, end - time.monotonic())) as scope:
        try:
            await hook()
        except Exception:
            logger.exception("drain hook %r failed", hook)
    if scope.cancelled_caught:
        logger.warning("drain hook %r cut off at the end of the drain", hook)
