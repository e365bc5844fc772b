"""WSGI apps (Flask, Django, any other): the drain middleware and the same routes.

`GracefulShutdownMiddleware` wraps any WSGI app::

    coordinator = graceshut.Coordinator()
    app = graceshut.wsgi.GracefulShutdownMiddleware(app, coordinator)

The coordinator's sequence runs on a thread of its own, with its own event loop, in
each worker process (handlers may be sync or async, as for ASGI apps). Under gunicorn,
start it with ``-c python:graceshut.gunicorn``; other servers need nothing more.

What WSGI allows, and what it does not:

- A request is counted from the call of the app until the server closes its response
  iterable, so the drain waits for the last byte of a streamed response.
- ``Connection: close``: PEP 3333 forbids the header to apps (waitress refuses it), so
  the middleware asks the server itself where the server offers a way (gunicorn's
  response object, reached through ``start_response``); elsewhere kept-alive
  connections stay open until the server stops.
- A request cannot be cancelled from outside its thread. A streamed response is cut
  (the connection closed without its last chunk, so it does not look complete) at its
  next chunk once the drain's share is over; a request still running in the app's code
  when the sequence has ended is given the safety margin, then the process exits.
"""

from __future__ import annotations

import functools
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from ._core._phases import Phase
from ._http._admin import AdminListener, parse_admin_address, prometheus_metrics
from ._http._arguments import check_install
from ._http._evidence import TrafficEvidence, client_and_server
from ._http._responses import DRAINING_BODY, retry_after_seconds
from ._http._wsgi_routes import ProbeRoute, ShutdownRoute
from ._http._wsgi_runtime import SequenceThread, runtimes
from .asgi import LivenessEndpoint, ReadinessEndpoint, ShutdownEndpoint

if TYPE_CHECKING:
    from ._core._coordinator import Coordinator
    from ._core._tracker import InFlight

__all__ = [
    "CLOSE_CONNECTION",
    "GracefulShutdownMiddleware",
    "StreamCutError",
    "expose_close_connection",
]

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]


class StreamCutError(RuntimeError):
    """Raised into the server to end a response still streaming after the drain."""


class GracefulShutdownMiddleware:
    """Counts in-flight requests, sheds traffic during shutdown, serves the routes.

    - From the first trigger, responses close their connection (where the server lets
      an app ask for it: see the module's notes).
    - From the drain step, new requests get 503 with ``Retry-After``.
    - ``/readyz``, ``/livez`` and ``/shutdown`` behave as in `graceshut.asgi`, with the
      same authentication; they are never refused and never counted.

    On a server whose worker handles one request at a time (``wsgi.multithread`` false:
    gunicorn's sync worker), the shutdown route answers 202 at once unless called with
    ``?wait=1``: a preStop hook waiting there would hold the only thread of its worker
    for the whole sequence. The SIGTERM that the kubelet sends next joins the run under
    way, so nothing is lost by not waiting.

    Args:
        app: The WSGI application to wrap.
        coordinator: The coordinator whose drain waits for the requests counted here.
        token: Bearer token for the shutdown route; default ``GRACESHUT_TOKEN``, else
            the pod secret, which ``graceshut prestop`` finds and sends by itself.
        shutdown_path: Path of the shutdown route, or None for no route.
        readiness_path: Path of the readiness probe, or None.
        liveness_path: Path of the liveness probe, or None.
        retry_after: ``Retry-After`` seconds on refused requests; by default the
            propagation delay rounded up, at least 1.
        signals: Install SIGTERM and SIGINT handlers, chained to the server's own.
        backend: The event loop of the sequence thread, ``"asyncio"`` or ``"trio"``.
        trust_loopback: Also let loopback clients without credentials call the shutdown
            route; default ``GRACESHUT_TRUST_LOOPBACK``, else off (see
            `graceshut.starlette.install`).
        admin_address: Serve the probes, the shutdown route and ``/metrics`` also on this
            port or Unix socket, one per pod; default ``GRACESHUT_ADMIN_ADDRESS``.
        admin_registry: The prometheus-client registry the admin listener serves.

    Raises:
        graceshut.ConfigError: A bad argument or variable, named; before anything starts.
    """

    def __init__(
        self,
        app: WSGIApp,
        coordinator: Coordinator,
        *,
        token: str | None = None,
        shutdown_path: str | None = "/shutdown",
        readiness_path: str | None = "/readyz",
        liveness_path: str | None = "/livez",
        retry_after: int | None = None,
        signals: bool = True,
        backend: str = "asyncio",
        trust_loopback: bool | None = None,
        admin_address: str | None = None,
        admin_registry: Any = None,
    ) -> None:
        check_install(
            shutdown_path=shutdown_path,
            readiness_path=readiness_path,
            liveness_path=liveness_path,
            retry_after=retry_after,
            signals=signals,
            token=token,
            trust_loopback=trust_loopback,
            backend=backend,
        )
        self.app = app
        self.coordinator = coordinator
        self.runtime = _runtime_for(coordinator, signals=signals, backend=backend)
        self.runtime.count_in_flight = lambda: coordinator.in_flight.count
        if coordinator.settings.propagation_auto and coordinator.in_flight.evidence is None:
            coordinator.in_flight.evidence = TrafficEvidence(coordinator.in_flight)
        self.routes: dict[str, WSGIApp] = {}
        address = parse_admin_address(admin_address)
        guarded = None  # one endpoint, one pod secret, for this route and the admin listener
        if shutdown_path is not None or address is not None:
            guarded = ShutdownEndpoint(coordinator, token=token, trust_loopback=trust_loopback)
        if shutdown_path is not None and guarded is not None:
            self.routes[shutdown_path] = ShutdownRoute(guarded, self.runtime)
        if address is not None and guarded is not None:
            self.runtime.admin = AdminListener(
                coordinator, guarded, address, metrics=prometheus_metrics(admin_registry)
            )
        if readiness_path is not None:
            self.routes[readiness_path] = ProbeRoute(ReadinessEndpoint(coordinator).answer)
        if liveness_path is not None:
            self.routes[liveness_path] = ProbeRoute(LivenessEndpoint(coordinator).answer)
        seconds = retry_after_seconds(retry_after, coordinator.settings.propagation_delay)
        self._refusal_body = DRAINING_BODY
        self._refusal_headers = [
            ("Content-Type", "application/json"),
            ("Retry-After", str(seconds)),
            ("Content-Length", str(len(self._refusal_body))),
        ]
        self._lock = threading.Lock()
        if not _deferred_to_server_hook():
            self.runtime.start()

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        """Handle one request."""
        if not self.runtime.started:
            # Loaded before a fork (uWSGI without lazy-apps) or a server hook that never
            # ran: start in this process now, better late than never.
            self.runtime.start()
        route = self.routes.get(environ.get("PATH_INFO", ""))
        if route is not None:
            return route(environ, start_response)
        coordinator = self.coordinator
        if coordinator.draining:
            with self._lock:
                coordinator.in_flight.refused += 1
            _close_connection(environ, start_response)
            start_response("503 Service Unavailable", self._refusal_headers)
            return [self._refusal_body]
        with self._lock:
            coordinator.in_flight.enter()
        try:
            if coordinator.shutting_down:
                evidence = coordinator.in_flight.evidence
                if evidence is not None:
                    evidence.arrived(*client_and_server(environ))
                _close_connection(environ, start_response)
            result = self.app(environ, self._starter(environ, start_response))
        except BaseException:
            self._exit()
            raise
        return _Tracked(result, self)

    def _starter(self, environ: Environ, start_response: StartResponse) -> StartResponse:
        coordinator = self.coordinator

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            # The trigger may come while the app runs: ask again as the response starts.
            if coordinator.shutting_down:
                _close_connection(environ, start_response)
            return start_response(status, headers, exc_info)

        return start

    def _exit(self) -> None:
        coordinator = self.coordinator
        with self._lock:
            in_flight = coordinator.in_flight
            if in_flight.count > 1 or not coordinator.shutting_down:
                # Not the last one, or nobody waits for it: no drain to wake.
                in_flight.ended += 1
                return
        # The last request of a drain: its exit wakes the drain's waiter, which belongs
        # to the loop thread, so it is made there (under the same lock as the others).
        try:
            self.runtime.call_soon(functools.partial(self._exit_on_loop, in_flight))
        except RuntimeError:  # the loop is gone (interpreter exit): nobody waits
            self._exit_on_loop(in_flight)

    def _exit_on_loop(self, in_flight: InFlight) -> None:
        with self._lock:
            in_flight.exit()

    def _stream_over(self) -> bool:
        """Whether the drain's share is spent: a response still streaming is cut."""
        coordinator = self.coordinator
        return coordinator.draining and coordinator.phase is not Phase.DRAIN


class _Tracked:
    """The app's response iterable, counted until the server closes it."""

    __slots__ = ("_closed", "_middleware", "_result")

    def __init__(self, result: Iterable[bytes], middleware: GracefulShutdownMiddleware) -> None:
        self._result = result
        self._middleware = middleware
        self._closed = False

    def __iter__(self) -> Iterator[bytes]:
        middleware = self._middleware
        for chunk in self._result:
            if middleware._stream_over():  # noqa: SLF001 - same module
                # An exception, not the end of the iterable: the server then closes the
                # connection without a last chunk, so the client sees the cut.
                raise StreamCutError("response cut: the shutdown deadline has passed")
            yield chunk

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            close = getattr(self._result, "close", None)
            if close is not None:
                close()
        finally:
            self._middleware._exit()  # noqa: SLF001 - same module


#: The environ key of a callable that makes the server close this request's connection.
CLOSE_CONNECTION = "graceshut.close_connection"


def expose_close_connection(app: WSGIApp) -> WSGIApp:
    """Wrap a server's outermost app so that graceshut can close connections under it.

    gunicorn passes its response's bound ``start_response``, whose ``force_close`` makes
    it send ``Connection: close`` and close (its gthread worker keeps connections
    alive); a middleware between it and graceshut's would hide it, so
    `graceshut.gunicorn` puts this wrapper outermost and the environ carries the way.
    """

    def outermost(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        force_close = getattr(getattr(start_response, "__self__", None), "force_close", None)
        if callable(force_close):
            environ[CLOSE_CONNECTION] = force_close
        return app(environ, start_response)

    return outermost


def _close_connection(environ: Environ, start_response: StartResponse) -> None:
    """Ask the server to close the connection after this response, where it offers a way."""
    force_close = environ.get(CLOSE_CONNECTION) or getattr(
        getattr(start_response, "__self__", None), "force_close", None
    )
    if callable(force_close):
        force_close()


def _runtime_for(coordinator: Coordinator, *, signals: bool, backend: str) -> SequenceThread:
    """One sequence thread per coordinator, however many apps it wraps."""
    for runtime in runtimes():
        if runtime.coordinator is coordinator:
            return runtime
    return SequenceThread(coordinator, signals=signals, backend=backend)


def _deferred_to_server_hook() -> bool:
    """Whether the thread must wait to be started in each worker process.

    An app loaded in a master before it forks its workers (gunicorn's ``preload_app``,
    uWSGI without ``lazy-apps``) must not start a thread there: it would not survive
    the fork. With ``graceshut.gunicorn`` loaded, its ``post_worker_init`` starts it.
    """
    if "graceshut.gunicorn" in sys.modules and "gunicorn.arbiter" in sys.modules:
        return True
    # uWSGI without lazy-apps loads the app in its master (worker id 0) and forks: the
    # first request of each worker starts it there.
    uwsgi = sys.modules.get("uwsgi")
    return uwsgi is not None and getattr(uwsgi, "worker_id", lambda: 1)() == 0
