"""Waiting for the app to be ready, and telling why it is not: the app or the port."""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import time
from typing import TYPE_CHECKING

from ._actions import Action, Exec, Grpc, HttpGet, TcpSocket
from ._container import Container
from ._kubelet import describe_exit
from ._preflight import port_taken
from ._timeline import Timeline

if TYPE_CHECKING:
    from ._run import Plan


def wait_ready(plan: Plan, container: Container, timeline: Timeline) -> str | None:
    """None once the readiness probe passes, else why the run cannot go on."""
    probe = plan.readiness
    what = probe.action.describe(plan.target)
    deadline = time.monotonic() + plan.ready_timeout
    last = "nothing"
    while time.monotonic() < deadline:
        status = container.wait(0)
        if status is not None:
            return f"the app exited ({describe_exit(status)}) before it was ready"
        result = probe.check(plan.target, plan.env)
        if result.ok:
            timeline.add("ready", f"{what}: {result.summary()}")
            return None
        last = result.summary()
        if result.error == "connection refused" and _listens_on_loopback_only(plan, probe.action):
            # Someone else's socket first: the app may have failed to bind the port.
            taken = port_taken(plan.load.port, container.process.pid)
            if taken is not None:
                return taken
            return (
                f"the app listens on 127.0.0.1 only, but in a pod the kubelet's probes and "
                f"hooks and the Service's traffic come to the pod IP ({plan.target.host}): "
                "bind it to 0.0.0.0 (uvicorn --host 0.0.0.0), or pass --pod-ip 127.0.0.1"
            )
        time.sleep(0.1)
    return f"not ready after {plan.ready_timeout:g}s: {what} answered {last}"


def _listens_on_loopback_only(plan: Plan, action: Action) -> bool:
    if isinstance(action, (Exec,)) or _is_loopback(plan.target.host):
        return False
    if not isinstance(action, (HttpGet, TcpSocket, Grpc)) or getattr(action, "host", None):
        return False
    return loopback_only(plan.target.host, plan.target.port(action.port))


def loopback_only(host: str, port: int) -> bool:
    """Whether *port* accepts on 127.0.0.1 and, looked at next, refuses on *host*.

    In that order: an app that bound its port on every address since the refusal that
    led here (a slow start) is open on both, and is not told that it listens on
    loopback only.
    """
    with contextlib.suppress(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        try:
            socket.create_connection((host, port), timeout=1).close()
        except ConnectionRefusedError:
            return True
    return False


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def pod_ip() -> str | None:
    """This machine's address on its default route, as a pod's IP is: None when offline.

    Connecting a UDP socket sends nothing; it only asks the kernel for the route.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))
            address = str(probe.getsockname()[0])
        except OSError:
            return None
    return None if _is_loopback(address) or address == "0.0.0.0" else address  # noqa: S104
