"""OpenTelemetry under real servers: spans and the shutdown trace reach a real OTLP/HTTP collector.

The collector is a server on 127.0.0.1 that decodes the exporters' protobuf payloads
(tests/e2e/_otlp.py); the app (tests/e2e/otel_app.py) batches its spans as the SDK's
getting-started guide does and calls `graceshut.contrib.otel.instrument`.
"""

from __future__ import annotations

import concurrent.futures
import re
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ..asgi_servers import Server, free_port, pod_credential
from ..contrib._http_recorder import Recorder, closed_port_url, serving
from ._otlp import metric_points, spans

pytestmark = pytest.mark.e2e

KINDS = ["uvicorn", "gunicorn"]
STEPS = ["announce", "propagation", "drain", "flush", "release", "report"]
# An 8 s grace period and exporters that would wait 30 s. The margin of 3 s leaves the
# exit (the server's own shutdown) time after the watchdog's moment on a loaded machine;
# gunicorn's master, which once took 2 s more to reap its worker with 8 suites side by
# side on 2 cores, is ended by graceshut's `when_ready` hook at 8 - 3 / 4 s.
SHORT_GRACE = {
    "GRACESHUT_GRACE_PERIOD": "8",
    "GRACESHUT_SAFETY_MARGIN": "3",
    "E2E_OTLP_TIMEOUT": "30",
}


@pytest.fixture
def collector() -> Iterator[Recorder]:
    with serving() as recorder:
        yield recorder


def start(kind: str, tmp_path: Path, collector_url: str, **env: str) -> Server:
    port = free_port()
    python = sys.executable
    argv = {
        "uvicorn": [python, "-m", "uvicorn", "tests.e2e.otel_app:app", "--port", str(port)],
        "gunicorn": [
            python, "-m", "gunicorn", "tests.e2e.otel_app:app", "-k",
            "uvicorn_worker.UvicornWorker", "-w", "1", "-b", f"127.0.0.1:{port}",
            "--graceful-timeout", "60", "-c", "python:graceshut.gunicorn",
        ],
    }[kind]  # fmt: skip
    settings = {
        "GRACESHUT_GRACE_PERIOD": "10",
        "GRACESHUT_SAFETY_MARGIN": "1",
        "GRACESHUT_PROPAGATION_DELAY": "0.5",
        "E2E_OTLP": collector_url,
        **env,
    }
    return Server(argv, port, tmp_path / f"{kind}.events", settings)


def load(server: Server, count: int) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for n in range(count):
            assert client.get("/work", params={"n": n}).status_code == 200


@pytest.mark.parametrize("kind", KINDS)
def test_every_span_and_the_shutdown_trace_arrive(
    kind: str, tmp_path: Path, collector: Recorder
) -> None:
    """50 requests + 3 drained at SIGTERM: 53 spans, then the shutdown trace, every step."""
    server = start(kind, tmp_path, collector.url)
    try:
        load(server, 50)
        # Connected before SIGTERM (a loaded machine may start a thread late): the
        # three requests are in flight when the trigger comes, not refused after it.
        clients = [httpx.Client(base_url=server.url, timeout=15) for _ in range(3)]
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            for client in clients:
                assert client.get("/livez").status_code == 200
            slow = [
                pool.submit(client.get, "/work", params={"n": 100 + i, "seconds": 1.5})
                for i, client in enumerate(clients)
            ]
            time.sleep(0.5)
            server.signal(signal.SIGTERM)
            assert [f.result(timeout=15).status_code for f in slow] == [200] * 3
        for client in clients:
            client.close()
        assert server.wait_exit() == 0, server.output()
    finally:
        server.stop()
    output = server.log.read_text(errors="replace")
    received = spans(collector)
    work = sorted(s.attributes["e2e.n"] for s in received if s.name == "work")
    assert work == [*range(50), 100, 101, 102], output

    (root,) = [s for s in received if s.name == "graceshut.shutdown"]
    assert root.attributes["graceshut.trigger"] == "SIGTERM"
    assert root.attributes["graceshut.outcome"] == "ok"
    assert root.attributes["graceshut.exit_status"] == 0
    assert root.attributes["graceshut.grace_period"] == 10.0
    steps = [s for s in received if s.parent_id == root.span_id]
    assert [s.name for s in sorted(steps, key=lambda s: s.start)] == [
        f"graceshut.{step}" for step in STEPS
    ]
    assert all(s.trace_id == root.trace_id for s in steps)
    assert all(root.start <= s.start and s.end <= root.end for s in steps)
    # The root lasts what the report says (printed to stderr with 3 decimals).
    reported = re.search(r"finished clean in (\d+\.\d+)s", output)
    assert reported is not None, output
    assert abs(root.duration - float(reported.group(1))) < 0.0015

    metrics = metric_points(collector)
    # Exported by the flush, and again as the reader shuts down: the same final numbers.
    assert metrics["graceshut.shutdown.ok"], metrics
    assert all(point == ({"reason": "SIGTERM"}, 1.0) for point in metrics["graceshut.shutdown.ok"])
    assert {a["phase"] for a, _ in metrics["graceshut.phase.duration"]} == set(STEPS)


def test_handler_spans_sit_under_their_phase_with_their_outcome(
    tmp_path: Path, collector: Recorder
) -> None:
    """A failing flush handler: its span under graceshut.flush, error.type, status ERROR."""
    server = start("uvicorn", tmp_path, collector.url, E2E_OTEL_HANDLERS="1")
    try:
        server.signal(signal.SIGTERM)
        assert server.wait_exit() == 1, server.output()
    finally:
        server.stop()
    received = spans(collector)
    by_id = {s.span_id: s for s in received}
    handlers = {
        s.attributes["graceshut.handler"]: s for s in received if s.name == "graceshut.handler"
    }
    assert by_id[handlers["save-rows"].parent_id].name == "graceshut.flush"
    assert handlers["save-rows"].attributes["error.type"] == "ConnectionError"
    assert handlers["save-rows"].status_code == 2  # STATUS_CODE_ERROR
    assert by_id[handlers["slow-unlock"].parent_id].name == "graceshut.release"
    assert handlers["slow-unlock"].attributes["error.type"] == "timeout"
    assert by_id[handlers["deregister"].parent_id].name == "graceshut.announce"
    assert handlers["deregister"].attributes["graceshut.outcome"] == "ok"
    assert "error.type" not in handlers["deregister"].attributes
    (root,) = [s for s in received if s.name == "graceshut.shutdown"]
    assert root.attributes["graceshut.outcome"] == "failed"
    assert root.attributes["graceshut.exit_status"] == 1


@pytest.mark.parametrize("kind", KINDS)
def test_a_hanging_collector_is_abandoned_and_the_exit_is_on_time(
    kind: str, tmp_path: Path, collector: Recorder
) -> None:
    """Collector accepts and never answers: report says abandoned, exit 0 inside the grace."""
    collector.hang = True
    server = start(kind, tmp_path, collector.url, **SHORT_GRACE)
    try:
        load(server, 20)
        started = time.monotonic()
        answer = httpx.get(f"{server.url}/shutdown", headers=pod_credential(), timeout=30)
        server.signal(signal.SIGTERM)
        status = server.wait_exit()
        took = time.monotonic() - started
    finally:
        server.stop()
    output = server.log.read_text(errors="replace")
    assert status == 0, output
    assert took < 8, f"exit {took:.1f}s after the trigger:\n{output}"
    flushes = {f["name"]: f for f in answer.json()["final_flushes"]}
    assert flushes["otel.traces"]["outcome"] == "abandoned", flushes
    assert "final flush otel.traces abandoned" in output


@pytest.mark.parametrize("kind", KINDS)
def test_a_refused_collector_does_not_hold_the_exit(kind: str, tmp_path: Path) -> None:
    """Connections refused (the exporter retries with backoff): exit 0 inside the grace."""
    server = start(kind, tmp_path, closed_port_url(), **SHORT_GRACE)
    try:
        load(server, 20)
        sent = time.monotonic()
        server.signal(signal.SIGTERM)
        status = server.wait_exit()
        took = time.monotonic() - sent
    finally:
        server.stop()
    output = server.log.read_text(errors="replace")
    assert status == 0, output
    assert took < 8, f"exit {took:.1f}s after SIGTERM:\n{output}"
    assert re.search(r"final flush otel\.traces (abandoned|failed)", output), output


def test_without_contrib_otel_the_sdks_own_exit_flush_still_runs(
    tmp_path: Path, collector: Recorder
) -> None:
    """graceshut alone: the exit stays normal, so the SDK's atexit flush still sends it all."""
    server = start("uvicorn", tmp_path, collector.url, E2E_OTEL_INSTRUMENT="0")
    try:
        load(server, 20)
        server.signal(signal.SIGTERM)
        assert server.wait_exit() == 0, server.output()
    finally:
        server.stop()
    received = spans(collector)
    assert sorted(s.attributes["e2e.n"] for s in received if s.name == "work") == list(range(20))
    assert not [s for s in received if s.name == "graceshut.shutdown"]
