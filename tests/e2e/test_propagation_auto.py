"""``propagation_delay="auto"`` behind a real load balancer: it ends when routing stops.

Two uvicorn pods behind HAProxy (TCP mode, health-checking ``/readyz``, as kube-proxy
would route); one is terminated as the kubelet does it. How fast the routers learn is
the health check's interval. The delay must outlast the last routed request (not one
request fails), end soon after it when the pod was busy, and run to the cap when the
traffic is too thin or absent to prove anything.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from graceshut.simulate._load import LoadGenerator, LoadSpec

from ..asgi_servers import Server
from .test_rolling_restart import HAProxy, kill_tree, kubelet_terminate

pytestmark = pytest.mark.e2e

StartServer = Callable[..., Server]
CAP = 8.0
ENV = {
    "GRACESHUT_PROPAGATION_DELAY": "auto",
    "GRACESHUT_PROPAGATION_CAP": str(CAP),
    "GRACESHUT_PROPAGATION_FLOOR": "2",
    "GRACESHUT_QUIET_WINDOW": "1",
}


@dataclasses.dataclass
class Restart:
    """One pod's termination under a given load and router speed."""

    requests: dict[str, Any]
    samples: list[str]
    report: dict[str, Any]
    delay: float
    """Seconds from the trigger to the end of the propagation delay."""
    down_at: float | None
    """Seconds from the trigger to HAProxy's marking the leaving pod DOWN."""
    exit_status: int | None
    output: str


def restart(
    start_server: StartServer,
    haproxy: Callable[..., HAProxy],
    *,
    inter: str,
    rate: float,
    clients: int,
    keep_alive: bool = True,
) -> Restart:
    """Terminate one of two pods behind HAProxy, whose checks run every *inter*.

    Without *keep_alive* each request opens a connection of its own, which HAProxy
    routes: the leaving pod gets requests until HAProxy's check takes it out.
    """
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        pods = list(pool.map(lambda _: start_server("uvicorn", ENV), range(2)))
    proxy = haproxy([pod.port for pod in pods], inter=inter)
    spec = LoadSpec(
        "127.0.0.1", proxy.port, rate=rate, concurrency=clients, timeout=5, keep_alive=keep_alive
    )
    load = LoadGenerator(spec) if rate else None
    watching = threading.Event()
    down: list[float] = []

    def watch() -> None:
        while not watching.is_set():
            if proxy.servers()["pod0"]["status"].startswith("DOWN"):
                down.append(time.monotonic())
                return
            time.sleep(0.05)

    if load is not None:
        load.start()
    watcher = threading.Thread(target=watch, daemon=True)
    try:
        time.sleep(2.5)  # more than the rate's window needs to see the traffic
        triggered = time.monotonic()
        watcher.start()
        termination = kubelet_terminate(pods[0])
    finally:
        watching.set()
        watcher.join(5)
        if load is not None:
            load.stop()
        for pod in pods:
            kill_tree(pod.process.pid)
    assert termination.hook_result is not None
    report = json.loads(termination.hook_result.body)
    step = next(p for p in report["phases"] if p["name"] == "propagation")
    requests = load.stats.snapshot() if load is not None else {"sent": 0, "failed": 0}
    samples = [f"{f.kind}: {f.detail}" for f in load.stats.samples] if load is not None else []
    print(
        f"\nHAProxy checks every {inter}, {rate:g} req/s: the delay ended "
        f"({report['propagation']}) {step['started'] + step['duration']:.2f}s after the trigger "
        f"(HAProxy took the pod out after {down[0] - triggered if down else float('nan'):.2f}s); "
        f"{requests['failed']} of {requests['sent']} requests failed"
    )
    return Restart(
        requests,
        samples,
        report,
        step["started"] + step["duration"],
        down[0] - triggered if down else None,
        termination.exit_status,
        pods[0].output()[-4000:],
    )


def test_fast_routers_let_a_busy_pod_leave_after_the_floor(
    start_server: StartServer, haproxy: Callable[..., HAProxy]
) -> None:
    """Routers that stop within about a second: the delay ends on evidence, nothing fails."""
    result = restart(start_server, haproxy, inter="1s", rate=200, clients=8)
    assert result.requests["failed"] == 0, (result.requests, result.samples, result.output)
    assert result.report["propagation"] == "evidence", (result.report, result.output)
    assert 2 <= result.delay < CAP, result.report
    assert result.exit_status == 0, result.output


def test_slow_routers_hold_the_delay_past_their_last_request(
    start_server: StartServer, haproxy: Callable[..., HAProxy]
) -> None:
    """Routers that take up to 5 s: the delay lasts until they stop, nothing fails.

    Every request is a new connection that HAProxy routes, to the leaving pod too
    until its check takes it out: a delay that ended before would see them refused.
    """
    result = restart(start_server, haproxy, inter="5s", rate=100, clients=8, keep_alive=False)
    assert result.requests["failed"] == 0, (result.requests, result.samples, result.output)
    assert result.report["propagation"] == "evidence", (result.report, result.output)
    assert result.down_at is not None
    assert result.delay >= result.down_at, (result.delay, result.down_at)
    assert result.exit_status == 0, result.output


def test_a_trickle_of_traffic_waits_the_whole_cap(
    start_server: StartServer, haproxy: Callable[..., HAProxy]
) -> None:
    """0.5 requests a second prove nothing when they stop: the delay runs to the cap."""
    result = restart(start_server, haproxy, inter="1s", rate=0.5, clients=1)
    assert result.requests["failed"] == 0, (result.requests, result.samples, result.output)
    assert result.report["propagation"] == "cap", (result.report, result.output)
    assert result.delay >= CAP, result.report


def test_an_idle_pod_waits_the_whole_cap(
    start_server: StartServer, haproxy: Callable[..., HAProxy]
) -> None:
    """No traffic at all: the delay runs to the cap."""
    result = restart(start_server, haproxy, inter="1s", rate=0, clients=1)
    assert result.report["propagation"] == "cap", (result.report, result.output)
    assert result.delay >= CAP, result.report
