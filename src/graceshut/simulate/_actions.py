"""Hooks and probes as the kubelet runs them: ``httpGet``, ``exec``, ``sleep``, ``tcpSocket``.

A hook's ``httpGet`` succeeds on any HTTP answer (the kubelet ignores status and body);
only a transport error fails it. A probe's ``httpGet`` succeeds on 200-399. Both follow
redirects to the same host, as Go's client does: 10 requests in all (a tenth redirect
fails the request; a redirect to another host ends the request with the 3xx as its
answer), keeping their headers. An ``https`` hook answered
by plain HTTP is sent again over HTTP without its ``Authorization`` header (the kubelet's
``LifecycleHTTPFallback``); a probe is not. ``exec`` succeeds on exit status 0,
``tcpSocket`` when the connection opens; as a hook, ``tcpSocket`` is an invalid handler
that fails at once (the API still accepts it, the kubelet cannot run it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import shlex
import socket
import ssl
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Mapping

HOOK_USER_AGENT = "kube-lifecycle/graceshut-simulate"
PROBE_USER_AGENT = "kube-probe/graceshut-simulate"
_OUTPUT_LIMIT = 64 * 1024
MAX_REDIRECTS = 10
"""Requests in all, the first one included: Go's "stopped after 10 redirects"."""
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
INVALID_HANDLER = (
    "invalid handler: the kubelet cannot run a tcpSocket preStop hook (FailedPreStopHook)"
)


@dataclasses.dataclass(frozen=True)
class Target:
    """Where the pod is: its IP, and the local port behind each container port."""

    host: str
    ports: Mapping[int, int] = dataclasses.field(default_factory=dict)
    names: Mapping[str, int] = dataclasses.field(default_factory=dict)

    def port(self, port: int | str) -> int:
        """The local port for a container port given by number or by name."""
        if isinstance(port, str):
            if not port.isdigit():
                if port not in self.names:
                    raise ValueError(f"no container port is named {port!r}")
                port = self.names[port]
            else:
                port = int(port)
        return self.ports.get(port, port)


@dataclasses.dataclass(frozen=True)
class HttpGet:
    """An ``httpGet`` handler."""

    path: str = "/"
    port: int | str = 80
    host: str | None = None
    scheme: str = "HTTP"
    headers: tuple[tuple[str, str], ...] = ()

    def url(self, target: Target) -> str:
        """The URL the kubelet would call."""
        host = self.host or target.host
        return f"{self.scheme.lower()}://{host}:{target.port(self.port)}{self.path}"

    def describe(self, target: Target) -> str:
        """One line for the report; header values stay out of it (they hold tokens)."""
        names = ", ".join(name for name, _ in self.headers)
        return f"httpGet {self.url(target)}" + (f" with {names}" if names else "")


@dataclasses.dataclass(frozen=True)
class Exec:
    """An ``exec`` handler: the command runs here, with the container's environment."""

    command: tuple[str, ...]

    def describe(self, target: Target) -> str:
        """One line for the report."""
        return f"exec {shlex.join(self.command)}"


@dataclasses.dataclass(frozen=True)
class Sleep:
    """The ``sleep`` action: the kubelet itself waits, nothing runs in the container."""

    seconds: float

    def describe(self, target: Target) -> str:
        """One line for the report."""
        return f"sleep {self.seconds:g}s"


@dataclasses.dataclass(frozen=True)
class TcpSocket:
    """A ``tcpSocket`` probe."""

    port: int | str
    host: str | None = None

    def describe(self, target: Target) -> str:
        """One line for the report."""
        return f"tcpSocket {self.host or target.host}:{target.port(self.port)}"


@dataclasses.dataclass(frozen=True)
class Grpc:
    """A ``grpc`` probe: the health service's ``Check`` for *service* (Kubernetes 1.27+)."""

    port: int
    service: str = ""

    def describe(self, target: Target) -> str:
        """One line for the report."""
        return f"grpc {target.host}:{target.port(self.port)} service={self.service!r}"


Action = HttpGet | Exec | Sleep | TcpSocket | Grpc


@dataclasses.dataclass(frozen=True)
class Result:
    """How one run of a hook or probe went."""

    ok: bool
    duration: float
    status: int | None = None
    body: bytes = b""
    exit_status: int | None = None
    output: str = ""
    error: str | None = None
    redirects: tuple[str, ...] = ()
    """The URLs redirected to, in order."""
    fell_back_to_http: bool = False
    """An https hook answered by plain HTTP, sent again over HTTP without Authorization."""

    def summary(self) -> str:
        """A few words: ``HTTP 200``, ``exit status 1``, ``connection refused``."""
        if self.error is not None:
            return self.error
        if self.status is not None:
            return f"HTTP {self.status}"
        if self.exit_status is not None:
            return f"exit status {self.exit_status}"
        return "done"


def run(
    action: Action,
    target: Target,
    env: Mapping[str, str],
    timeout: float,
    *,
    probe: bool = False,
    cancel: threading.Event | None = None,
) -> Result:
    """Run *action* once, as a hook (any HTTP answer is a success) or as a probe."""
    started = time.monotonic()
    if isinstance(action, HttpGet):
        result = _http_get(action, target, timeout, probe=probe)
    elif isinstance(action, Exec):
        result = _exec(action, env, timeout, cancel or threading.Event())
    elif isinstance(action, Sleep):
        (cancel or threading.Event()).wait(action.seconds)
        result = Result(ok=True, duration=0.0)
    elif not probe:
        result = Result(ok=False, duration=0.0, error=INVALID_HANDLER)
    elif isinstance(action, Grpc):
        from ._grpc import check  # noqa: PLC0415 - needs graceshut[grpc]

        result = check(action.service, target.host, target.port(action.port), timeout)
    else:
        result = _tcp_socket(action, target, timeout)
    return dataclasses.replace(result, duration=time.monotonic() - started)


def describe_error(exc: BaseException) -> str:
    """A short name for a transport error, as the report counts them."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "connection closed without a response"
    if isinstance(exc, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
        return "connection reset"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, http.client.IncompleteRead):
        return "connection closed in the middle of the response"
    return f"{type(exc).__name__}: {exc}"


def _http_get(action: HttpGet, target: Target, timeout: float, *, probe: bool) -> Result:
    host = action.host or target.host
    scheme, port, path = action.scheme.upper(), target.port(action.port), action.path
    headers, redirects, fell_back = action.headers, list[str](), False
    while True:
        try:
            status, location, body = _get(
                scheme, host, port, path, headers=headers, timeout=timeout, probe=probe
            )
        except ssl.SSLError as exc:
            if probe or scheme != "HTTPS" or not _answers_plain_http(host, port, timeout):
                return _failed(exc, redirects, fell_back)
            # The kubelet tries again over HTTP, and drops the token it would leak there.
            scheme, fell_back = "HTTP", True
            headers = tuple(h for h in headers if h[0].lower() != "authorization")
            continue
        except (OSError, http.client.HTTPException) as exc:
            if fell_back:  # the kubelet then reports the first error, not the retry's
                error = (
                    f"server gave HTTP response to HTTPS client; over HTTP: {describe_error(exc)}"
                )
                return Result(ok=False, duration=0.0, error=error, redirects=tuple(redirects))
            return _failed(exc, redirects, fell_back)
        if status not in _REDIRECTS or not location:
            break
        current = f"{scheme.lower()}://{host}:{port}{path}"
        url = urllib.parse.urlsplit(urllib.parse.urljoin(current, location))
        if url.hostname != host:
            break  # another host: the 3xx is the answer (Go's ErrUseLastResponse)
        if len(redirects) + 1 >= MAX_REDIRECTS:  # Go counts the requests made (`via`)
            error = f"stopped after {MAX_REDIRECTS} redirects"
            return Result(ok=False, duration=0.0, error=error, redirects=tuple(redirects))
        redirects.append(url.geturl())
        scheme = url.scheme.upper()
        port = url.port or (443 if scheme == "HTTPS" else 80)
        path = (url.path or "/") + (f"?{url.query}" if url.query else "")
    ok = 200 <= status < 400 if probe else True  # noqa: PLR2004 - the probe's rule
    return Result(
        ok=ok,
        duration=0.0,
        status=status,
        body=body,
        redirects=tuple(redirects),
        fell_back_to_http=fell_back,
    )


def _failed(exc: BaseException, redirects: list[str], fell_back: bool) -> Result:
    return Result(
        ok=False,
        duration=0.0,
        error=describe_error(exc),
        redirects=tuple(redirects),
        fell_back_to_http=fell_back,
    )


def _get(
    scheme: str,
    host: str,
    port: int,
    path: str,
    *,
    headers: tuple[tuple[str, str], ...],
    timeout: float,
    probe: bool,
) -> tuple[int, str | None, bytes]:
    """One GET: the status, the ``Location`` header and the body."""
    connection: http.client.HTTPConnection
    if scheme == "HTTPS":
        connection = http.client.HTTPSConnection(
            host, port, timeout=timeout, context=_insecure_context()
        )
    else:
        connection = http.client.HTTPConnection(host, port, timeout=timeout)
    names = {name.lower() for name, _ in headers}
    try:
        connection.putrequest("GET", path, skip_host="host" in names, skip_accept_encoding=True)
        if "user-agent" not in names:
            connection.putheader("User-Agent", PROBE_USER_AGENT if probe else HOOK_USER_AGENT)
        for name, value in headers:
            connection.putheader(name, value)
        connection.endheaders()
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    return response.status, response.getheader("Location"), body


def _insecure_context() -> ssl.SSLContext:
    # The kubelet does not verify the certificate of a hook or probe either.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _answers_plain_http(host: str, port: int, timeout: float) -> bool:
    """Whether the server answers a TLS hello with HTTP (Go: "server gave HTTP response").

    The same test as Go's client: the first bytes back are ``HTTP/``, not a TLS record.
    """
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = _insecure_context().wrap_bio(incoming, outgoing)
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    head = b""
    with (
        contextlib.suppress(OSError),
        socket.create_connection((host, port), timeout=timeout) as sock,
    ):
        sock.sendall(outgoing.read())
        while len(head) < 5:  # noqa: PLR2004 - the length of a TLS record header
            chunk = sock.recv(5 - len(head))
            if not chunk:
                break
            head += chunk
    return head.startswith(b"HTTP/")


def _exec(action: Exec, env: Mapping[str, str], timeout: float, cancel: threading.Event) -> Result:
    try:
        process = subprocess.Popen(  # noqa: S603 - the command comes from the user's manifest
            action.command,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as exc:
        return Result(ok=False, duration=0.0, error=f"cannot run {action.command[0]}: {exc}")
    deadline = time.monotonic() + timeout
    while True:
        try:
            stdout, stderr = process.communicate(timeout=0.05)
            break
        except subprocess.TimeoutExpired:
            if cancel.is_set() or time.monotonic() > deadline:
                process.kill()
                stdout, stderr = process.communicate()
                why = "stopped with the container" if cancel.is_set() else "timed out"
                return Result(
                    ok=False, duration=0.0, output=_text(stdout), error=f"{why}: {_text(stderr)}"
                )
    status = process.returncode
    detail = _text(stderr).strip()
    error = None if status == 0 else f"exit status {status}" + (f": {detail}" if detail else "")
    return Result(
        ok=status == 0, duration=0.0, exit_status=status, output=_text(stdout), error=error
    )


def _tcp_socket(action: TcpSocket, target: Target, timeout: float) -> Result:
    address = (action.host or target.host, target.port(action.port))
    try:
        with socket.create_connection(address, timeout=timeout):
            pass
    except OSError as exc:
        return Result(ok=False, duration=0.0, error=describe_error(exc))
    return Result(ok=True, duration=0.0)


def _text(data: bytes) -> str:
    return data[-_OUTPUT_LIMIT:].decode(errors="replace")
