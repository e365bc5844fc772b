"""A Flask app under gunicorn's sync and gthread workers with ``-c python:graceshut.gunicorn``."""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import math
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ..asgi_servers import HTTP, Server, free_port, pod_credential

pytestmark = pytest.mark.e2e

PER_PROCESS = ["announce", "drain", "flush", "release", "report"]
KINDS = {
    "sync": (3, ["-k", "sync", "-w", "3"]),
    "gthread": (2, ["-k", "gthread", "-w", "2", "--threads", "4"]),
}
# Both wide enough for the probes of each step to land inside it on a loaded machine.
DELAY = 4.0
DRAIN = 3.0  # the drain handler's time: idle workers answer 503 meanwhile


def gunicorn_wsgi(port: int, options: list[str], app: str = "tests.e2e.flask_app:app") -> list[str]:
    return [
        sys.executable, "-m", "gunicorn", app, "-c", "python:graceshut.gunicorn",
        "-b", f"127.0.0.1:{port}", *options,
    ]  # fmt: skip


@pytest.fixture(params=list(KINDS))
def pod(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    workers, options = KINDS[request.param]
    port = free_port()
    env = {
        "GRACESHUT_GRACE_PERIOD": "20",
        "GRACESHUT_SAFETY_MARGIN": "1",
        "GRACESHUT_PROPAGATION_DELAY": str(DELAY),
        "E2E_DRAIN_SECONDS": str(DRAIN),
    }
    server = Server(gunicorn_wsgi(port, options), port, tmp_path / "pod.events", env)
    server.kind = request.param  # type: ignore[attr-defined]
    try:
        server.worker_pids = every_worker(server, workers)  # type: ignore[attr-defined]
        yield server
    finally:
        server.stop()
        print(server.log.read_text(errors="replace"))  # shown for a failed test only


def get(server: Server, path: str, timeout: float = 30) -> httpx.Response:
    # The shutdown route wants the pod secret, which `graceshut prestop` sends.
    headers = pod_credential() if path.startswith("/shutdown") else {}
    return HTTP.get(f"{server.url}{path}", headers=headers, timeout=timeout)


def every_worker(server: Server, workers: int, timeout: float = 20.0) -> set[str]:
    """Until requests have been answered by every worker."""
    pids: set[str] = set()
    deadline = time.monotonic() + timeout
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        while len(pids) < workers:
            assert time.monotonic() < deadline, f"saw workers {pids}:\n{server.output()}"
            answers = list(pool.map(lambda _: get(server, "/slow?seconds=0.05"), range(16)))
            pids |= {r.headers["x-pid"] for r in answers if r.status_code == 200}
    return pids


def wait_unready(server: Server) -> float:
    """Until a probe answers 503: the trigger has reached a worker. Returns when."""
    deadline = time.monotonic() + 20
    while get(server, "/readyz").status_code == 200:
        assert time.monotonic() < deadline, "readiness never flipped"
        time.sleep(0.01)
    return time.monotonic()


@dataclasses.dataclass
class Seen:
    """What the clients saw from the trigger to the drain."""

    unready: set[str]  # workers that answered readiness 503
    served: set[str]  # workers that served a request during the propagation delay
    statuses: list[int]  # of those requests
    slow: httpx.Response  # accepted in the delay, still running when the drain began
    refused: httpx.Response  # sent during the drain


def through_the_sequence(server: Server, triggered: float) -> Seen:
    """Probe and request during the propagation delay, then once the drain has begun.

    The probes and requests go out on many connections until every worker has answered
    both (or half the delay is over); a slow request starts in the delay, and one more
    request goes out once every worker's drain has begun, while the idle ones run their
    drain handler.
    """
    workers = server.worker_pids  # type: ignore[attr-defined]
    seen = Seen(set(), set(), [], httpx.Response(0), httpx.Response(0))
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        while time.monotonic() < triggered + DELAY * 0.5 and (
            seen.unready != workers or seen.served != workers
        ):
            probes = [pool.submit(get, server, "/readyz") for _ in range(3)]
            requests = [pool.submit(get, server, "/slow?seconds=0.01") for _ in range(3)]
            for probe in probes:
                answer = probe.result()
                assert answer.status_code == 503, answer.text
                seen.unready.add(answer.headers["x-pid"])
            for future in requests:
                answer = future.result()
                seen.statuses.append(answer.status_code)
                seen.served.add(answer.headers["x-pid"])
        # Ends halfway through the drain, which waits for it.
        seconds = triggered + DELAY + DRAIN * 0.5 - time.monotonic()
        slow = pool.submit(get, server, f"/slow?seconds={seconds:.2f}")
        # Each worker's drain handler writes its line as its drain begins.
        deadline = time.monotonic() + 20
        while server.events_seen()["drain"] < len(workers):
            assert time.monotonic() < deadline, server.output()
            time.sleep(0.02)
        seen.refused = get(server, "/")
        seen.slow = slow.result()
    return seen


def assert_seen(server: Server, seen: Seen) -> None:
    workers = server.worker_pids  # type: ignore[attr-defined]
    assert seen.unready == workers, "every worker answered readiness 503"
    assert set(seen.statuses) == {200}, "requests served during the propagation delay"
    assert seen.served == workers
    assert seen.slow.status_code == 200, "the slow request completed"
    assert seen.refused.status_code == 503, "refused in the drain"
    assert seen.refused.headers["retry-after"] == str(math.ceil(DELAY))
    assert seen.refused.headers["connection"] == "close"
    # The worker that ran the slow request waited for it in its drain.
    deadline = time.monotonic() + 10
    while "draining 1 in-flight" not in server.output():
        assert time.monotonic() < deadline, server.output()
        time.sleep(0.05)


def assert_stopped_cleanly(server: Server, *, pod_announce: int) -> None:
    assert server.wait_exit() == 0, server.output()
    events = server.events_seen()
    workers = len(server.worker_pids)  # type: ignore[attr-defined]
    expected = dict.fromkeys(PER_PROCESS, workers)
    if pod_announce:
        expected["pod-announce"] = pod_announce
    assert events == expected, events
    by_worker = collections.Counter(
        line.split()[1] for line in server.events.read_text().splitlines() if line
    )
    assert set(by_worker) >= set(server.worker_pids)  # type: ignore[attr-defined]


def test_prestop_route_then_sigterm(pod: Server) -> None:
    """preStop on one worker: every worker unready yet serving for the delay, slow ends, exit 0."""
    workers = pod.worker_pids  # type: ignore[attr-defined]
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        route = pool.submit(get, pod, "/shutdown")
        if pod.kind == "sync":  # type: ignore[attr-defined]
            # One request per worker: the route does not hold it (it answers 202).
            assert route.result().status_code == 202, route.result().text
        seen = through_the_sequence(pod, wait_unready(pod))
        if pod.kind == "gthread":  # type: ignore[attr-defined]
            report = route.result()
            assert report.status_code == 200, report.text
            body = report.json()
            assert body["ok"] is True, body
            assert len(body["workers"]) == len(workers)
            assert all(w["in_flight_abandoned"] == 0 for w in body["workers"])
    assert_seen(pod, seen)
    deadline = time.monotonic() + 10
    while pod.events_seen()["report"] < len(workers):
        assert time.monotonic() < deadline, pod.output()
        time.sleep(0.05)
    started = time.monotonic()
    pod.signal(signal.SIGTERM)
    assert_stopped_cleanly(pod, pod_announce=1)
    # Not held to the 20 s grace period: the sequence is over (it ran once in each worker).
    assert time.monotonic() - started < 15, "after preStop, SIGTERM stops the pod at once"


def test_sigterm_alone(pod: Server) -> None:
    """SIGTERM to the master: every worker unready yet serving, slow ends, handlers per worker."""
    kept_alive = "keep-alive" if pod.kind == "gthread" else "close"  # type: ignore[attr-defined]
    with httpx.Client(base_url=pod.url, timeout=10) as client:
        assert client.get("/").headers["connection"] == kept_alive
        pod.signal(signal.SIGTERM)
        triggered = wait_unready(pod)
        # The same kept-alive connection, now told to close.
        assert client.get("/").headers["connection"] == "close"
    assert_seen(pod, through_the_sequence(pod, triggered))
    assert_stopped_cleanly(pod, pod_announce=0)
    assert "handing SIGTERM on to" in pod.output()


def test_a_recycled_sync_worker_does_not_drain_the_pod(tmp_path: Path) -> None:
    """SIGTERM to one worker (a HUP or max_requests recycle): siblings stay ready and serve."""
    port = free_port()
    env = {"GRACESHUT_PROPAGATION_DELAY": "0.2", "GRACESHUT_GRACE_PERIOD": "10"}
    options = [*KINDS["sync"][1], "--max-requests", "40"]
    server = Server(gunicorn_wsgi(port, options), port, tmp_path / "recycle.events", env)
    try:
        pids = every_worker(server, 3)
        victim = int(min(pids))
        os.kill(victim, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while server.events_seen()["report"] < 1:
            assert time.monotonic() < deadline, server.output()
            time.sleep(0.05)
        # max_requests recycles more workers while these run: none drains the pod.
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            probes = list(pool.map(lambda _: get(server, "/readyz"), range(120)))
        statuses = collections.Counter(r.status_code for r in probes)
        assert statuses == {200: 120}, statuses
        assert "pod-announce" not in server.events_seen()
        assert server.events_seen()["flush"] >= 2, "recycled workers ran their own sequence"
        assert "shutdown (lifespan)" in server.output(), "max_requests: a sequence of its own"
    finally:
        server.stop()


def test_a_request_still_running_at_the_deadline_does_not_outlive_the_grace_period(
    tmp_path: Path,
) -> None:
    """A hung request cannot be cancelled: the worker exits once the safety margin is spent."""
    port = free_port()
    env = {
        "GRACESHUT_GRACE_PERIOD": "4",
        "GRACESHUT_SAFETY_MARGIN": "1",
        "GRACESHUT_PROPAGATION_DELAY": "0.5",
    }
    options = ["-k", "gthread", "-w", "1", "--threads", "2", "--graceful-timeout", "60"]
    server = Server(gunicorn_wsgi(port, options), port, tmp_path / "hung.events", env)
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            hung = pool.submit(get, server, "/slow?seconds=60")
            time.sleep(0.3)
            started = time.monotonic()
            server.signal(signal.SIGTERM)
            server.wait_exit(20)
            took = time.monotonic() - started
            with pytest.raises(httpx.TransportError):
                hung.result()
        output = server.output()
        assert took < 4 + 1, f"stopped after {took:.1f}s: the grace period holds"
        assert "1 request still running after the deadline: exiting now" in output, output
        assert "1 abandoned" in output
    finally:
        server.stop()
