"""gunicorn's master, the pod's main process, exits inside the grace period too.

graceshut's exit watchdog ends the workers; the master's exit is its own, and here its
``on_exit`` hook hangs. With `graceshut.gunicorn.when_ready` it is ended inside the
grace period with status 0; without it, it is still running when the kubelet's SIGKILL
would come.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from ..asgi_servers import Server, free_port, pod_credential

GRACE = 6.0
SETTINGS = {
    "GRACESHUT_GRACE_PERIOD": str(GRACE),
    "GRACESHUT_SAFETY_MARGIN": "3",
    "GRACESHUT_PROPAGATION_DELAY": "0.5",
}


def start(tmp_path: Path, **env: str) -> Server:
    port = free_port()
    argv = [
        sys.executable, "-m", "gunicorn", "tests.e2e.app:app",
        "-k", "uvicorn_worker.UvicornWorker", "-w", "2", "-b", f"127.0.0.1:{port}",
        "-c", "python:tests.e2e.gunicorn_hanging_exit_conf",
    ]  # fmt: skip
    return Server(argv, port, tmp_path / "gunicorn.events", {**SETTINGS, **env})


def ran_for(output: str) -> float:
    line = next(line for line in output.splitlines() if "gunicorn's master still ran" in line)
    return float(line.split("still ran ")[1].split("s after")[0])


def test_a_master_whose_exit_hangs_is_ended_inside_the_grace_period(tmp_path: Path) -> None:
    """SIGTERM alone: workers drain and exit, the master is ended by 5.25 s with status 0."""
    server = start(tmp_path)
    try:
        signalled = time.monotonic()
        server.signal(signal.SIGTERM)
        status = server.wait_exit()
        took = time.monotonic() - signalled
    finally:
        server.stop()
    output = server.log.read_text(errors="replace")
    assert status == 0, output
    assert took < GRACE, (took, output)
    assert "its workers gone: ending it with status 0" in output, output
    assert "Worker exiting" in output, "the workers ended on their own, before"
    # grace 6 s - margin 3 s / 4: never before that moment.
    assert ran_for(output) >= GRACE - 0.75, output


def test_the_masters_countdown_starts_at_the_prestop_call(tmp_path: Path) -> None:
    """preStop call, 2 s more of hook, then SIGTERM: the master keeps to the pod's deadline."""
    server = start(tmp_path)
    try:
        triggered = time.monotonic()
        answer = httpx.get(f"{server.url}/shutdown", headers=pod_credential(), timeout=30)
        assert answer.status_code == 200, answer.text
        time.sleep(max(0.0, triggered + 2.0 - time.monotonic()))  # e.g. a `sleep` after it
        server.signal(signal.SIGTERM)
        status = server.wait_exit()
        took = time.monotonic() - triggered
    finally:
        server.stop()
    output = server.log.read_text(errors="replace")
    assert status == 0, output
    # Counted from SIGTERM the master would have run until 2 + 5.25 s: past the grace.
    assert took < GRACE, (took, output)
    assert ran_for(output) >= GRACE - 0.75, output


def test_without_the_hook_the_master_outlives_the_grace_period(tmp_path: Path) -> None:
    """The baseline: the same hanging ``on_exit`` holds the master past the grace period."""
    server = start(tmp_path, E2E_UNBOUNDED_MASTER="1")
    try:
        server.signal(signal.SIGTERM)
        try:
            status = server.process.wait(GRACE + 2)
        except subprocess.TimeoutExpired:
            status = None
    finally:
        server.stop()
    output = server.log.read_text(errors="replace")
    assert status is None, f"exited with {status} inside {GRACE + 2}s:\n{output}"
    assert "Worker exiting" in output, "the workers had ended; only the master ran on"
