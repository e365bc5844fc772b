"""Graceful shutdown for `grpc.aio` servers, with the standard health service.

Install with ``pip install 'graceshut[grpc]'``. The sequence, for a server created with
`interceptor` and wired with `install`:

- announce: the readiness names of the health servicer go NOT_SERVING (its ``Watch``
  subscribers are told) while the liveness name stays SERVING until the process exits:
  the kubelet's ``grpc`` readiness probe fails, its liveness probe does not. The
  servicer's own ``enter_graceful_shutdown()`` is not used: it flips every name.
- propagation delay: new calls are served as before, while routers catch up.
- drain: health ``Watch`` streams end (status OK, after their last status); streaming
  handlers learn of the drain from `Coordinator.draining` (or ``await
  coordinator.wait_for_drain()``); the drain waits for the calls in flight while the
  port stays open, so that liveness probes are answered. Once none is left, or at the
  drain's deadline (what still runs is then ended with ``UNAVAILABLE``),
  ``server.stop(grace)`` sends every connection a GOAWAY, which moves long-lived
  channels to another pod, with what is left of the drain's budget as its grace.

Why the port stays open until then: ``stop()`` refuses new calls and closes the
listener at once, so a liveness probe during a long drain would be refused. Measured
with grpcio 1.85 behind HAProxy in TCP mode, four long-lived channels at 100 calls/s:
``stop(grace)`` on SIGTERM failed 24 calls (``UNAVAILABLE``); the readiness name
NOT_SERVING, 1.5 s of serving, then ``stop(grace)``, failed none. grpcio sends a GOAWAY
on demand only from ``stop()``, and cancels a call that crosses it (at 400 calls/s on
eight channels, 3 calls in 10 restarts): `server_options` sets a connection age within
the propagation delay, whose GOAWAY cancels nothing, so that the channels have moved
before the drain (none in 11 restarts).

Example::

    coordinator = graceshut.Coordinator()

    async def main() -> int:
        server = grpc.aio.server(
            interceptors=[graceshut.grpc.interceptor(coordinator)],
            options=graceshut.grpc.server_options(coordinator),
        )
        greeter_pb2_grpc.add_GreeterServicer_to_server(Greeter(), server)
        health = HealthServicer()  # grpc_health.v1.health.aio
        health_pb2_grpc.add_HealthServicer_to_server(health, server)
        server.add_insecure_port("[::]:50051")
        installation = graceshut.grpc.install(
            server, coordinator, health=health, liveness="liveness", admin_address="9901"
        )
        report = await installation.serve()
        return report.exit_code

    sys.exit(asyncio.run(main()))
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import signal
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any

import anyio

try:
    import grpc  # noqa: F401 - the clear error comes first
    from grpc_health.v1 import health_pb2
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "graceshut.grpc needs grpcio and grpcio-health-checking: pip install 'graceshut[grpc]'"
    ) from exc

from ._grpc._calls import CallTracker, GracefulInterceptor
from ._http._admin import AdminListener, parse_admin_address, prometheus_metrics
from ._http._shutdown_route import ShutdownEndpoint

if TYPE_CHECKING:
    from ._core._coordinator import Coordinator
    from ._core._report import ShutdownReport

__all__ = ["GrpcInstallation", "install", "interceptor", "server_options"]

logger = logging.getLogger("graceshut")

_trackers: weakref.WeakKeyDictionary[Coordinator, CallTracker] = weakref.WeakKeyDictionary()


def interceptor(coordinator: Coordinator) -> GracefulInterceptor:
    """The server interceptor that counts calls for *coordinator*: pass it at creation.

    ``grpc.aio.server(interceptors=[graceshut.grpc.interceptor(coordinator)])``: a
    server takes its interceptors only when it is created. Put it first, so that the
    calls your own interceptors refuse are counted too.
    """
    tracker = _trackers.get(coordinator)
    if tracker is None:
        tracker = _trackers[coordinator] = CallTracker(coordinator)
    return GracefulInterceptor(tracker)


def server_options(
    coordinator: Coordinator, *, max_age: float | None = None
) -> list[tuple[str, int]]:
    """Channel arguments that move long-lived channels off the pod within its delay.

    ``grpc.aio.server(options=graceshut.grpc.server_options(coordinator), ...)``: every
    connection is sent a GOAWAY once it is *max_age* seconds old (grpcio adds up to 10%
    either way), its calls and streams still served to their end, so that a channel
    opened before the shutdown has moved, through the Service, to another pod before the
    drain begins. ``stop()`` at the end of the drain then finds no client sending: a call
    that crosses ``stop()`` is cancelled by grpcio. Behind an L4 balancer it also spreads
    channels over new pods after a scale-up. The cost: each channel reconnects once per
    *max_age*.

    Args:
        coordinator: Its propagation delay sets the default.
        max_age: Seconds; default the propagation delay / 1.2, none when it is 0.
    """
    age = coordinator.settings.propagation_delay / 1.2 if max_age is None else max_age
    if age <= 0:
        return []
    return [("grpc.max_connection_age_ms", max(1, round(age * 1000)))]


@dataclasses.dataclass
class GrpcInstallation:
    """What `install` wired: serve with `serve`, which returns the shutdown report."""

    server: Any
    """The `grpc.aio.Server`."""
    coordinator: Coordinator
    health: Any
    """The health servicer (``grpc_health.v1.health.aio.HealthServicer``)."""
    readiness: tuple[str, ...] | None
    """The names set NOT_SERVING at the announcement; None: every name but liveness."""
    liveness: str | None
    tracker: CallTracker
    signals: bool = True
    admin: AdminListener | None = None
    """The admin listener (probes, ``/shutdown``, ``/metrics``), if one was asked for."""

    async def serve(self) -> ShutdownReport:
        """Start the server and serve until graceshut's sequence is over.

        SIGTERM and SIGINT start the sequence (chained to handlers already installed);
        so does the admin listener's ``/shutdown`` (``graceshut prestop``). The server
        is stopped in the drain. Call it from the event loop that the server runs on.

        Returns:
            The shutdown report: exit with its `exit_code` (0 clean, 1 failed).
        """
        coordinator = self.coordinator
        coordinator.attach()
        with _server_signals(enabled=self.signals):
            try:
                async with coordinator.lifespan(signals=self.signals):
                    if self.admin is not None:
                        self.admin.start()
                    if self.liveness is not None and self.liveness not in _known(self.health):
                        await self.health.set(self.liveness, _SERVING)
                    await self.server.start()
                    async with anyio.create_task_group() as tg:

                        async def until_terminated() -> None:
                            await self.server.wait_for_termination()
                            tg.cancel_scope.cancel()

                        tg.start_soon(until_terminated)
                        await coordinator.wait()
                        tg.cancel_scope.cancel()
            finally:
                with anyio.CancelScope(shield=True):
                    await self.server.stop(0)  # idempotent: stopped in the drain already
                    if self.admin is not None:
                        # The shutdown route's answer (the report) may still be on its way.
                        await anyio.to_thread.run_sync(self.admin.wait_answered, 2.0)
                        self.admin.stop()
        return await coordinator.wait()

    def readiness_names(self) -> list[str]:
        """The names that the announcement sets NOT_SERVING."""
        if self.readiness is not None:
            return list(self.readiness)
        return [name for name in _known(self.health) if name != self.liveness]

    async def announce(self) -> None:
        """The announce handler: readiness names NOT_SERVING; liveness stays SERVING."""
        names = self.readiness_names()
        for name in names:
            await self.health.set(name, _NOT_SERVING)
        logger.info(
            "gRPC health: %s NOT_SERVING, %s still SERVING",
            ", ".join(repr(n) for n in names) or "no name",
            repr(self.liveness) if self.liveness is not None else "no liveness name",
            extra={"phase": "announce"},
        )

    async def drain(self) -> None:
        """The drain hook: end ``Watch`` streams, wait for the calls, then ``stop(grace)``."""
        watches = self.tracker.end_watches()
        if watches:
            logger.info("gRPC health: ending %d Watch stream(s)", watches)
        try:
            await self.coordinator.in_flight.wait_idle()
        finally:
            end = self.coordinator.drain_ends_at
            grace = 0.0 if end is None else max(0.0, end - time.monotonic())
            with anyio.CancelScope(shield=True):
                # A GOAWAY to every connection still open; what still runs gets the grace.
                await self.server.stop(grace)
            logger.info("gRPC server stopped", extra={"phase": "drain"})


def install(
    server: Any,
    coordinator: Coordinator,
    *,
    health: Any,
    readiness: Sequence[str] | None = None,
    liveness: str | None = None,
    signals: bool = True,
    admin_address: str | None = None,
    token: str | None = None,
    trust_loopback: bool | None = None,
    admin_registry: Any = None,
) -> GrpcInstallation:
    """Wire graceful shutdown into a `grpc.aio` server and its health servicer.

    Call it before `GrpcInstallation.serve`, once per server. The server must have been
    created with `interceptor` (*coordinator*'s).

    Args:
        server: A `grpc.aio.Server`, not started yet.
        coordinator: The coordinator that runs the sequence.
        health: The ``grpc_health.v1.health.aio.HealthServicer`` added to *server*.
        readiness: The service names that go NOT_SERVING at the announcement; default
            every name the servicer knows then, but *liveness*.
        liveness: The service name of the liveness probe: SERVING until the process
            exits (set SERVING when the server starts, if the servicer lacks it).
        signals: Let SIGTERM and SIGINT start the sequence, chained to the handlers
            already installed.
        admin_address: Serve ``/readyz``, ``/livez``, ``/shutdown`` (the preStop hook:
            a gRPC port speaks no HTTP/1.1) and ``/metrics`` on this port or Unix
            socket; default ``GRACESHUT_ADMIN_ADDRESS``, else none.
        token: Bearer token of ``/shutdown``; default ``GRACESHUT_TOKEN``, else the pod
            secret that ``graceshut prestop`` sends by itself.
        trust_loopback: As for `graceshut.starlette.install`.
        admin_registry: The prometheus-client registry of ``/metrics``; default the
            global one. The gRPC call counters are registered on it.

    Raises:
        RuntimeError: *server* was not created with this coordinator's `interceptor`.
        TypeError: *health* is not an asyncio health servicer.
        ValueError: *liveness* is also among *readiness*.
    """
    tracker = _trackers.get(coordinator)
    if tracker is None:
        raise RuntimeError(
            "create the server with graceshut's interceptor: grpc.aio.server("
            "interceptors=[graceshut.grpc.interceptor(coordinator)]); without it, calls "
            "are not counted and health Watch streams hold the drain"
        )
    if not callable(getattr(health, "set", None)) or not _is_async(health.set):
        raise TypeError(
            "health must be grpc_health.v1.health.aio.HealthServicer (the asyncio "
            f"servicer), not {type(health).__name__}"
        )
    if readiness is not None and isinstance(readiness, str):
        raise TypeError("readiness must be a list of service names, not one string")
    if liveness is not None and readiness is not None and liveness in readiness:
        raise ValueError(f"liveness={liveness!r} is also a readiness name: it would fail")
    address = parse_admin_address(admin_address)
    admin = None
    if address is not None:
        endpoint = ShutdownEndpoint(coordinator, token=token, trust_loopback=trust_loopback)
        admin = AdminListener(
            coordinator, endpoint, address, metrics=prometheus_metrics(admin_registry)
        )
        _register_metrics(tracker, admin_registry)
    installation = GrpcInstallation(
        server,
        coordinator,
        health,
        tuple(readiness) if readiness is not None else None,
        liveness,
        tracker,
        signals,
        admin,
    )
    coordinator.add_handler(
        installation.announce, phase="announce", timeout=1.0, name="graceshut-grpc-health"
    )
    coordinator.on_drain(installation.drain)
    return installation


_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _known(health: Any) -> list[str]:
    # The servicers keep no public list of their names (the List method is not served
    # by the asyncio one): their status map is the only record.
    return list(getattr(health, "_server_status", {}))


def _is_async(function: Any) -> bool:
    import inspect  # noqa: PLC0415 - only here

    return inspect.iscoroutinefunction(function)


@contextlib.contextmanager
def _server_signals(*, enabled: bool) -> Iterator[None]:
    """Stand in for a server's own SIGTERM/SIGINT handler where the default one is set.

    The signal chain hands the signal on once the sequence is over; the default action
    would then end the process in the middle of `serve`'s return (143, or a
    KeyboardInterrupt). The server has stopped by then: nothing more to do.
    """
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield
        return
    replaced = {}
    for signum in (signal.SIGTERM, signal.SIGINT):
        current = signal.getsignal(signum)
        if current in (signal.SIG_DFL, signal.default_int_handler, None):
            replaced[signum] = current
            signal.signal(signum, _stopped_already)
    try:
        yield
    finally:
        for signum, previous in replaced.items():
            if signal.getsignal(signum) is _stopped_already:
                # A SIGTERM that comes after the sequence (the kubelet's, after preStop)
                # must not turn a clean exit into 143.
                final = signal.SIG_IGN if signum == signal.SIGTERM else previous
                signal.signal(signum, final if final is not None else signal.SIG_DFL)


def _stopped_already(signum: int, frame: FrameType | None) -> None:
    """The "server's" handler: the server was stopped in the drain; `serve` returns."""


def _register_metrics(tracker: CallTracker, registry: Any) -> None:
    try:
        from ._grpc._metrics import register  # noqa: PLC0415 - needs prometheus-client
    except ImportError:
        return
    register(tracker, registry)
