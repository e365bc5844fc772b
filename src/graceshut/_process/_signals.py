"""SIGTERM and SIGINT: start the sequence, then hand the signal on to the server.

The server's own handler (uvicorn's ``Server.handle_exit``, a gunicorn worker's) is
saved at install time and called only once the sequence is over, so the server keeps
serving through the propagation delay and begins its own shutdown after the drain.

One exception: a worker stopped alone while its siblings serve on (a supervisor
recycling it) hands the signal on when its drain begins. Its listening socket is shared
with them, so keeping it open through the drain and the later phases would only take
connections that a sibling could serve and refuse them with 503; once the server stops
accepting, they wait in the shared queue for a sibling instead, and the server still
waits for this worker's in-flight requests before it ends.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from contextvars import ContextVar
from types import FrameType
from typing import TYPE_CHECKING, Any

import anyio.lowlevel

from .._core._logs import flush_logs
from . import _watchdog
from ._exit import forget_signal, request_exit_status

if TYPE_CHECKING:
    from .._core._coordinator import Coordinator
    from .._core._report import ShutdownReport

logger = logging.getLogger("graceshut")

HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT)

#: Turned off by `graceshut.testing` so that a test run keeps its own Ctrl-C.
signals_enabled: ContextVar[bool] = ContextVar("graceshut_signals_enabled", default=True)
SignalHandler = Callable[[int, FrameType | None], Any] | int | None


class SignalChain:
    """Our handlers for SIGTERM and SIGINT, in front of whatever was installed."""

    def __init__(self, coordinator: Coordinator) -> None:
        self._coordinator = coordinator
        self._previous: dict[int, SignalHandler] = {}
        self._pending: list[int] = []
        self._handed_early: list[int] = []
        self._interrupts = SecondInterrupt()
        self._installed = False
        coordinator.on_report(self._hand_on_pending)
        self._unsubscribe = coordinator.on_drain(self._hand_on_at_drain)

    @property
    def coordinator(self) -> Coordinator:
        """The coordinator whose sequence these handlers start."""
        return self._coordinator

    @property
    def should_exit(self) -> bool:
        """True once the drain has begun.

        Libraries that watch a uvicorn-style server look for this attribute on the
        object behind the SIGTERM handler (sse-starlette's ``signal.getsignal(SIGTERM)
        .__self__.should_exit``): ours stands in front of the server's, so it answers
        for it, and their streams end when the drain begins.
        """
        return self._coordinator.draining

    def install(self) -> bool:
        """Install the handlers; False (and a log line) when not on the main thread."""
        if not signals_enabled.get():
            logger.debug("signal handlers not installed: disabled (graceshut.testing)")
            return False
        if threading.current_thread() is not threading.main_thread():
            logger.info(
                "signal handlers not installed: not on the main thread (a test client?); "
                "the shutdown route and the lifespan still run the sequence"
            )
            return False
        for signum in HANDLED_SIGNALS:
            previous = signal.getsignal(signum)
            if previous is signal.SIG_IGN:
                continue  # ignored on purpose by whoever started us: leave it so
            self._previous[signum] = previous
            signal.signal(signum, self._handle)
        self._installed = True
        logger.debug(
            "signal handlers installed, chained to %s",
            {signal.Signals(s).name: _describe(h) for s, h in self._previous.items()},
        )
        return True

    def uninstall(self) -> None:
        """Put back the handlers we replaced, where ours are still in place."""
        self._coordinator.remove_report_listener(self._hand_on_pending)
        self._unsubscribe()
        if not self._installed:
            return
        for signum, previous in self._previous.items():
            if signal.getsignal(signum) == self._handle:
                signal.signal(signum, previous)
        self._installed = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        coordinator = self._coordinator
        name = signal.Signals(signum).name
        self._interrupts.see(signum, running=coordinator.report is None)
        if coordinator.report is not None:
            # The sequence already ran (a preStop call): let the server stop right away.
            self._hand_on(signum, coordinator.report)
            return
        if signum not in self._pending:
            self._pending.append(signum)
        if coordinator.shutting_down:
            logger.info("%s received: joining the shutdown under way", name)
            if coordinator.draining:
                self._hand_on_early()
            return
        logger.info("%s received: starting the shutdown", name, extra={"reason": name})
        coordinator.trigger(name)

    async def _hand_on_at_drain(self) -> None:
        # After the other drain hooks have started (WebSockets get our 1001 close
        # before the server's own shutdown sends 1012).
        await anyio.lowlevel.checkpoint()
        self._hand_on_early()

    def _hand_on_early(self) -> None:
        """In a multi-worker pod: let the server stop accepting now (see the module doc)."""
        if self._handed_early or not self._coordinator.others_serving():
            # Once is enough: a second signal handed to uvicorn now (a SIGINT) would make
            # it skip the lifespan shutdown, and the sequence with it. Without siblings
            # serving, the whole pod stops: keep the contract, 503 to what still arrives.
            return
        for signum in list(self._pending):
            previous = self._previous.get(signum)
            if not callable(previous):
                continue  # nobody to tell but the default action: wait for the report
            self._handed_early.append(signum)  # first: a signal now sees it handed
            self._pending.remove(signum)
            _call_server(previous, signum, "as the drain begins: the other workers serve on")
            return

    def _hand_on_pending(self, report: ShutdownReport) -> None:
        if self._handed_early:
            request_exit_status(report.exit_code)
            _watchdog.arm(report, self._coordinator.settings)
            self._handed_early = []
        pending, self._pending = self._pending, []
        for signum in pending:
            self._hand_on(signum, report)

    def _hand_on(self, signum: int, report: ShutdownReport) -> None:
        previous = self._previous.get(signum)
        request_exit_status(report.exit_code)
        # From here the process is on its way out: whatever runs at exit gets what is
        # left of the grace period, and no more.
        _watchdog.arm(report, self._coordinator.settings)
        if callable(previous):
            _call_server(previous, signum, "after the sequence")
        elif previous == signal.SIG_DFL or previous is None:
            # Nobody else would have stopped the process: end it the way the default
            # action would, but through a normal interpreter exit with our status, and
            # only after the other report listeners and waiters had their turn.
            logger.info("no server handler for %s: exiting", signal.Signals(signum).name)
            signal.signal(signum, _raise_system_exit(report.exit_code))
            if not self._coordinator.call_soon_threadsafe(lambda: signal.raise_signal(signum)):
                signal.raise_signal(signum)


def _call_server(server: Callable[[int, FrameType | None], Any], signum: int, when: str) -> None:
    """Hand *signum* to the server's own handler, and keep the server from re-raising it."""
    logger.info("handing %s on to %s %s", signal.Signals(signum).name, _describe(server), when)
    server(signum, None)
    forget_signal(getattr(server, "__self__", None), signum)


class SecondInterrupt:
    """Remembers SIGINT: a second one while the sequence runs exits at once, as at a terminal.

    The one rule for every place that owns SIGINT (the signal chain, the hypercorn runner).
    """

    __slots__ = ("_seen",)

    def __init__(self) -> None:
        self._seen = False

    def see(self, signum: int, *, running: bool) -> None:
        """Note *signum*; a SIGINT after an earlier one, while *running*, forces the exit."""
        if signum != signal.SIGINT:
            return
        if self._seen and running:
            force_exit(signum)
        self._seen = True


def force_exit(signum: int) -> None:
    """Exit at once, as a second Ctrl-C does at a terminal: the sequence is abandoned."""
    logger.critical(
        "second %s: exiting now, without finishing the shutdown", signal.Signals(signum).name
    )
    flush_logs(timeout=0.5)
    logging.shutdown()
    os._exit(128 + signum)


def _raise_system_exit(code: int) -> Callable[[int, FrameType | None], None]:
    def handler(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(code)

    return handler


def _describe(handler: SignalHandler) -> str:
    if handler is signal.SIG_DFL:
        return "SIG_DFL"
    if handler is signal.SIG_IGN:
        return "SIG_IGN"
    return getattr(handler, "__qualname__", repr(handler))
