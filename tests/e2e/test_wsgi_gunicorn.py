"""A Flask app under gunicorn's sync and gthread workers with ``-c python:graceshut.gunicorn``."""

from __future__ import annotations

import collections
import concurrent.futures
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ..asgi_servers import Server, free_port, pod_credential

pytestmark = pytest.mark.e2e

PER_PROCESS = ["announce", "drain", "flush", "release", "report"]
KINDS = {
    "sync": (3, ["-k", "sync", "-w", "3"]),
    "gthread": (2, ["-k", "gthread", "-w", "2", "--threads", "4"]),
}
DELAY = 2.0


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
    return httpx.get(f"{server.url}{path}", headers=headers, timeout=timeout)


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


def wait_unready(server: Server) -> None:
    """Until a probe answers 503: the trigger has reached a worker."""
    deadline = time.monotonic() + 3
    while get(server, "/readyz").status_code == 200:
        assert time.monotonic() < deadline, "readiness never flipped"
        time.sleep(0.01)


def watch_the_delay(server: Server) -> tuple[set[str], set[str], list[int]]:
    """Probe and request during the propagation delay, with many connections at once.

    Returns the workers that answered readiness 503, those that served a request, and
    every request's status.
    """
    unready: set[str] = set()
    served: set[str] = set()
    statuses: list[int] = []
    end = time.monotonic() + DELAY * 0.6
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        while time.monotonic() < end:
            probes = [pool.submit(get, server, "/readyz") for _ in range(3)]
            requests = [pool.submit(get, server, "/slow?seconds=0.01") for _ in range(3)]
            for probe in probes:
                answer = probe.result()
                assert answer.status_code == 503, answer.text
                unready.add(answer.headers["x-pid"])
            for future in requests:
                answer = future.result()
                statuses.append(answer.status_code)
                served.add(answer.headers["x-pid"])
    return unready, served, statuses


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
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        route = pool.submit(get, pod, "/shutdown")
        if pod.kind == "sync":  # type: ignore[attr-defined]
            # One request per worker: the route does not hold it (it answers 202).
            assert route.result().status_code == 202, route.result().text
        wait_unready(pod)
        unready, served, statuses = watch_the_delay(pod)
        # Accepted in the delay, still running when the drain begins: the drain waits.
        slow = pool.submit(get, pod, "/slow?seconds=2")
        time.sleep(DELAY * 0.6)
        refused = get(pod, "/")
        assert slow.result().status_code == 200, "the slow request completed"
        if pod.kind == "gthread":  # type: ignore[attr-defined]
            report = route.result()
            assert report.status_code == 200, report.text
            body = report.json()
            assert body["ok"] is True, body
            assert len(body["workers"]) == len(workers)
            assert all(w["in_flight_abandoned"] == 0 for w in body["workers"])
    assert unready == workers, "every worker answered readiness 503"
    assert set(statuses) == {200}, "requests served during the propagation delay"
    assert served == workers
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "2"
    assert refused.headers["connection"] == "close"
    deadline = time.monotonic() + 10
    while pod.events_seen()["report"] < len(workers):
        assert time.monotonic() < deadline, pod.output()
        time.sleep(0.05)
    started = time.monotonic()
    pod.signal(signal.SIGTERM)
    assert_stopped_cleanly(pod, pod_announce=1)
    assert time.monotonic() - started < 5, "after preStop, SIGTERM stops the pod at once"


def test_sigterm_alone(pod: Server) -> None:
    """SIGTERM to the master: every worker unready yet serving, slow ends, handlers per worker."""
    workers = pod.worker_pids  # type: ignore[attr-defined]
    kept_alive = "keep-alive" if pod.kind == "gthread" else "close"  # type: ignore[attr-defined]
    with (
        concurrent.futures.ThreadPoolExecutor(2) as pool,
        httpx.Client(base_url=pod.url, timeout=10) as client,
    ):
        assert client.get("/").headers["connection"] == kept_alive
        pod.signal(signal.SIGTERM)
        wait_unready(pod)
        # The same kept-alive connection, now told to close.
        assert client.get("/").headers["connection"] == "close"
        unready, served, statuses = watch_the_delay(pod)
        slow = pool.submit(get, pod, "/slow?seconds=2")
        time.sleep(DELAY * 0.6)
        refused = get(pod, "/")
        assert slow.result().status_code == 200, "the slow request completed"
    assert unready == workers, "every worker answered readiness 503"
    assert set(statuses) == {200}, "requests served during the propagation delay"
    assert served == workers
    assert refused.status_code == 503
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
