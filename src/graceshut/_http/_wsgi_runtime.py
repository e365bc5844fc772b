"""The sequence's own thread and event loop in a WSGI worker process.

A WSGI server runs the app on threads of its own and has no event loop to lend, so
each process gets one thread that runs an asyncio (or trio) loop for the coordinator:
the sequence, the worker group's messages, the shutdown route's wait. Requests only
read flags and bump a counter; they reach the loop through its thread-safe entry
points.

Signals still arrive on the main thread, where the server's own handler (a gunicorn
worker's ``handle_exit``) must run too: the sequence ends on the loop thread, so the
hand-on is bounced back to the main thread with `_thread.interrupt_main`, which also
wakes a main thread waiting in ``select`` through the signal wakeup fd.
"""

from __future__ import annotations

import _thread
import atexit
import concurrent.futures
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Coroutine
from types import FrameType
from typing import TYPE_CHECKING, Any, TypeVar

import anyio

from .._core._loop import LoopHandle
from .._process._signals import SignalChain

if TYPE_CHECKING:
    from .._core._coordinator import Coordinator
    from .._core._report import ShutdownReport
    from ._admin import AdminListener

logger = logging.getLogger("graceshut")

T = TypeVar("T")

#: Every runtime made in this process, for gunicorn's hooks (`graceshut.gunicorn`).
_runtimes: list[SequenceThread] = []


class SequenceThread:
    """One coordinator's loop thread in this process; started once per process."""

    def __init__(
        self, coordinator: Coordinator, *, signals: bool = True, backend: str = "asyncio"
    ) -> None:
        self.coordinator = coordinator
        self.signals = signals
        self.backend = backend
        self._lock = threading.Lock()
        self._pid = 0
        self._thread: threading.Thread | None = None
        self._loop: LoopHandle | None = None
        self._stop: anyio.Event | None = None
        self._ready = threading.Event()
        self._chain: _MainThreadChain | None = None
        self.count_in_flight: Callable[[], int] = lambda: 0
        self.admin: AdminListener | None = None
        _runtimes.append(self)

    @property
    def started(self) -> bool:
        """Whether the loop thread runs in this process (not a parent we forked from)."""
        return self._pid == os.getpid() and self._loop is not None

    def start(self) -> None:
        """Start the loop thread and install the signal handlers; idempotent per process.

        Call it on the main thread to get signal handling (elsewhere it is skipped with a
        log line, as for ASGI apps under a test client).
        """
        with self._lock:
            if self._pid == os.getpid():
                return
            if self._pid:
                # Started in a parent that forked this process since: its coordinator is
                # bound to a loop whose thread did not survive the fork.
                self._pid, self._loop = os.getpid(), None
                logger.error(
                    "graceshut was started before this worker was forked (gunicorn's "
                    "preload_app?): it cannot run here. Start gunicorn with "
                    "-c python:graceshut.gunicorn, which starts it in each worker"
                )
                return
            self._pid = os.getpid()
            self._ready = threading.Event()
            self._thread = threading.Thread(
                target=self._run, name="graceshut-sequence", daemon=True
            )
            self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("graceshut's sequence thread did not start in 10 s")
        if self.signals and "uwsgi" in sys.modules:
            # uWSGI handles its workers' signals in C while Python code waits: a Python
            # handler would only run on the next request, and would hide uWSGI's.
            logger.info("signal handlers not installed under uWSGI: use the preStop route to drain")
        elif self.signals:
            self._chain = _MainThreadChain(self.coordinator)
            self._chain.install()
        self.coordinator.on_report(self._end_leftovers)
        atexit.register(self.stop)

    def _run(self) -> None:
        anyio.run(self._main, backend=self.backend)

    async def _main(self) -> None:
        self._stop = anyio.Event()
        admin = self.admin
        try:
            async with self.coordinator.lifespan(signals=False):
                self._loop = LoopHandle()
                if admin is not None:
                    admin.start()  # after the worker group is joined: pod-wide answers
                self._ready.set()
                await self._stop.wait()
        finally:
            if admin is not None:
                admin.stop()

    def stop(self, timeout: float | None = None) -> None:
        """Leave: run (or join) the sequence as a lifespan shutdown, and end the thread.

        For a server that stops without a signal (gunicorn recycling a worker after
        ``max_requests``) and for interpreter exit. Waits at most *timeout* seconds
        (default: the grace period).
        """
        atexit.unregister(self.stop)
        if not self.started or self._thread is None:
            return
        stop = self._stop
        if stop is not None:
            self.call_soon(stop.set)
        self._thread.join(self.coordinator.settings.grace_period if timeout is None else timeout)
        if not self._thread.is_alive() and self in _runtimes:
            _runtimes.remove(self)
        if self._chain is not None and threading.current_thread() is threading.main_thread():
            self._chain.uninstall()

    def call_soon(self, func: Callable[[], object]) -> None:
        """Run *func* on the loop thread soon; from any thread."""
        if self._loop is None:
            raise RuntimeError("graceshut's sequence thread is not running")
        self._loop.call_soon_threadsafe(func)

    def run(self, func: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run *func* on the loop thread and wait for its result; from a request thread."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        loop = self._loop
        if loop is None:
            raise RuntimeError("graceshut's sequence thread is not running")

        async def runner() -> None:
            try:
                future.set_result(await func())
            except BaseException as exc:  # handed to the caller's thread
                future.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise

        loop.call_soon_threadsafe(lambda: loop.spawn(runner))
        return future.result()

    def _end_leftovers(self, report: ShutdownReport) -> None:
        # A WSGI request runs on a thread nobody can cancel. If requests outlive the
        # drain's share, give them the safety margin, then end the process so that the
        # server does not wait past the grace period for them.
        if not self.count_in_flight():
            return

        def end() -> None:
            left = self.count_in_flight()
            if left:
                logger.warning(
                    "%d request%s still running after the deadline: exiting now",
                    left,
                    "" if left == 1 else "s",
                    extra={"in_flight": left, "outcome": "timeout"},
                )
                logging.shutdown()
                os._exit(report.exit_code or 1)

        timer = threading.Timer(self.coordinator.settings.safety_margin * 0.8, end)
        timer.daemon = True
        timer.start()


class _MainThreadChain(SignalChain):
    """SignalChain whose hand-on to the server always runs on the main thread."""

    def __init__(self, coordinator: Coordinator) -> None:
        super().__init__(coordinator)
        self._deliveries: list[tuple[int, Callable[[int, FrameType | None], Any]]] = []

    def install(self) -> bool:
        installed = super().install()
        if installed:
            for signum, previous in list(self._previous.items()):
                self._previous[signum] = _OnMainThread(self, signum, previous)
        return installed

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        for delivery in self._deliveries:
            if delivery[0] == signum:
                self._deliveries.remove(delivery)
                delivery[1](signum, frame)
                return
        super()._handle(signum, frame)

    def deliver(self, signum: int, handler: Callable[[int, FrameType | None], Any]) -> None:
        self._deliveries.append((signum, handler))
        _thread.interrupt_main(signal.Signals(signum))


class _OnMainThread:
    """The server's handler (or the default action), run on the main thread."""

    def __init__(self, chain: _MainThreadChain, signum: int, previous: Any) -> None:
        self._chain = chain
        self._previous = previous
        default = "SIG_DFL (the default action)"
        self.__qualname__ = getattr(previous, "__qualname__", default)

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if threading.current_thread() is not threading.main_thread():
            self._chain.deliver(signum, self)
            return
        if callable(self._previous):
            self._previous(signum, frame)
            return
        # SIG_DFL: nobody else would stop the process (waitress, a plain wsgiref
        # server). End it the way the default action would, through a normal exit.
        report = self._chain.coordinator.report
        logger.info("no server handler for %s: exiting", signal.Signals(signum).name)
        raise SystemExit(report.exit_code if report is not None else 0)


def runtimes() -> list[SequenceThread]:
    """The sequence threads made in this process (for server hooks)."""
    return list(_runtimes)
