"""The zero-drop proof: a rolling restart behind a real load balancer, with and without graceshut.

Two instances of the e2e app behind HAProxy, which health-checks ``/readyz`` and, in TCP
mode with no retries and no redispatch, behaves like kube-proxy: it balances
connections, not requests; a connection it opened to a pod stays on that pod until one
side closes it; a pod marked down gets no new connections; a failed connection attempt
is the client's failure. Keep-alive clients put steady load on it, then one instance is
terminated as the kubelet does it (preStop ``GET /shutdown``, then SIGTERM).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from graceshut._process import _proc as proc
from graceshut.simulate._actions import HttpGet, Target
from graceshut.simulate._container import Container
from graceshut.simulate._kubelet import Termination, terminate
from graceshut.simulate._load import LoadGenerator, LoadSpec
from graceshut.simulate._timeline import Timeline

from ..asgi_servers import Server, free_port, pod_credential
from .h2_load import Http2Load

pytestmark = pytest.mark.e2e

StartServer = Callable[..., Server]
GRACE_PERIOD = 20  # the servers' GRACESHUT_GRACE_PERIOD (tests/asgi_servers.py)
RATE = 200
CLIENTS = 8

HAPROXY_CONFIG = """\
global
    maxconn 1000
    stats socket {socket} mode 600 level admin

defaults
    mode tcp
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    # kube-proxy neither retries nor sends a failed attempt elsewhere: the client sees it.
    retries 0
    no option redispatch

frontend service
    bind 127.0.0.1:{port}
    default_backend pods

backend pods
    balance roundrobin
    option httpchk GET /readyz
    # A 503 fails a check at once; a pod slow to answer on a loaded machine does not.
    timeout check 5s
    default-server inter {inter} fall 1 rise 1
{servers}
"""


class HAProxy:
    """A HAProxy process in front of the given ports."""

    def __init__(
        self,
        directory: Path,
        ports: list[int],
        *,
        up: int | None = None,
        template: str = HAPROXY_CONFIG,
        inter: str = "500ms",
    ) -> None:
        # Debian puts it in /usr/sbin, which is not on every user's PATH.
        binary = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin")
        if binary is None:
            pytest.fail(
                "haproxy is not installed: the rolling-restart proof needs a real load "
                "balancer. Install it with: apt-get install -y haproxy"
            )
        self.port = free_port()
        self.socket = directory / "haproxy.sock"
        if len(str(self.socket)) > 100:  # a Unix socket path has room for about 107 bytes
            self.socket = Path(tempfile.mkdtemp(prefix="haproxy-")) / "sock"
        servers = "\n".join(
            f"    server pod{i} 127.0.0.1:{port} check" for i, port in enumerate(ports)
        )
        config = directory / "haproxy.cfg"
        config.write_text(
            template.format(socket=self.socket, port=self.port, servers=servers, inter=inter)
        )
        self.log = directory / "haproxy.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [binary, "-f", str(config), "-db"], stdout=log, stderr=subprocess.STDOUT
            )
        up = len(ports) if up is None else up
        # Servers not started yet must be seen DOWN before any load comes: HAProxy counts
        # a server UP until its first check fails.
        self.wait_for({f"pod{i}": "UP" if i < up else "DOWN" for i in range(len(ports))})

    def servers(self) -> dict[str, dict[str, str]]:
        """``show stat`` of the backend's servers: status, stot (connections)..."""
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(self.socket))
            s.sendall(b"show stat\n")
            raw = b""
            while chunk := s.recv(65536):
                raw += chunk
        header, *rows = raw.decode().strip().splitlines()
        names = header.lstrip("# ").split(",")
        table = [dict(zip(names, row.split(","), strict=False)) for row in rows]
        return {r["svname"]: r for r in table if r["pxname"] == "pods" and r["svname"][:3] == "pod"}

    def wait_for(self, states: dict[str, str], timeout: float = 10) -> None:
        """Until each named server's status starts with the given one (UP, DOWN)."""
        deadline = time.monotonic() + timeout
        seen: dict[str, str] = {}
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"haproxy exited: {self.log.read_text()}")
            try:
                seen = {name: s["status"] for name, s in self.servers().items()}
            except OSError:
                seen = {}
            if all(seen.get(name, "").startswith(state) for name, state in states.items()):
                return
            time.sleep(0.05)
        pytest.fail(f"haproxy did not see {states} (saw {seen}): {self.log.read_text()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(5)


@pytest.fixture
def haproxy(tmp_path: Path) -> Iterator[Callable[..., HAProxy]]:
    """Start HAProxy in front of ports; stopped at teardown."""
    started: list[HAProxy] = []

    def start(ports: list[int], *, up: int | None = None, **options: Any) -> HAProxy:
        proxy = HAProxy(tmp_path, ports, up=up, **options)
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()


@dataclasses.dataclass
class Roll:
    """What one rolling restart did."""

    requests: dict[str, Any]
    samples: list[str]
    termination: Termination
    before: dict[str, dict[str, str]]
    after: dict[str, dict[str, str]]
    output: str


def roll(
    kind: str,
    start_server: StartServer,
    haproxy: Callable[..., HAProxy],
    env: dict[str, str],
    *,
    prestop: bool = True,
    http2: bool = False,
) -> Roll:
    """Two instances behind HAProxy under load; the first is terminated like the kubelet does.

    The load comes from HTTP/1.1 keep-alive clients, or with *http2* from HTTP/2 clients.
    """
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        pods = list(pool.map(lambda _: start_server(kind, env), range(2)))
    proxy = haproxy([pod.port for pod in pods])
    load: Http2Load | LoadGenerator
    if http2:
        load = Http2Load(f"http://127.0.0.1:{proxy.port}/", rate=RATE, clients=CLIENTS)
    else:
        load = steady_load(proxy)
    load.start()
    try:
        before = wait_for_load(proxy, ["pod0", "pod1"], at_least=1.5)
        leaving = pods[0]
        termination = kubelet_terminate(leaving, prestop=prestop)
        time.sleep(0.5)  # the one left carries the whole load
    finally:
        load.stop()
        # Before the kill: a health check right after it would see the pod left DOWN.
        after = proxy.servers()
        for pod in pods:
            kill_tree(pod.process.pid)
    if isinstance(load, Http2Load):
        requests, samples = load.snapshot(), load.samples
    else:
        requests = load.stats.snapshot()
        samples = [f"{f.kind}: {f.detail}" for f in load.stats.samples]
    return Roll(requests, samples, termination, before, after, leaving.output())


def wait_for_load(
    proxy: HAProxy, names: list[str], *, at_least: float, timeout: float = 30
) -> dict[str, dict[str, str]]:
    """Until the load has run *at_least* seconds and reached each named server.

    The load's clients start slowly on a loaded machine: a fixed wait could end before
    they had a connection to every pod.
    """
    started = time.monotonic()
    while True:
        servers = proxy.servers()
        reached = all(int(servers[name]["stot"]) > 0 for name in names)
        if reached and time.monotonic() >= started + at_least:
            return servers
        assert time.monotonic() < started + timeout, f"the load never reached {names}: {servers}"
        time.sleep(0.1)


def steady_load(proxy: HAProxy) -> LoadGenerator:
    """Keep-alive clients sending RATE requests per second through the load balancer."""
    return LoadGenerator(
        LoadSpec("127.0.0.1", proxy.port, paths=("/",), rate=RATE, concurrency=CLIENTS, timeout=5)
    )


def kubelet_terminate(pod: Server, *, prestop: bool = True) -> Termination:
    """Stop *pod* as the kubelet does: preStop ``GET /shutdown``, SIGTERM, SIGKILL at the end."""
    return terminate(
        Container(pod.process, own_group=False),
        hook=HttpGet(
            path="/shutdown", port=pod.port, headers=tuple(pod_credential(required=False).items())
        )
        if prestop
        else None,
        grace_period=GRACE_PERIOD,
        target=Target("127.0.0.1"),
        env=os.environ,
        timeline=Timeline(),
    )


def kill_tree(pid: int) -> None:
    """SIGKILL a server and its worker processes (a gunicorn worker outlives its master)."""
    for child in children(pid):
        kill_tree(child)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def children(pid: int) -> list[int]:
    """The processes whose parent is *pid*, from /proc."""
    return [p.pid for p in proc.all_processes() if p.ppid == pid]


def assert_the_load_reached_both(result: Roll) -> None:
    # A loaded machine sends fewer than RATE asks for; enough to be load, and to have
    # reached both pods (below).
    assert result.requests["sent"] >= RATE // 4, result.requests
    assert int(result.before["pod0"]["stot"]) > 0, "the leaving pod had connections"
    assert int(result.before["pod1"]["stot"]) > 0
    assert result.after["pod0"]["status"].startswith("DOWN")
    assert result.after["pod1"]["status"] == "UP"


@pytest.mark.parametrize(
    "kind",
    [
        "uvicorn",
        "gunicorn",
        "hypercorn-asyncio",
        "hypercorn-trio",
        "hypercorn-cli",
        "gunicorn-4",
        "uvicorn-4",
    ],
)
def test_rolling_restart_drops_nothing_with_graceshut(
    kind: str, start_server: StartServer, haproxy: Callable[..., HAProxy]
) -> None:
    """preStop /shutdown then SIGTERM behind a load balancer: not one request fails."""
    result = roll(kind, start_server, haproxy, {"GRACESHUT_PROPAGATION_DELAY": "1.5"})
    assert_the_load_reached_both(result)
    requests = result.requests
    assert requests["failed"] == 0, (requests, result.samples, result.output)
    # The leaving pod's keep-alive connections were told to close during the delay:
    # it was serving them when the termination began.
    assert requests["closed_by_server"] > 0, requests
    done = result.termination
    assert done.hook_result is not None
    assert done.hook_result.status == 200, (done.hook_result, result.output)
    assert done.sigkill_at is None
    if kind == "hypercorn-cli":
        return  # its exit status is hypercorn's own (docs/servers.md)
    assert done.exit_status == 0, result.output


def test_rolling_restart_without_graceshut_drops_requests(
    start_server: StartServer,
    haproxy: Callable[..., HAProxy],
    capsys: pytest.CaptureFixture[str],
    record_property: Callable[[str, object], None],
) -> None:
    """The same app and termination without graceshut: the load balancer's clients see failures."""
    result = roll("uvicorn-plain", start_server, haproxy, {})
    assert_the_load_reached_both(result)
    requests = result.requests
    record_property("baseline_failed_requests", requests["failed"])
    with capsys.disabled():
        print(
            f"\nrolling restart without graceshut: {requests['failed']} of {requests['sent']} "
            f"requests failed {requests['failures']}"
        )
    assert requests["failed"] > 0, requests


@pytest.mark.parametrize(
    ("kind", "zero"),
    [
        ("uvicorn", True),
        ("gunicorn", True),
        ("hypercorn-asyncio", True),
        ("hypercorn-trio", True),
        # hypercorn's command line closes its listener on SIGTERM before the app hears of
        # it: the pod still gets new connections for a moment, and they are refused.
        ("hypercorn-cli", False),
    ],
)
def test_rolling_restart_with_sigterm_alone(
    kind: str,
    zero: bool,
    start_server: StartServer,
    haproxy: Callable[..., HAProxy],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """No preStop hook: zero drops wherever graceshut holds SIGTERM; hypercorn's CLI drops."""
    result = roll(
        kind, start_server, haproxy, {"GRACESHUT_PROPAGATION_DELAY": "1.5"}, prestop=False
    )
    assert_the_load_reached_both(result)
    requests = result.requests
    if zero:
        assert requests["failed"] == 0, (requests, result.samples, result.output)
        assert requests["closed_by_server"] > 0, requests
        assert result.termination.exit_status == 0, result.output
    else:
        with capsys.disabled():
            print(
                f"\nSIGTERM alone under {kind}: {requests['failed']} of {requests['sent']} failed"
            )
        assert requests["failed"] > 0, requests


@dataclasses.dataclass
class Rollout:
    """What one whole rollout did."""

    requests: dict[str, Any]
    samples: list[str]
    terminations: list[Termination]
    after: dict[str, dict[str, str]]
    outputs: str


def rollout(
    kind: str, start_server: StartServer, haproxy: Callable[..., HAProxy], env: dict[str, str]
) -> Rollout:
    """A Deployment's rolling update (maxSurge 1, maxUnavailable 0) behind HAProxy.

    Two old pods under load; for each, a new pod starts and becomes ready, then the old
    one is terminated as the kubelet does it (preStop ``GET /shutdown``, then SIGTERM).
    """
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        old = list(pool.map(lambda _: start_server(kind, env), range(2)))
    new_ports = [free_port(), free_port()]
    proxy = haproxy([*(pod.port for pod in old), *new_ports], up=2)
    load = steady_load(proxy)
    started = list(old)
    terminations = []
    load.start()
    try:
        wait_for_load(proxy, ["pod0", "pod1"], at_least=1.0)
        for index, leaving in enumerate(old):
            started.append(start_server(kind, env, port=new_ports[index]))
            proxy.wait_for({f"pod{2 + index}": "UP"})
            terminations.append(kubelet_terminate(leaving))
        time.sleep(0.5)  # the new pods carry the whole load
    finally:
        load.stop()
        # Before the kill: a health check right after it would see the new pods DOWN.
        after = proxy.servers()
        for pod in started:
            kill_tree(pod.process.pid)
    samples = [f"{f.kind}: {f.detail}" for f in load.stats.samples]
    outputs = "\n".join(pod.output()[-3000:] for pod in old)
    return Rollout(load.stats.snapshot(), samples, terminations, after, outputs)


@pytest.mark.parametrize("kind", ["uvicorn", "gunicorn-4"])
def test_a_whole_rollout_drops_nothing_with_graceshut(
    kind: str, start_server: StartServer, haproxy: Callable[..., HAProxy]
) -> None:
    """Both pods replaced one after the other under load: not one request fails."""
    result = rollout(kind, start_server, haproxy, {"GRACESHUT_PROPAGATION_DELAY": "1.5"})
    requests = result.requests
    assert requests["sent"] >= RATE // 2, requests  # a loaded machine sends fewer than asked
    assert requests["failed"] == 0, (requests, result.samples, result.outputs)
    for name in ("pod0", "pod1"):
        assert result.after[name]["status"].startswith("DOWN"), result.after
    for name in ("pod2", "pod3"):
        assert result.after[name]["status"] == "UP", result.after
        assert int(result.after[name]["stot"]) > 0, f"{name} took connections"
    for done in result.terminations:
        assert done.hook_result is not None
        assert done.hook_result.status == 200
        assert done.sigkill_at is None
        assert done.exit_status == 0, result.outputs


def test_a_whole_rollout_without_graceshut_drops_requests(
    start_server: StartServer,
    haproxy: Callable[..., HAProxy],
    capsys: pytest.CaptureFixture[str],
    record_property: Callable[[str, object], None],
) -> None:
    """The same rollout of the app without graceshut: failures at each termination."""
    result = rollout("uvicorn-plain", start_server, haproxy, {})
    requests = result.requests
    record_property("baseline_failed_requests_rollout", requests["failed"])
    with capsys.disabled():
        print(
            f"\nwhole rollout without graceshut: {requests['failed']} of {requests['sent']} "
            f"requests failed {requests['failures']}"
        )
    assert requests["failed"] > 0, requests


@pytest.mark.parametrize("kind", ["hypercorn-asyncio", "hypercorn-trio"])
def test_rolling_restart_with_http2_clients_drops_nothing(
    kind: str,
    start_server: StartServer,
    haproxy: Callable[..., HAProxy],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """HTTP/2 clients through the L4 balancer: a GOAWAY moves them off the pod, none fails."""
    # The delay is the clients' time to act on the GOAWAY and the router's to look again:
    # a loaded machine needs more of it than an idle one.
    result = roll(kind, start_server, haproxy, {"GRACESHUT_PROPAGATION_DELAY": "3"}, http2=True)
    assert_the_load_reached_both(result)
    requests = result.requests
    with capsys.disabled():
        print(f"\nHTTP/2 rolling restart under {kind}: {requests}")
    assert requests["failed"] == 0, (requests, result.samples, result.output)
    done = result.termination
    assert done.hook_result is not None
    assert done.hook_result.status == 200, (done.hook_result, result.output)
    assert done.sigkill_at is None
    assert done.exit_status == 0, result.output


@pytest.mark.parametrize("kind", ["granian-run", "hypercorn-cli-run"])
def test_rolling_restart_with_sigterm_alone_under_graceshut_run(
    kind: str, start_server: StartServer, haproxy: Callable[..., HAProxy]
) -> None:
    """SIGTERM alone to `graceshut run`: servers that stop at once on SIGTERM drop nothing."""
    result = roll(
        kind, start_server, haproxy, {"GRACESHUT_PROPAGATION_DELAY": "1.5"}, prestop=False
    )
    assert_the_load_reached_both(result)
    requests = result.requests
    assert requests["failed"] == 0, (requests, result.samples, result.output)
    assert requests["closed_by_server"] > 0, requests
    assert result.termination.exit_status == 0, result.output
