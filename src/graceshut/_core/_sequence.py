"""One shutdown run: announce, propagation delay, drain, flush, release, report.

Each step ends where `_budget` says, so that the later phases keep the time their
handlers ask for; whatever happens, the run ends with a `ShutdownReport`, handed to the
report listeners, then the final flushes (`_final`) run until the deadline, and then
every waiter gets the report with their outcomes.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Mapping

import anyio

from ._budget import ENV_PROGRESS_FILE, Run, elastic_end, reserved_after, step_end
from ._concurrent import still_running
from ._config import Settings
from ._deadline import deadline_from_api
from ._draining import drain
from ._final import run_final_flushes
from ._handlers import run_handlers
from ._logs import log_report_line
from ._phases import PHASES, Phase
from ._propagation import Evidence, wait_propagation
from ._registry import DrainHook, Registry
from ._report import HandlerResult, Outcome, ShutdownReport
from ._run_state import RunState
from ._tracker import InFlight

logger = logging.getLogger("graceshut")

#: Triggers that arrive after the server has stopped serving: keeping on serving
#: for the propagation delay would only make the shutdown slower.
_SERVER_ALREADY_STOPPED = frozenset({"lifespan"})


class Sequence:
    """The steps of one run, over the coordinator's settings, handlers and state."""

    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        state: RunState,
        in_flight: InFlight,
        drain_started: threading.Event,
        *,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self._environ = environ
        self._settings = settings
        self._registry = registry
        self._state = state
        self._in_flight = in_flight
        self._drain_started = drain_started

    async def run(self) -> None:
        """Run every step, shielded from cancellation; the report is made whatever happens."""
        state = self._state
        settings = self._settings
        run = Run(state.reason or "manual", state.started_monotonic, settings.budget)
        run.deadline_detail = (
            f"configured: grace period {settings.grace_period:g}s "
            f"({settings.grace_period_source}) - safety margin {settings.safety_margin:g}s"
        )
        env = os.environ if self._environ is None else self._environ
        run.progress = env.get(ENV_PROGRESS_FILE) or None
        run.note("start", reason=run.reason, budget=round(settings.budget, 3))
        state.deadline = run.deadline
        try:
            with anyio.CancelScope(shield=True):
                await self._steps(run)
        finally:
            state.phase = None
            report = self._finish(run)
            try:
                with anyio.CancelScope(shield=True):
                    await self._final_flushes(report, run)
            finally:
                self._wake()

    async def _steps(self, run: Run) -> None:
        settings = self._settings
        needs = self._registry.needs()
        after = reserved_after(needs)
        logger.info(
            "shutdown started (%s): %.1fs until the deadline",
            run.reason,
            run.remaining(),
            extra={
                "reason": run.reason,
                "in_flight": self._state.in_flight_at_start,
                "remaining": run.remaining(),
                "leader": self._state.leader,
            },
        )

        evidence = self._in_flight.evidence if settings.propagation_auto else None
        # The short-budget rule (`_budget`): the propagation delay and the drain are
        # elastic and give way first; announce, flush, release and report are firm.
        firm = after[Phase.DRAIN]  # flush, release and report
        end = step_end(run.deadline, needs[Phase.ANNOUNCE], firm)
        async with anyio.create_task_group() as tg:
            if settings.deadline_source == "api":
                # Alongside the announce, never before it: readiness already fails.
                # The steps after it are timed once the answer (or the timeout) is in.
                tg.start_soon(deadline_from_api, run, settings, self._environ)
            await self._phase(run, Phase.ANNOUNCE, end)
        self._state.deadline = run.deadline

        if run.reason not in _SERVER_ALREADY_STOPPED:
            end = elastic_end(run.deadline, settings.propagation_delay, after[Phase.ANNOUNCE], firm)
            await self._propagation(run, end, evidence)

        await self._drain(run, elastic_end(run.deadline, needs[Phase.DRAIN], firm, firm))

        for phase in (Phase.FLUSH, Phase.RELEASE, Phase.REPORT):
            end = step_end(run.deadline, needs[phase], after[phase])
            await self._phase(run, phase, end)

    async def _propagation(self, run: Run, end: float, evidence: Evidence | None) -> None:
        settings = self._settings
        self._state.phase = None
        until = min(run.start + settings.propagation_delay, end)
        with run.step("propagation"):
            if settings.propagation_auto:
                logger.info(
                    "propagation delay: serving until traffic has stopped (%.1f req/s before "
                    "the trigger), %.2fs at most, %.2fs at least",
                    evidence.rate_before() if evidence is not None else 0.0,
                    max(0.0, until - time.monotonic()),
                    max(0.0, min(until, run.start + settings.propagation_floor) - time.monotonic()),
                    extra={"phase": "propagation", "remaining": run.remaining()},
                )
            else:
                logger.info(
                    "propagation delay: serving for %.2fs more while routers catch up",
                    max(0.0, until - time.monotonic()),
                    extra={"phase": "propagation", "remaining": run.remaining()},
                )
            run.delay_end = await wait_propagation(settings, run.start, end, evidence)
        duration = run.phases[-1].duration
        logger.info(
            "propagation delay ended (%s) after %.2fs",
            run.delay_end,
            time.monotonic() - run.start,
            extra={"phase": "propagation", "duration": duration, "delay_end": str(run.delay_end)},
        )

    async def _drain(self, run: Run, end: float) -> None:
        in_flight = self._in_flight
        state = self._state
        state.drain_end = end
        in_flight.draining = True
        in_flight.refresh()
        self._drain_started.set()
        state.phase = Phase.DRAIN
        for event in state.drain_waiters:
            event.set()
        state.drain_waiters.clear()
        streams_at = time.monotonic() + self._settings.stream_grace
        with run.step(Phase.DRAIN.value):
            logger.info(
                "draining %d in-flight requests and jobs",
                in_flight.count,
                extra={
                    "phase": "drain",
                    "in_flight": in_flight.count,
                    "remaining": run.remaining(),
                },
            )
            async with anyio.create_task_group() as tg:
                for hook in self._registry.drain_hooks:
                    tg.start_soon(_run_hook, hook, end)
                tg.start_soon(self._handlers, run, Phase.DRAIN, end)
                ended = await drain(
                    in_flight, streams_at=streams_at, end=end, enders=self._registry.enders
                )
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

    async def _phase(self, run: Run, phase: Phase, end: float) -> None:
        self._state.phase = phase
        with run.step(phase.value):
            count = await self._handlers(run, phase, end)
        if count:
            duration = run.phases[-1].duration
            logger.info(
                "phase %s done in %.3fs",
                phase.value,
                duration,
                extra={"phase": phase.value, "duration": duration, "remaining": run.remaining()},
            )

    async def _handlers(self, run: Run, phase: Phase, end: float) -> int:
        handlers = self._registry.for_phase(phase, leader=self._state.leader)
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

    def _finish(self, run: Run) -> ShutdownReport:
        state = self._state
        recorded = {h.name for h in run.handlers}
        run.handlers += [
            HandlerResult(
                h.name, h.phase, Outcome.SKIPPED, 0.0, "did not run: the run was cut short"
            )
            for h in self._registry.runnable(leader=state.leader)
            if h.name not in recorded
        ]
        report = ShutdownReport(
            reason=run.reason,
            started_at=state.started_at,
            duration=time.monotonic() - run.start,
            in_flight_at_start=state.in_flight_at_start,
            in_flight_abandoned=run.abandoned,
            abandoned=tuple(run.ended),
            handlers=tuple(sorted(run.handlers, key=lambda h: PHASES.index(h.phase))),
            phases=tuple(run.phases),
            propagation=str(run.delay_end) if run.delay_end is not None else None,
            deadline_source=run.deadline_source,
            budget=run.deadline - run.start,
            deadline_detail=run.deadline_detail,
            finished=dict(self._in_flight.finished),
            tasks={outcome: tuple(labels) for outcome, labels in state.tasks.items()},
        )
        state.report = report
        run.note("done", ok=report.ok, deadline_source=run.deadline_source)
        log_report_line(
            logger,
            logging.INFO if report.ok else logging.WARNING,
            report.summary(),
            {
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
        if state.pod is not None:
            state.pod.publish(report.to_dict())
        for listener in self._registry.report_listeners:
            try:
                listener(report)
            except Exception:
                logger.exception("report listener %r failed", listener)
        return report

    async def _final_flushes(self, report: ShutdownReport, run: Run) -> None:
        """Telemetry last, after the report's own records, bounded by the deadline.

        Waiters (the shutdown route, the lifespan) get the report with their outcomes.
        """
        flushes = list(self._registry.final_flushes)
        if flushes:
            results = await run_final_flushes(flushes, report, run.deadline)
            self._state.report = dataclasses.replace(report, final_flushes=results)

    def _wake(self) -> None:
        state = self._state
        state.complete = True
        for event in state.waiters:
            event.set()
        state.waiters.clear()


async def _run_hook(hook: DrainHook, end: float) -> None:
    with anyio.move_on_after(max(0.0, end - time.monotonic())) as scope:
        try:
            await hook()
        except Exception:
            logger.exception("drain hook %r failed", hook)
    if scope.cancelled_caught:
        logger.warning("drain hook %r cut off at the end of the drain", hook)
