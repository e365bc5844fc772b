"""Registering what the shutdown runs: handlers by phase, report listeners, drain hooks.

The registration half of `Coordinator`, kept apart from its run so that each reads on
its own; the coordinator is the only class that uses it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, overload

from ._handlers import Handler, HandlerFunc, make_handler
from ._phases import Phase
from ._registry import DrainHook, Registry, ReportListener, Unsubscribe

if TYPE_CHECKING:
    from ._config import Settings
    from ._draining import Ender
    from ._final import FinalFlush
    from ._tracker import InFlight

F = TypeVar("F", bound=HandlerFunc)


class Registration:
    """The coordinator's registration methods (see `Coordinator`)."""

    settings: Settings
    in_flight: InFlight
    _registry: Registry

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
        if self.in_flight.shutting_down:
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

    @property
    def handlers(self) -> tuple[Handler, ...]:
        """The registered handlers, in registration order."""
        return self._registry.handlers

    def on_drain(self, hook: DrainHook) -> Unsubscribe:
        """Run the async *hook* when the drain begins, alongside the drain handlers.

        Hooks are the drain's own machinery (the middleware closes WebSockets with one):
        no timeout of their own, cut off at the end of the drain, not in the report.

        Returns:
            A callable that unsubscribes the hook (idempotent).
        """
        return self._registry.drain_hooks.add(hook)

    def on_deadline(self, ender: Ender) -> Unsubscribe:
        """Let *ender* end what it serves when the drain's time is up.

        It is called as ``ender(in_flight, streams_only=...)`` on the loop's thread: with
        *streams_only* once ``stream_grace`` is over, then for everything a little before
        the drain's deadline, and returns the labels of what it ended (for the report).
        The ASGI middleware registers its own; an ender already registered is not added
        twice.

        Returns:
            A callable that unsubscribes it (idempotent).
        """
        enders = self._registry.enders
        if ender in enders:
            return lambda: enders.remove(ender)
        return enders.add(ender)
