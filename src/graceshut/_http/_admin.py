"""The admin listener: probes, the shutdown route and metrics on a port of their own.

Like Spring Boot's management port and Envoy's admin interface: a port (or a Unix
socket) that no Service exposes, so nothing relayed to the app's port can reach
``/shutdown`` there, and it keeps answering while the app's own listener is gone
(uvicorn closes its port as soon as its own shutdown begins, which is when a scrape of
``/metrics`` during the drain is most wanted).

It is the standard library's ``ThreadingHTTPServer`` on a daemon thread: no event loop
involved, so a probe is answered even while the loop is busy, and no hand-written HTTP
parsing. With several worker processes the first to bind serves the whole pod (the
readiness, the shutdown route and the report are pod-wide already); the others retry
every half second, so a sibling takes over when the serving worker is recycled.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import http.server
import logging
import os
import socket
import threading
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .._core._config import ConfigError
from . import _probes
from ._metrics import prometheus_metrics
from ._responses import NO_STORE, json_body
from ._shutdown_route import BAD_WAIT, method_not_allowed, parse_wait

if TYPE_CHECKING:
    from .._core._coordinator import Coordinator
    from ._shutdown_route import ShutdownEndpoint

__all__ = ["ENV_ADMIN_ADDRESS", "AdminListener", "parse_admin_address", "prometheus_metrics"]

logger = logging.getLogger("graceshut")

ENV_ADMIN_ADDRESS = "GRACESHUT_ADMIN_ADDRESS"
_RETRY = 0.5
Address = tuple[str, int] | str  # (host, port), or the path of a Unix socket
Answer = tuple[int, bytes, str, list[tuple[bytes, bytes]]]  # status, body, type, headers
Probe = Callable[[], tuple[int, dict[str, object]]]  # status and JSON body


def parse_admin_address(
    value: str | None, environ: Mapping[str, str] | None = None
) -> Address | None:
    """``PORT``, ``HOST:PORT``, ``[IPv6]:PORT`` or ``unix:/PATH``; None for no listener.

    *value* None means ``GRACESHUT_ADMIN_ADDRESS``. A bare port listens on every address
    (the kubelet's probes come to the pod IP).

    Raises:
        ConfigError: The value is malformed; the message names its source.
    """
    env = os.environ if environ is None else environ
    source, raw = (
        ("admin_address", value)
        if value is not None
        else (ENV_ADMIN_ADDRESS, env.get(ENV_ADMIN_ADDRESS))
    )
    if raw is not None and not isinstance(raw, str):
        raise ConfigError(f"{source}={raw!r} must be a string: PORT, HOST:PORT or unix:/PATH")
    if raw is None or raw.strip().lower() in ("", "off"):
        return None
    raw = raw.strip()
    if any(c.isspace() or not c.isprintable() for c in raw):
        raise ConfigError(f"{source}={raw!r} holds a space or a control character")
    if raw.startswith("unix:"):
        path = raw.removeprefix("unix:")
        if not Path(path).is_absolute():
            raise ConfigError(f"{source}={raw!r}: the Unix socket path must be absolute")
        return path
    host, port_text = "0.0.0.0", raw  # noqa: S104 - probes come to the pod IP
    if ":" in raw:
        try:  # "[::1" is a ValueError at the split already
            parsed = urlsplit(f"//{raw}")
            port_number = parsed.port
        except ValueError:
            raise ConfigError(f"{source}={raw!r} must be PORT, HOST:PORT or unix:/PATH") from None
        if parsed.hostname is None or port_number is None:
            raise ConfigError(f"{source}={raw!r} must be PORT, HOST:PORT or unix:/PATH")
        host, port_text = parsed.hostname, str(port_number)
    valid = port_text.isascii() and port_text.isdigit()
    if not valid or not 0 <= int(port_text) <= 65535:  # noqa: PLR2004
        raise ConfigError(f"{source}={raw!r} must be PORT, HOST:PORT or unix:/PATH")
    return host, int(port_text)


class AdminListener:
    """Serves ``/readyz``, ``/livez``, ``/shutdown`` and ``/metrics`` on *address*.

    Start it on the event loop's thread (the lifespan does it), stop it after the
    sequence. Only one process of a pod binds the address; `serving` says whether it
    is this one. *probes* replaces the answers of ``/readyz`` and ``/livez`` where the
    process knows better than the coordinator (a task worker: consuming, its own loop's
    heartbeat).
    """

    def __init__(
        self,
        coordinator: Coordinator,
        shutdown: ShutdownEndpoint,
        address: Address,
        *,
        metrics: Callable[[], tuple[bytes, str]] | None = None,
        probes: Mapping[str, Probe] | None = None,
    ) -> None:
        self.coordinator = coordinator
        self.probes = dict(probes or {})
        self.shutdown = shutdown
        self.address = address
        self.metrics = metrics
        self._server: http.server.ThreadingHTTPServer | None = None
        self._lock_fd: int | None = None
        self._stopped = threading.Event()
        self._release_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._run_on_loop: Callable[[Callable[[], Coroutine[Any, Any, Any]]], Any] | None = None
        self._answering, self._answered = 0, threading.Condition()

    @property
    def serving(self) -> bool:
        """Whether this process holds the listener (else a sibling worker does)."""
        return self._server is not None

    @property
    def bound_address(self) -> Address | None:
        """The address actually bound (the real port when 0 was asked), or None."""
        server = self._server
        if server is None:
            return None
        name = server.socket.getsockname()
        return name if isinstance(name, str) else (str(name[0]), int(name[1]))

    def start(self) -> None:
        """Bind now if the address is free, else keep retrying on a daemon thread."""
        self._run_on_loop = _loop_runner()
        self._stopped.clear()
        self._thread = threading.Thread(target=self._serve, name="graceshut-admin", daemon=True)
        bound = self._try_bind()
        self._thread.start()
        if not bound and not self._stopped.is_set():
            logger.debug("admin listener %s is served by another worker", self.address)

    def wait_answered(self, timeout: float) -> bool:
        """Block (in a thread) until no answer is being written (the report), or *timeout*."""
        with self._answered:
            return self._answered.wait_for(lambda: not self._answering, timeout)

    def _count_answering(self, delta: int) -> None:
        with self._answered:
            self._answering += delta
            self._answered.notify_all()

    def stop(self) -> None:
        """Stop serving and release the address (within ~0.2 s). Idempotent."""
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self._release()

    # -- binding ----------------------------------------------------------------------

    def _serve(self) -> None:
        try:
            while not self._stopped.is_set():
                server = self._server
                if server is None:
                    if not self._try_bind():
                        self._stopped.wait(_RETRY)
                    continue
                server.handle_request()  # returns after server.timeout when idle
        finally:
            self._release()

    def _try_bind(self) -> bool:
        """Bind the address; False when a sibling holds it (other errors stop retrying)."""
        if self._server is not None:
            return True
        try:
            if isinstance(self.address, str):
                server = self._bind_unix(self.address)
            else:
                server = _TCPServer(self.address, self._handler_class())
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                logger.warning("cannot listen on the admin address %s: %s", self.address, exc)
                self._stopped.set()
            return False
        server.timeout = 0.2
        self._server = server
        logger.info("admin listener on %s", self.bound_address, extra={"pid": os.getpid()})
        return True

    def _bind_unix(self, path: str) -> http.server.ThreadingHTTPServer:
        import fcntl  # noqa: PLC0415 - POSIX only

        # The lock says who serves; the kernel drops it when its holder dies, so a socket
        # file left by a killed process is known to be stale and replaced.
        fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise OSError(errno.EADDRINUSE, "held by another process") from None
        try:
            with contextlib.suppress(FileNotFoundError):
                Path(path).unlink()
            server = _UnixServer(path, self._handler_class())  # type: ignore[arg-type]
            Path(path).chmod(0o600)
        except BaseException:
            os.close(fd)
            raise
        self._lock_fd = fd
        return server

    def _release(self) -> None:
        with self._release_lock:
            self._release_locked()

    def _release_locked(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.server_close()
        if isinstance(self.address, str) and self._lock_fd is not None:
            with contextlib.suppress(OSError):
                Path(self.address).unlink()
            os.close(self._lock_fd)
            self._lock_fd = None

    def _handler_class(self) -> type[http.server.BaseHTTPRequestHandler]:
        listener = self

        class Handler(_AdminHandler):
            admin = listener

        return Handler

    # -- answers (on the listener's threads) -----------------------------------------

    def answer(
        self, method: str, target: str, headers: list[tuple[bytes, bytes]], client: object
    ) -> Answer:
        """Status, body, content type and extra headers for one request."""
        split = urlsplit(target)
        if split.path == "/shutdown":
            return self._shutdown(method, split.query, headers, client)
        if split.path not in ("/readyz", "/livez", "/metrics"):
            return _json(404, {"error": "not found"}, [])
        if method not in ("GET", "HEAD"):
            return _json(*method_not_allowed((b"GET", b"HEAD")))
        if split.path == "/metrics":
            if self.metrics is None:
                detail = "install graceshut[prometheus]"
                return _json(404, {"error": "no metrics", "detail": detail}, [])
            body, content_type = self.metrics()
            return 200, body, content_type, []
        probe = self.probes.get(split.path)
        if probe is None:
            answer = _probes.readiness if split.path == "/readyz" else _probes.liveness
            status, payload = answer(self.coordinator)
        else:
            status, payload = probe()
        return _json(status, payload, [])

    def _shutdown(
        self, method: str, query: str, headers: list[tuple[bytes, bytes]], client: object
    ) -> Answer:
        endpoint = self.shutdown
        if method.encode("latin-1", "replace") not in endpoint.allowed:
            return _json(*method_not_allowed(endpoint.allowed))
        refusal = endpoint.refusal(headers, client)
        if refusal is not None:
            return _json(*refusal)
        wait = parse_wait(query.encode("latin-1", "replace"))
        if wait is None:
            return _json(*BAD_WAIT)
        if not wait:
            return _json(202, endpoint.start(), [])
        run = self._run_on_loop
        if run is None:
            return _json(503, {"error": "not started"}, [])
        return _json(200, run(self._shutdown_and_report), [])

    async def _shutdown_and_report(self) -> dict[str, Any]:
        await self.coordinator.shutdown("prestop", pod_wide=True)
        return await self.coordinator.pod_report()


def _json(status: int, payload: object, headers: list[tuple[bytes, bytes]]) -> Answer:
    return status, json_body(payload), "application/json", headers


def _loop_runner() -> Callable[[Callable[[], Coroutine[Any, Any, Any]]], Any]:
    """Run a coroutine function on the current event loop from another thread, and wait."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        import trio  # noqa: PLC0415 - the loop is trio's

        token = trio.lowlevel.current_trio_token()
        return lambda func: trio.from_thread.run(func, trio_token=token)
    return lambda func: asyncio.run_coroutine_threadsafe(func(), loop).result()


class _TCPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], handler: type[http.server.BaseHTTPRequestHandler]
    ) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)

    def server_bind(self) -> None:
        # Without HTTPServer's getfqdn(): a DNS lookup at bind time helps nobody.
        _bind_without_fqdn(self)


class _UnixServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    address_family = socket.AF_UNIX
    allow_reuse_address = False

    def server_bind(self) -> None:
        _bind_without_fqdn(self)


def _bind_without_fqdn(server: http.server.HTTPServer) -> None:
    import socketserver  # noqa: PLC0415 - only for this call

    socketserver.TCPServer.server_bind(server)
    server.server_name = "graceshut-admin"
    server.server_port = 0


class _AdminHandler(http.server.BaseHTTPRequestHandler):
    admin: AdminListener
    server_version = "graceshut-admin"
    sys_version = ""
    timeout = 10  # a client that sends nothing must not hold a thread forever

    def _respond(self) -> None:
        self.admin._count_answering(+1)  # noqa: SLF001 - the listener's own handler
        try:
            self._answer()
        finally:
            self.admin._count_answering(-1)  # noqa: SLF001

    def _answer(self) -> None:
        headers = [
            (k.lower().encode("latin-1"), v.encode("latin-1", "replace"))
            for k, v in self.headers.items()
        ]
        client = self.client_address if isinstance(self.client_address, tuple) else None
        try:
            status, body, content_type, extra = self.admin.answer(
                self.command, self.path, headers, client
            )
        except Exception:
            logger.exception("admin listener failed to answer %s %s", self.command, self.path)
            status, body, content_type, extra = _json(500, {"error": "internal error"}, [])
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header(NO_STORE[0].decode(), NO_STORE[1].decode())
        for name, value in extra:
            self.send_header(name.decode(), value.decode())
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _respond  # noqa: N815

    def address_string(self) -> str:
        return str(self.client_address[0]) if isinstance(self.client_address, tuple) else "unix"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        logger.debug("admin listener: " + format, *args)  # noqa: G003
