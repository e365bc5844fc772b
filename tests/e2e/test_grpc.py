"""gRPC services under graceshut.grpc: real `grpc.aio` servers, real clients, a real balancer.

Behind HAProxy in TCP mode (as kube-proxy: it balances connections, not calls, and a
long-lived channel stays on its pod until the connection ends), a kubelet-like prober
asks each pod's health service for its readiness name and takes the pod out of the
balancer (no new connections) once it answers anything but SERVING.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from graceshut.simulate._actions import Exec, HttpGet, Target
from graceshut.simulate._container import Container
from graceshut.simulate._kubelet import Termination, terminate
from graceshut.simulate._timeline import Timeline

from ..asgi_servers import ROOT, free_port, pod_credential
from .grpc_harness import GrpcServer, Prober, UnaryLoad, Watcher, check
from .test_rolling_restart import HAProxy, haproxy

pytestmark = pytest.mark.e2e

__all__ = ["haproxy"]

GRACE_PERIOD = 20
READINESS = "test.Echo"

#: HAProxy as kube-proxy: TCP, no retries; a layer-4 check only notices a closed port.
TCP_CONFIG = """\
global
    maxconn 1000
    stats socket {socket} mode 600 level admin

defaults
    mode tcp
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    retries 0
    no option redispatch

frontend service
    bind 127.0.0.1:{port}
    default_backend pods

backend pods
    balance roundrobin
    default-server inter {inter} fall 1 rise 1
{servers}
"""


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Callable[..., GrpcServer]]:
    """Start gRPC servers; killed at teardown."""
    started: list[GrpcServer] = []

    def start(mode: str, env: dict[str, str] | None = None) -> GrpcServer:
        server = GrpcServer(
            mode, tmp_path, {"GRACESHUT_GRACE_PERIOD": str(GRACE_PERIOD), **(env or {})}
        )
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def take_out_when_not_ready(
    proxy: HAProxy, name: str, address: str, done: threading.Event
) -> threading.Thread:
    """The kubelet's readiness probe and the endpoints controller, for one pod."""

    def run() -> None:
        while check(address, READINESS) == "SERVING":
            if done.wait(0.25):
                return
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(proxy.socket))
            s.sendall(f"set server pods/{name} state drain\n".encode())
            s.recv(1024)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def kubelet_stop(server: GrpcServer, *, prestop: str | None) -> Termination:
    """The preStop hook (``GET /shutdown`` on the admin port, ``graceshut prestop``, or
    none), then SIGTERM, then SIGKILL at the end of the grace period."""
    url = f"http://127.0.0.1:{server.admin_port}/shutdown"
    hook: HttpGet | Exec | None = None
    if prestop == "http":
        credential = tuple(pod_credential(required=False).items())
        hook = HttpGet(path="/shutdown", port=server.admin_port, headers=credential)
    elif prestop == "exec":
        hook = Exec((sys.executable, "-m", "graceshut.cli", "prestop", url))
    return terminate(
        Container(server.process, own_group=False),
        hook=hook,
        grace_period=GRACE_PERIOD,
        target=Target("127.0.0.1"),
        env=os.environ,
        timeline=Timeline(),
    )


def rolling_restart(
    mode: str,
    servers: Callable[..., GrpcServer],
    haproxy: Callable[..., HAProxy],
    *,
    prestop: str | None = None,
    inter: str = "500ms",
) -> tuple[dict[str, Any], list[str], Termination, GrpcServer]:
    """Two pods behind the balancer under 100 unary calls/s; the first is terminated.

    *inter*: how often the balancer checks that a pod's port is open.
    """
    env = {"GRACESHUT_PROPAGATION_DELAY": "1.5"}
    pods = [servers(mode, env), servers(mode, env)]
    proxy = haproxy([pod.port for pod in pods], template=TCP_CONFIG, inter=inter)
    done = threading.Event()
    probers = [
        take_out_when_not_ready(proxy, f"pod{i}", pod.address, done) for i, pod in enumerate(pods)
    ]
    load = UnaryLoad(f"127.0.0.1:{proxy.port}", rate=100, channels=4)
    load.start()
    try:
        time.sleep(1.5)
        before = proxy.servers()
        assert int(before["pod0"]["stot"]) > 0, "the leaving pod had connections"
        termination = kubelet_stop(pods[0], prestop=prestop)
        time.sleep(1.0)  # the pod left carries the whole load
    finally:
        requests = load.stop()
        done.set()
    assert not probers[0].is_alive()
    probers[1].join(5)
    return requests, load.samples, termination, pods[0]


@pytest.mark.parametrize("prestop", [None, "http", "exec"], ids=["sigterm", "http", "exec"])
def test_grpc_rolling_restart_fails_no_call_with_graceshut(
    prestop: str | None,
    servers: Callable[..., GrpcServer],
    haproxy: Callable[..., HAProxy],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Long-lived channels through an L4 balancer lose no call when a graceshut pod leaves."""
    requests, samples, done, leaving = rolling_restart(
        "graceshut", servers, haproxy, prestop=prestop
    )
    with capsys.disabled():
        print(
            f"\ngRPC rolling restart with graceshut ({prestop or 'SIGTERM'}): "
            f"{requests['failed']} of {requests['sent']} calls failed {requests['failures']}"
        )
    assert requests["sent"] >= 200, requests
    assert requests["failed"] == 0, (requests, samples, leaving.output())
    assert done.sigkill_at is None
    assert done.exit_status == 0, leaving.output()
    if prestop:
        assert done.hook_result is not None
        assert done.hook_result.ok, (done.hook_result, leaving.output())
        if prestop == "http":
            assert done.hook_result.status == 200
    report = leaving.report()
    assert report["ok"], report
    assert report["reason"] == ("prestop" if prestop else "SIGTERM")
    assert report["finished"].get("/test.Echo/Unary", 0) > 0, report


def test_grpc_rolling_restart_with_stop_on_sigterm_fails_calls(
    servers: Callable[..., GrpcServer],
    haproxy: Callable[..., HAProxy],
    capsys: pytest.CaptureFixture[str],
    record_property: Callable[[str, object], None],
) -> None:
    """The common practice, ``stop(grace)`` on SIGTERM, behind the same balancer: calls fail."""
    # Checks every 2 s, as a Service's endpoints lag behind: on a loaded machine the
    # clients, starved, sent nothing in the half second of a 500 ms check.
    requests, samples, _, _ = rolling_restart("baseline", servers, haproxy, inter="2s")
    record_property("baseline_failed_calls", requests["failed"])
    with capsys.disabled():
        print(
            f"\ngRPC rolling restart with stop(grace) on SIGTERM: {requests['failed']} of "
            f"{requests['sent']} calls failed {requests['failures']}; e.g. {samples[:2]}"
        )
    assert requests["failed"] > 0, requests


def test_watch_streams_do_not_hold_the_drain(
    servers: Callable[..., GrpcServer], capsys: pytest.CaptureFixture[str]
) -> None:
    """With 10 health Watch streams open the drain ends after the last call, not at its deadline."""
    server = servers("graceshut", {"GRACESHUT_PROPAGATION_DELAY": "0.5", "GRPC_APP_SLOW": "2"})
    watchers = [Watcher(server.address, READINESS if i % 2 else "liveness") for i in range(10)]
    with grpc.insecure_channel(server.address) as channel:
        ticks = channel.unary_stream("/test.Echo/Ticks")(b"", timeout=30)
        slow = channel.unary_unary("/test.Echo/Slow").future(b"last", timeout=30)
        time.sleep(0.3)
        server.process.send_signal(signal.SIGTERM)
        ticked = sum(1 for _ in ticks)  # a stream that ends itself once the drain begins
        ticks_done = time.time()
        assert slow.result() == b"slow last"
        slow_done = time.time()
    assert ticked > 0
    assert ticks_done < slow_done
    assert server.wait_exit() == 0, server.output()
    for watcher in watchers:
        watcher.join(5)
    report = server.report()
    drain = next(p for p in report["phases"] if p["name"] == "drain")
    drain_end = report["started_at"] + drain["started"] + drain["duration"]
    budget = GRACE_PERIOD - 1 - drain["started"]
    with capsys.disabled():
        print(
            f"\n10 Watch streams open: the drain ended {drain_end - slow_done:+.3f}s after the "
            f"last call's answer, {drain['duration']:.3f}s into a budget of {budget:.1f}s"
        )
    for watcher in watchers:
        # Told first, then ended cleanly once the drain began (before the last call).
        assert watcher.ended == "OK", (watcher.ended, server.output())
        assert watcher.ended_at is not None
        assert watcher.ended_at < slow_done
    readiness_watchers = watchers[1::2]
    assert all(w.statuses == ["SERVING", "NOT_SERVING"] for w in readiness_watchers)
    assert all(w.statuses == ["SERVING"] for w in watchers[0::2])
    assert report["finished"]["/grpc.health.v1.Health/Watch"] == 10, report
    assert report["finished"]["/test.Echo/Slow"] == 1
    assert report["finished"]["/test.Echo/Ticks"] == 1
    assert report["abandoned"] == []
    # Ended by the last call, far from the budget (room for a loaded machine).
    assert drain["duration"] < budget / 2, (drain, budget)


def test_liveness_probe_succeeds_through_the_drain(
    servers: Callable[..., GrpcServer],
) -> None:
    """A probe on the liveness name answers SERVING through the drain; readiness fails at once."""
    server = servers("graceshut", {"GRACESHUT_PROPAGATION_DELAY": "0.5", "GRPC_APP_SLOW": "3"})
    # A probe's timeout as a loaded node needs (a late answer is not a refusal).
    liveness = Prober(server.address, "liveness", timeout=5)
    readiness = Prober(server.address, READINESS)
    with grpc.insecure_channel(server.address) as channel:
        slow = channel.unary_unary("/test.Echo/Slow").future(b"x", timeout=30)
        time.sleep(0.5)
        server.process.send_signal(signal.SIGTERM)
        assert slow.result() == b"slow x"
    assert server.wait_exit() == 0, server.output()
    live, ready = liveness.stop(), readiness.stop()
    report = server.report()
    drain = next(p for p in report["phases"] if p["name"] == "drain")
    drain_start = report["started_at"] + drain["started"]
    # The drain waits for the slow call; the port closes (stop()) only after it ended.
    slow_done = float(server.output().split("SLOW_DONE ", 1)[1].split()[0])
    during = [p for p in live if drain_start <= p.started and p.ended <= slow_done]
    assert len(during) >= 5, (drain, live)
    failed = [
        (round(p.started - drain_start, 3), round(p.ended - drain_start, 3), p.answer)
        for p in during
        if p.answer != "SERVING"
    ]
    assert not failed, (failed, f"slow call done at +{slow_done - drain_start:.3f}s")
    after_trigger = [p for p in ready if p.started > report["started_at"] + 0.05]
    assert after_trigger, ready
    assert all(p.answer != "SERVING" for p in after_trigger), after_trigger


def test_a_stream_still_running_at_the_deadline_is_ended_unavailable(
    servers: Callable[..., GrpcServer],
) -> None:
    """A stream deaf to the drain is ended at the deadline: UNAVAILABLE, named in the report."""
    server = servers(
        "graceshut", {"GRACESHUT_GRACE_PERIOD": "4", "GRACESHUT_PROPAGATION_DELAY": "0.5"}
    )
    with grpc.insecure_channel(server.address) as channel:
        stream = channel.unary_stream("/test.Echo/Forever")(b"", timeout=30)
        first = next(stream)
        server.process.send_signal(signal.SIGTERM)
        with pytest.raises(grpc.RpcError) as caught:
            for _ in stream:
                pass
    assert first == b"tick 0"
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, caught.value
    assert server.wait_exit() == 0, server.output()
    report = server.report()
    assert report["abandoned"] == ["/test.Echo/Forever"], report
    assert report["in_flight_abandoned"] == 1


GRPC_DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata: {{name: echo}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: echo}}}}
  template:
    metadata: {{labels: {{app: echo}}}}
    spec:
      terminationGracePeriodSeconds: 20
      containers:
        - name: echo
          image: echo
          command: [{python}, "-m", "tests.e2e.grpc_app", "{port}", "{mode}"]
          ports:
            - {{containerPort: {port}}}
            - {{containerPort: {admin}}}
          env:
            - {{name: GRPC_APP_HOST, value: "0.0.0.0"}}
            - {{name: GRACESHUT_ADMIN_ADDRESS, value: "{admin}"}}
            - {{name: GRACESHUT_PROPAGATION_DELAY, value: "1"}}
            - {{name: GRACESHUT_GRACE_PERIOD, value: "20"}}
          readinessProbe:
            grpc: {{port: {port}, service: test.Echo}}
          livenessProbe:
            grpc: {{port: {port}, service: liveness}}
          lifecycle:
            preStop:
              exec:
                command: ["graceshut", "prestop", "http://127.0.0.1:{admin}/shutdown"]
"""


def simulate_grpc(tmp_path: Path, mode: str, *options: str) -> tuple[int, dict[str, Any]]:
    """``graceshut simulate --json`` of the gRPC app from a Deployment with grpc probes."""
    manifest = tmp_path / "deployment.yaml"
    manifest.write_text(
        GRPC_DEPLOYMENT.format(
            python=json.dumps(sys.executable), port=free_port(), admin=free_port(), mode=mode
        )
    )
    command = [sys.executable, "-m", "graceshut.cli", "simulate", "--manifest", str(manifest)]
    command += ["--endpoint-lag", "0.5", "--warmup", "1", "--rate", "100", "--no-progress"]
    command += ["--json", "--grpc", "/test.Echo/Unary", "--grpc-stream", "/test.Echo/Ticks"]
    result = subprocess.run(
        [*command, *options],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )
    try:
        return result.returncode, dict(json.loads(result.stdout))
    except ValueError:
        pytest.fail(f"no JSON report (status {result.returncode}): {result.stderr}")


def test_simulate_plays_grpc_probes_and_load_clean(tmp_path: Path) -> None:
    """simulate with the manifest's grpc probes and a gRPC load: graceshut's app stops clean."""
    status, report = simulate_grpc(tmp_path, "graceshut")
    assert status == 0, (report["problems"], report["app_output_tail"])
    assert report["clean"] is True
    requests = report["requests"]
    assert requests["failed"] == 0
    assert requests["ok"] >= 100
    assert requests["rerouted"] > 0, "the channels went elsewhere after the GOAWAY"
    assert report["settings"]["readiness"].startswith("grpc ")
    assert report["app_report"]["reason"] == "prestop"
    events = [e["event"] for e in report["timeline"]]
    assert events.index("readiness probe fails") < events.index("SIGTERM")
    readiness = next(e for e in report["timeline"] if e["event"] == "readiness probe fails")
    assert "NOT_SERVING" in readiness["detail"]


def test_simulate_finds_the_failures_of_stop_on_sigterm(tmp_path: Path) -> None:
    """The same run against ``stop(grace)`` on SIGTERM: failed calls, verdict not clean."""
    status, report = simulate_grpc(tmp_path, "baseline", "--no-prestop")
    assert status != 0
    assert report["clean"] is False
    assert report["requests"]["failed"] > 0, report["requests"]


def test_the_sync_server_recipe_drains_and_exits_clean(
    servers: Callable[..., GrpcServer],
) -> None:
    """The documented sync ``grpc.server`` wiring: readiness fails, the call in flight ends."""
    server = servers("sync", {"GRACESHUT_PROPAGATION_DELAY": "0.5", "GRPC_APP_SLOW": "2"})
    with grpc.insecure_channel(server.address) as channel:
        slow = channel.unary_unary("/test.Echo/Slow").future(b"x", timeout=30)
        time.sleep(0.3)
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        readiness = check(server.address, READINESS)
        assert slow.result() == b"slow x"
    assert readiness == "NOT_SERVING"
    assert server.wait_exit() == 0, server.output()
    report = server.report()
    assert report["ok"], report
    assert [h["name"].rsplit(".", 1)[-1] for h in report["handlers"]] == ["not_ready", "stop"]


def test_a_failed_handler_makes_the_exit_status_1(servers: Callable[..., GrpcServer]) -> None:
    """The exit status says what the report says: a failed flush handler exits 1."""
    server = servers("graceshut", {"GRACESHUT_PROPAGATION_DELAY": "0.2", "GRPC_APP_FAIL": "1"})
    server.process.send_signal(signal.SIGTERM)
    assert server.wait_exit() == 1, server.output()
    report = server.report()
    assert report["ok"] is False
    assert [h["outcome"] for h in report["handlers"]] == ["ok", "error"]


def test_without_graceshut_a_watch_stream_holds_stop_for_its_grace(
    servers: Callable[..., GrpcServer], capsys: pytest.CaptureFixture[str]
) -> None:
    """The baseline, ``stop(grace=5)`` on SIGTERM: one Watch open keeps the process 5 s."""
    server = servers("baseline")
    watcher = Watcher(server.address, READINESS)
    time.sleep(0.3)
    sent = time.time()
    server.process.send_signal(signal.SIGTERM)
    assert server.wait_exit() == 0, server.output()
    exited = time.time() - sent
    watcher.join(5)
    with capsys.disabled():
        print(f"\nstop(grace=5) with one Watch open: exited {exited:.2f}s after SIGTERM")
    assert watcher.statuses == ["SERVING"], "never told that the server was going"
    assert watcher.ended != "OK"  # cut when the grace ran out
    assert exited > 4, "the grace of 5 s ran out before the process could exit"


def test_the_example_grpc_deployment_stops_clean_under_simulate() -> None:
    """examples/k8s/deployment-grpc.yaml with examples/grpc_service.py: a clean verdict."""
    port, admin = free_port(), free_port()
    bin_dir = Path(sys.executable).parent  # where `graceshut` is installed
    command = [sys.executable, "-m", "graceshut.cli", "simulate", "--manifest"]
    command += [str(ROOT / "examples" / "k8s" / "deployment-grpc.yaml"), "--port", str(port)]
    # The manifest's own ports and hook, on this run's free ports.
    command += ["--env", f"PORT={port}", "--env", f"GRACESHUT_ADMIN_ADDRESS={admin}"]
    command += ["--env", f"PATH={bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"]
    command += ["--prestop-exec", f"graceshut prestop http://127.0.0.1:{admin}/shutdown"]
    command += ["--env", "GRACESHUT_PROPAGATION_DELAY=1", "--endpoint-lag", "0.5"]
    command += ["--warmup", "1", "--rate", "100", "--no-progress", "--json"]
    command += ["--grpc", "/helloworld.Greeter/SayHello"]
    command += ["--grpc-stream", "/helloworld.Greeter/Subscribe"]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=120, cwd=ROOT, check=False
    )
    report = json.loads(result.stdout)
    assert result.returncode == 0, (report["problems"], result.stderr, report["app_output_tail"])
    assert report["requests"]["failed"] == 0
    assert report["requests"]["ok"] >= 100
    assert report["app_report"]["ok"] is True
    assert report["settings"]["liveness"].endswith("service='liveness'")
