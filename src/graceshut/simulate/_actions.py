"""Hooks and probes as the kubelet runs them: ``httpGet``, ``exec``, ``sleep``, ``tcpSocket``.

A hook's ``httpGet`` succeeds on any HTTP answer (the kubelet ignores status and body);
only a transport error fails it. A probe's ``httpGet`` succeeds on 200-399. ``exec``
succeeds on exit status 0, ``tcpSocket`` when the connection opens.
"""

from __future__ import annotations

import dataclasses
import http.client
import shlex
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Mapping

HOOK_USER_AGENT = "kube-lifecycle/graceshut-simulate"
PROBE_USER_AGENT = "kube-probe/graceshut-simulate"
_OUTPUT_LIMIT = 64 * 1024


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


Action = HttpGet | Exec | Sleep | TcpSocket


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
    port = target.port(action.port)
    connection: http.client.HTTPConnection
    if action.scheme.upper() == "HTTPS":
        # The kubelet does not verify the certificate of a hook or probe either.
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        connection = http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
    else:
        connection = http.client.HTTPConnection(host, port, timeout=timeout)
    names = {name.lower() for name, _ in action.headers}
    try:
        connection.putrequest(
            "GET", action.path, skip_host="host" in names, skip_accept_encoding=True
        )
        if "user-agent" not in names:
            connection.putheader("User-Agent", PROBE_USER_AGENT if probe else HOOK_USER_AGENT)
        for name, value in action.headers:
            connection.putheader(name, value)
        connection.endheaders()
        response = connection.getresponse()
        body = response.read()
    except (OSError, http.client.HTTPException) as exc:
        return Result(ok=False, duration=0.0, error=describe_error(exc))
    finally:
        connection.close()
    ok = 200 <= response.status < 400 if probe else True  # noqa: PLR2004 - the probe's rule
    return Result(ok=ok, duration=0.0, status=response.status, body=body)


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
