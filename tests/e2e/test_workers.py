"""Several worker processes per pod: one trigger drains every worker."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from graceshut._process import _proc as proc

from ..asgi_servers import HTTP, Server, free_port, pod_credential

pytestmark = pytest.mark.e2e

WORKERS = 4
PER_PROCESS = ["announce", "drain", "flush", "release", "report"]


def argv(kind: str, port: int) -> list[str]:
    python = sys.executable
    return {
        "gunicorn": [
            python, "-m", "gunicorn", "tests.e2e.app:app", "-k", "uvicorn_worker.UvicornWorker",
            "-w", str(WORKERS), "-b", f"127.0.0.1:{port}", "--graceful-timeout", "20",
        ],
        "uvicorn": [
            python, "-m", "uvicorn", "tests.e2e.app:app", "--port", str(port),
            "--workers", str(WORKERS),
        ],
        "hypercorn": [
            python, "-m", "hypercorn", "tests.e2e.app:app", "--bind", f"127.0.0.1:{port}",
            "--workers", str(WORKERS),
        ],
    }[kind]  # fmt: skip


@pytest.fixture(params=["gunicorn", "uvicorn", "hypercorn"])
def pod(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    port = free_port()
    env = {
        "GRACESHUT_GRACE_PERIOD": "20",
        "GRACESHUT_SAFETY_MARGIN": "1",
        # Long enough for the probes of the delay to land inside it on a loaded machine.
        "GRACESHUT_PROPAGATION_DELAY": "4",
    }
    server = Server(argv(request.param, port), port, tmp_path / "pod.events", env)
    server.kind = request.param  # type: ignore[attr-defined]
    try:
        server.worker_pids = wait_for_all_workers(server)  # type: ignore[attr-defined]
        yield server
    finally:
        server.stop()


def wait_for_all_workers(
    server: Server, timeout: float = 30.0, *, one_is_leaving: bool = False
) -> set[str]:
    """Until requests have been answered by every worker (each has started).

    While a worker is being replaced, uvicorn in that worker closes, unanswered, a
    connection it had accepted from the shared listener just before it closed its own
    copy (it closes every connection that has not sent a request yet): a server trait,
    documented in docs/workers.md, so ``one_is_leaving`` lets such a probe count as a miss.
    """
    pids: set[str] = set()
    deadline = time.monotonic() + timeout
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        while len(pids) < WORKERS:
            assert time.monotonic() < deadline, f"saw workers {pids}:\n{server.output()}"
            batch = [pool.submit(slow, server, 0.05) for _ in range(16)]
            answers = []
            for future in batch:
                try:
                    answers.append(future.result())
                except (httpx.RemoteProtocolError, httpx.ReadError):
                    if not one_is_leaving:
                        raise
            pids |= {r.headers["x-pid"] for r in answers if r.status_code == 200}
    return pids


def slow(server: Server, seconds: float) -> httpx.Response:
    return HTTP.get(f"{server.url}/slow?seconds={seconds}", timeout=30)


def events_text(server: Server) -> str:
    return server.events.read_text() if server.events.exists() else ""


def running(pid: int) -> bool:
    """Whether *pid* is a live process (a zombie nobody reaped has ended)."""
    found = proc.stat(pid)
    return found is not None and found.state != "Z"


def leftovers(pod: Server) -> list[Path]:
    """The pod's worker directory, if still there once every worker process has ended.

    hypercorn's supervisor returns as soon as one worker has exited, without waiting for
    the others, so its own exit does not mean its workers are gone.
    """
    deadline = time.monotonic() + 15
    for pid in pod.worker_pids:  # type: ignore[attr-defined]
        while time.monotonic() < deadline and running(int(pid)):
            time.sleep(0.02)
    return list(Path(tempfile.gettempdir()).glob(f"graceshut-{pod.process.pid}-*"))


def test_one_prestop_call_drains_every_worker(pod: Server) -> None:
    """/shutdown on one worker: all turn unready, all drain, one report lists all four."""
    with concurrent.futures.ThreadPoolExecutor(24) as pool:
        slows = []
        for _ in range(12):
            slows.append(pool.submit(slow, pod, 3))
            # A burst of connections is taken by the first worker to wake, all of them:
            # spread out, they go to several workers.
            time.sleep(0.05)
        time.sleep(0.5)
        answer = pool.submit(HTTP.get, f"{pod.url}/shutdown", headers=pod_credential(), timeout=30)
        # Every worker writes "announce" once its run has begun, readiness failed first.
        deadline = time.monotonic() + 20
        while pod.events_seen()["announce"] < WORKERS:
            assert time.monotonic() < deadline, pod.output()
            time.sleep(0.02)
        probes = [HTTP.get(f"{pod.url}/readyz", timeout=10).status_code for _ in range(50)]
        finished = [f.result() for f in slows]
        report = answer.result()
    assert probes == [503] * 50, "every worker answers 503 from the first trigger"
    assert [r.status_code for r in finished] == [200] * 12, "no in-flight request lost"
    assert len({r.headers["x-pid"] for r in finished}) >= 2
    assert report.status_code == 200
    body = report.json()
    assert body["ok"] is True, body
    workers = body["workers"]
    assert len(workers) == WORKERS
    assert sum(w["in_flight_at_start"] for w in workers) == 12
    assert all(w["in_flight_abandoned"] == 0 for w in workers)
    events = pod.events_seen()
    assert events == {**dict.fromkeys(PER_PROCESS, WORKERS), "pod-announce": 1}, events
    pod.signal(signal.SIGTERM)
    pod.wait_exit()
    assert leftovers(pod) == [], "the worker directory is removed at exit"


def test_sigterm_to_the_supervisor_stops_every_worker(pod: Server) -> None:
    """SIGTERM alone: each worker runs its own sequence; once-per-pod handlers wait for preStop.

    A supervisor also SIGTERMs single workers when it recycles them (gunicorn's
    max_requests, a HUP reload), so a worker's SIGTERM is never taken for the pod's.
    """
    if pod.kind == "hypercorn":  # type: ignore[attr-defined]
        # hypercorn's parent stops its workers through an event, not a signal: they stop
        # serving at once and run the sequence at lifespan shutdown (hence: use preStop).
        pod.signal(signal.SIGTERM)
        pod.wait_exit()
        events = pod.events_seen()
        assert events == dict.fromkeys(PER_PROCESS, WORKERS), events
        assert "shutdown (lifespan) finished clean" in pod.output()
        assert leftovers(pod) == []
        return
    pod.signal(signal.SIGTERM)
    # uvicorn's supervisor looks at its signals every 0.5 s before forwarding them
    deadline = time.monotonic() + 10
    while httpx.get(f"{pod.url}/readyz", timeout=10).status_code == 200:
        assert time.monotonic() < deadline, "readiness never flipped"
        time.sleep(0.02)
    # HTTP, not httpx.get(): on a loaded machine, building a client for each probe pushes
    # the last ones past the delay, when the workers stop listening.
    probes = [HTTP.get(f"{pod.url}/readyz", timeout=10).status_code for _ in range(20)]
    assert probes == [503] * 20, "every worker answers 503 through the delay"
    assert pod.wait_exit() == 0, pod.output()
    events = pod.events_seen()
    assert events == dict.fromkeys(PER_PROCESS, WORKERS), events
    assert leftovers(pod) == []


def test_a_recycled_worker_does_not_drain_the_pod(tmp_path: Path) -> None:
    """gunicorn replacing one worker (SIGTERM to it alone): its siblings and successor serve."""
    port = free_port()
    env = {"GRACESHUT_PROPAGATION_DELAY": "0.2", "GRACESHUT_GRACE_PERIOD": "10"}
    server = Server(argv("gunicorn", port), port, tmp_path / "recycle.events", env)
    try:
        pids = wait_for_all_workers(server)
        victim = int(next(iter(pids)))
        os.kill(victim, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while True:  # until gunicorn has replaced it
            assert time.monotonic() < deadline, server.output()
            seen = wait_for_all_workers(server, one_is_leaving=True)
            if str(victim) not in seen:
                break
            time.sleep(0.2)
        probes = [httpx.get(f"{server.url}/readyz", timeout=10).status_code for _ in range(40)]
        assert probes == [200] * 40, "no sibling and no successor thinks the pod is going"
        assert httpx.get(f"{server.url}/", timeout=10).status_code == 200
        assert server.events_seen()["flush"] == 1, "the recycled worker ran its own sequence"
        assert "pod-announce" not in server.events_seen()
    finally:
        server.stop()


def test_a_recycled_worker_stops_taking_connections_when_its_drain_begins(
    tmp_path: Path,
) -> None:
    """While the recycled worker flushes, every new connection is a sibling's.

    Its listening socket is shared: were it still accepting in its later phases, it
    would take about a quarter of the new connections and refuse them with 503.
    """
    port = free_port()
    env = {
        "GRACESHUT_PROPAGATION_DELAY": "0.2",
        "GRACESHUT_GRACE_PERIOD": "60",
        # Far longer than the 80 requests below take on a loaded machine (6 s was not):
        # the test ends, and kills the server, long before it is over.
        "E2E_SLOW": "flush=40",
    }
    server = Server(argv("gunicorn", port), port, tmp_path / "recycle.events", env)
    try:
        victim = int(next(iter(wait_for_all_workers(server))))
        os.kill(victim, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while f"flush {victim}" not in events_text(server):
            assert time.monotonic() < deadline, server.output()
            time.sleep(0.02)
        time.sleep(0.3)  # the server notices the signal on its next tick (0.1 s)
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda _: slow(server, 0.01), range(80)))
        assert "report" not in server.events_seen(), "the flush was still running"
        assert [r.status_code for r in answers] == [200] * 80
        assert str(victim) not in {r.headers["x-pid"] for r in answers}
        assert "as the drain begins" in server.output()
    finally:
        server.stop()


def test_gunicorn_hook_keeps_the_master_from_killing_a_draining_worker(tmp_path: Path) -> None:
    """With graceful_timeout 1 s, the hook raises it so a 3 s request still completes."""
    port = free_port()
    env = {"GRACESHUT_GRACE_PERIOD": "20", "GRACESHUT_PROPAGATION_DELAY": "0.5"}
    command = [
        *argv("gunicorn", port),
        "--graceful-timeout", "1", "-c", "tests/e2e/gunicorn_conf.py",
    ]  # fmt: skip
    server = Server(command, port, tmp_path / "hook.events", env)
    try:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            request = pool.submit(slow, server, 3)
            time.sleep(0.5)
            server.signal(signal.SIGTERM)
            assert request.result().status_code == 200
        assert server.wait_exit() == 0
        assert "graceful_timeout raised from 1s to 20s" in server.output()
    finally:
        server.stop()
