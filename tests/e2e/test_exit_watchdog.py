"""The exit watchdog under real servers: exit-time work that hangs cannot outlive the grace period.

Each app hangs at exit on purpose (tests/e2e/exit_hang.py): an ``atexit`` hook that sleeps
forever, or a non-daemon thread that never ends. Without the watchdog none of these
processes would exit before the kubelet's SIGKILL.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ..asgi_servers import Server, free_port
from .test_wsgi_gunicorn import gunicorn_wsgi

pytestmark = pytest.mark.e2e

StartServer = Callable[..., Server]
GRACE = 10.0
# A wide margin: the watchdog fires at GRACE - MARGIN / 2 = 8 s, 2 s before the grace
# period ends, room enough on a loaded machine.
TIMINGS = {
    "GRACESHUT_GRACE_PERIOD": str(GRACE),
    "GRACESHUT_SAFETY_MARGIN": "4",
    "GRACESHUT_PROPAGATION_DELAY": "0.5",
}
ASGI_KINDS = ["uvicorn", "gunicorn", "hypercorn-asyncio", "hypercorn-trio", "uvicorn-run"]


def sigterm_and_time_exit(server: Server) -> tuple[int, float]:
    sent = time.monotonic()
    server.signal(signal.SIGTERM)
    status = server.wait_exit(timeout=GRACE * 3)
    return status, time.monotonic() - sent


@pytest.mark.parametrize("kind", ASGI_KINDS)
def test_an_atexit_hook_that_hangs_is_ended_inside_the_grace_period(
    start_server: StartServer, kind: str
) -> None:
    """atexit hook sleeping forever: exit 0 (the report's) before the grace period, and why."""
    server = start_server(kind, {**TIMINGS, "E2E_HANG_AT_EXIT": "atexit"})
    status, took = sigterm_and_time_exit(server)
    output = server.output()
    assert status == 0, output
    assert took < GRACE, f"exit {took:.1f}s after SIGTERM, past the grace period:\n{output}"
    assert "exit forced" in output, output
    assert "still running: atexit hook hang_at_exit" in output, output


@pytest.mark.parametrize("kind", ["uvicorn", "gunicorn"])
def test_a_non_daemon_thread_that_never_ends_is_named_and_cut(
    start_server: StartServer, kind: str
) -> None:
    """A non-daemon thread keeps Python from exiting: the watchdog names it and exits 0."""
    server = start_server(kind, {**TIMINGS, "E2E_HANG_AT_EXIT": "thread"})
    status, took = sigterm_and_time_exit(server)
    output = server.output()
    assert status == 0, output
    assert took < GRACE, output
    assert "still running: non-daemon threads: forever-consumer" in output, output


def test_the_forced_exit_keeps_the_reports_status_1(start_server: StartServer) -> None:
    """A failed handler and a hung atexit hook: the watchdog exits 1, not 0, 137 or 143."""
    server = start_server("uvicorn", {**TIMINGS, "E2E_HANG_AT_EXIT": "atexit", "E2E_FAIL": "flush"})
    status, took = sigterm_and_time_exit(server)
    output = server.output()
    assert status == 1, output
    assert took < GRACE, output
    assert output.index("finished with failures") < output.index("exit forced"), output


@pytest.mark.parametrize(
    ("worker", "hang"), [("sync", "atexit"), ("sync", "thread"), ("gthread", "atexit")]
)
def test_a_wsgi_worker_that_hangs_at_exit_is_ended_inside_the_grace_period(
    tmp_path: Path, worker: str, hang: str
) -> None:
    """gunicorn sync and gthread workers (Flask): the same watchdog ends a worker hung at exit."""
    port = free_port()
    env = {**TIMINGS, "E2E_HANG_AT_EXIT": hang}
    argv = gunicorn_wsgi(port, ["-k", worker, "-w", "1", "--graceful-timeout", "30"])
    server = Server(argv, port, tmp_path / "wsgi.events", env)
    try:
        status, took = sigterm_and_time_exit(server)
        output = server.output()
        assert status == 0, output
        assert took < GRACE, output
        expected = "atexit hook hang_at_exit" if hang == "atexit" else "forever-consumer"
        assert expected in output, output
    finally:
        server.stop()
