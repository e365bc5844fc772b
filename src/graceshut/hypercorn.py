"""Run hypercorn with graceshut owning SIGTERM and SIGINT.

hypercorn's own command line gives the app no chance to see SIGTERM in time: it runs
the app in a child process and turns the signal into an event that the child polls, or
installs loop-level handlers that fire before anything of the app's. Its programmatic
``serve(..., shutdown_trigger=...)`` installs no handlers at all: graceshut then takes
the signals, runs the whole sequence while hypercorn keeps serving, and only then lets
hypercorn close.

HTTP/2 clients move to a new connection only when told with a GOAWAY frame, and
hypercorn sends one only as it closes. From the shutdown's announcement on, the runner
sends each HTTP/2 connection a GOAWAY as soon as it has no request in flight, so that
clients open new connections, which the load balancer sends to other pods, while this
one still serves every request in flight.

Example (``python -m myapp``)::

    import sys
    from hypercorn.config import Config
    import graceshut.hypercorn

    config = Config()
    config.bind = ["0.0.0.0:8000"]
    sys.exit(graceshut.hypercorn.run(app, coordinator, config, worker_class="trio"))
"""

from __future__ import annotations

import logging
import signal
import threading
import weakref
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import anyio

from ._core._loop import LoopHandle
from ._process import _watchdog
from ._process._exit import request_exit_status
from ._process._signals import SecondInterrupt

if TYPE_CHECKING:
    from types import FrameType

    from hypercorn.config import Config

    from ._core._coordinator import Coordinator
    from ._core._report import ShutdownReport

__all__ = ["run", "serve"]

logger = logging.getLogger("graceshut")


async def serve(app: Any, coordinator: Coordinator, config: Config | None = None) -> ShutdownReport:
    """Serve *app* with hypercorn on the running loop until graceshut's sequence is over.

    SIGTERM and SIGINT start the sequence; hypercorn is told to close once it is done.
    Works on asyncio and trio (whichever is running).

    Returns:
        The shutdown report (its `exit_code` is the status to exit with).
    """
    from hypercorn.config import Config  # noqa: PLC0415 - optional dependency

    config = config or Config()
    coordinator.attach()
    own_signals = _OwnSignals(coordinator)
    own_signals.install()
    goaway = _Http2GoAway.for_coordinator(coordinator)
    goaway.install()
    try:
        if LoopHandle().is_trio:
            from hypercorn.trio import serve as hypercorn_serve  # noqa: PLC0415
        else:
            from hypercorn.asyncio import serve as hypercorn_serve  # type: ignore[assignment]  # noqa: PLC0415

        async def until_finished() -> None:
            await coordinator.wait()

        await hypercorn_serve(app, config, shutdown_trigger=until_finished)
    finally:
        goaway.restore()
        own_signals.restore(finished=coordinator.report is not None)
    # Served until the lifespan shutdown joined the run: the report is there.
    return await coordinator.wait()


def run(
    app: Any,
    coordinator: Coordinator,
    config: Config | None = None,
    *,
    worker_class: Literal["asyncio", "uvloop", "trio"] = "asyncio",
) -> int:
    """Run `serve` in a new event loop and return the exit status (0 clean, 1 failed).

    Meant for ``sys.exit(run(...))``: once the sequence is over the process is on its
    way out, and the exit watchdog ends it by the grace period whatever hangs at exit
    (hypercorn's own shutdown, an ``atexit`` hook).
    """
    backend = "trio" if worker_class == "trio" else "asyncio"
    options: dict[str, Any] = {"use_uvloop": True} if worker_class == "uvloop" else {}
    coordinator.on_report(lambda report: _on_the_way_out(report, coordinator))

    async def main() -> int:
        report = await serve(app, coordinator, config)
        return report.exit_code

    return anyio.run(main, backend=backend, backend_options=options)


def _on_the_way_out(report: ShutdownReport, coordinator: Coordinator) -> None:
    request_exit_status(report.exit_code)
    _watchdog.arm(report, coordinator.settings)


class _OwnSignals:
    """SIGTERM and SIGINT start the sequence; hypercorn installs none of its own here."""

    def __init__(self, coordinator: Coordinator) -> None:
        self._coordinator = coordinator
        self._interrupts = SecondInterrupt()
        self._previous: dict[int, Any] = {}

    @property
    def should_exit(self) -> bool:
        """True once the drain has begun: what sse-starlette reads (see `SignalChain`)."""
        return self._coordinator.draining

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._handle)

    def restore(self, *, finished: bool) -> None:
        for signum, handler in self._previous.items():
            if finished and signum == signal.SIGTERM:
                # The kubelet's SIGTERM follows a preStop run closely: if it came between
                # here and the exit, the default action would turn a clean exit into 143.
                signal.signal(signum, signal.SIG_IGN)
            else:
                signal.signal(signum, handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        coordinator = self._coordinator
        self._interrupts.see(signum, running=coordinator.report is None)
        if not coordinator.shutting_down:
            coordinator.trigger(signal.Signals(signum).name)


class _Http2GoAway:
    """A GOAWAY to each HTTP/2 connection from the shutdown's announcement on.

    hypercorn gives an app no handle on its connections: for the time of `serve`, this
    subclasses its ``H2Protocol`` (the name its connection wrapper creates HTTP/2
    connections from) to know the open ones. A connection is sent its GOAWAY, through
    hypercorn's own h2 connection, at the first moment none of its streams is open on
    the wire: at the announcement, else in the very write that ends its last response.
    Such a GOAWAY names the last stream served, so a request that crosses it is refused
    unprocessed and the client retries it on a new connection.

    Why the same write: a client that sends its next request as soon as a response
    ends would otherwise race the GOAWAY, and on a starved process it won that race
    request after request (hypercorn forgets a stream a few task switches after its
    END_STREAM has gone out), kept the connection busy through the whole delay and was
    reset as hypercorn closed. A GOAWAY with streams in flight would be RFC 9113's
    two-step close, but h2-based clients such as httpx fail every stream still open when
    any GOAWAY arrives; and none goes to a connection that has not had a stream yet: its
    last stream would be 0, which httpx takes as a failure rather than a retry.
    """

    _by_coordinator: ClassVar[weakref.WeakKeyDictionary[Coordinator, _Http2GoAway]] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self) -> None:
        self._connections: weakref.WeakSet[Any] = weakref.WeakSet()
        self._announced = False
        self._original: Any = None
        self.disabled = False

    @classmethod
    def for_coordinator(cls, coordinator: Coordinator) -> _Http2GoAway:
        """One per coordinator, its announce handler registered once."""
        found = cls._by_coordinator.get(coordinator)
        if found is None:
            found = cls._by_coordinator[coordinator] = cls()
            try:
                coordinator.add_handler(
                    found.announce,
                    phase="announce",
                    # A few writes; the room is for a starved process (0.8 s seen under
                    # load), whose timed-out handler would fail an otherwise clean report.
                    timeout=2.0,
                    name="graceshut-http2-goaway",
                )
            except (RuntimeError, ValueError) as exc:  # shutting down already, a tiny budget
                logger.warning("HTTP/2 connections get no GOAWAY before hypercorn closes: %s", exc)
                found.disabled = True
        return found

    def install(self) -> None:
        from hypercorn import protocol  # noqa: PLC0415 - optional dependency

        if self.disabled:
            return
        base = getattr(protocol, "H2Protocol", None)
        if base is None or not hasattr(base, "_flush"):
            logger.warning(
                "this hypercorn's HTTP/2 protocol is not the one graceshut knows: HTTP/2 "
                "connections get no GOAWAY before hypercorn closes"
            )
            return
        tracker = self

        class TrackedH2Protocol(base):  # type: ignore[misc,valid-type]
            async def initiate(self, *args: Any, **kwargs: Any) -> None:
                await super().initiate(*args, **kwargs)
                tracker.opened(self)

            # hypercorn writes what its h2 connection queued here, and only here: a GOAWAY
            # queued first goes out in the same write as the END_STREAM before it.
            async def _flush(self, *args: Any, **kwargs: Any) -> None:
                tracker.queue_goaway_if_idle(self)
                await super()._flush(*args, **kwargs)

        self._original = base
        setattr(protocol, "H2Protocol", TrackedH2Protocol)  # noqa: B010 - not re-exported

    def restore(self) -> None:
        if self._original is not None:
            from hypercorn import protocol  # noqa: PLC0415

            setattr(protocol, "H2Protocol", self._original)  # noqa: B010
            self._original = None

    def opened(self, connection: Any) -> None:
        self._connections.add(connection)

    async def announce(self) -> None:
        """The announce-phase handler: every idle HTTP/2 connection is told to go away."""
        self._announced = True
        # Side by side: a client slow to read must not hold up the others' GOAWAY.
        async with anyio.create_task_group() as tg:
            for connection in list(self._connections):
                tg.start_soon(self.goaway_if_idle, connection)

    def queue_goaway_if_idle(self, connection: Any) -> bool:
        """Queue a GOAWAY in *connection*'s h2 state if it is due; True if one was queued."""
        from h2.connection import ConnectionState  # noqa: PLC0415 - hypercorn's dependency

        h2_connection = connection.connection
        if (
            not self._announced
            or connection.closed
            or h2_connection.state_machine.state == ConnectionState.CLOSED
            # Every request's END_STREAM (or reset) queued: nothing in flight on the wire.
            or h2_connection.open_inbound_streams
            or not h2_connection.highest_inbound_stream_id
        ):
            return False
        try:
            # What hypercorn itself does to an idle connection when it closes; the GOAWAY
            # names the highest stream it has seen, every one of them answered.
            h2_connection.close_connection()
        except Exception:  # one broken connection must not stop the others
            logger.debug("GOAWAY not queued for an HTTP/2 connection", exc_info=True)
            return False
        return True

    async def goaway_if_idle(self, connection: Any) -> None:
        """Send *connection* its GOAWAY now if it is due (an idle one at the announcement)."""
        from hypercorn.events import RawData  # noqa: PLC0415 - optional dependency

        if not self.queue_goaway_if_idle(connection):
            return
        try:
            await connection.send(RawData(data=connection.connection.data_to_send()))
        except Exception:  # one broken connection must not stop the others
            logger.debug("GOAWAY not sent to an HTTP/2 connection", exc_info=True)
