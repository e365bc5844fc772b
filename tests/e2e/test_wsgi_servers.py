"""WSGI servers other than gunicorn: waitress (and uWSGI where it builds)."""

from __future__ import annotations

import concurrent.futures
import signal
import sys
import time
from pathlib import Path

import httpx
import pytest

from ..asgi_servers import Server, free_port, pod_credential

pytestmark = pytest.mark.e2e

PHASES = ["announce", "drain", "flush", "release", "report"]


def test_waitress_sigterm_runs_the_whole_sequence(tmp_path: Path) -> None:
    """waitress installs no SIGTERM handler: graceshut drains, then exits the process with 0."""
    port = free_port()
    argv = [
        sys.executable, "-m", "waitress", f"--listen=127.0.0.1:{port}",
        "tests.e2e.flask_app:app",
    ]  # fmt: skip
    env = {"GRACESHUT_PROPAGATION_DELAY": "1", "GRACESHUT_GRACE_PERIOD": "15"}
    server = Server(argv, port, tmp_path / "waitress.events", env)
    try:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            slow = pool.submit(httpx.get, f"{server.url}/slow?seconds=2.5", timeout=20)
            time.sleep(0.3)
            server.signal(signal.SIGTERM)
            time.sleep(0.2)
            ready = httpx.get(f"{server.url}/readyz", timeout=5)
            during = httpx.get(f"{server.url}/", timeout=5)
            time.sleep(1.0)
            refused = httpx.get(f"{server.url}/", timeout=5)
            assert slow.result().status_code == 200, "the slow request completed"
        assert ready.status_code == 503
        assert during.status_code == 200, "served during the propagation delay"
        assert refused.status_code == 503
        assert server.wait_exit() == 0, server.output()
        assert server.events_seen() == {**dict.fromkeys(PHASES, 1), "pod-announce": 1}
    finally:
        server.stop()


UWSGI = Path(sys.executable).with_name("uwsgi")


def test_uwsgi_prestop_route_drains_every_process(tmp_path: Path) -> None:
    """uWSGI, 2 processes: the route on one drains both; then SIGTERM stops them, status 0."""
    port = free_port()
    argv = [
        str(UWSGI), "--http-socket", f"127.0.0.1:{port}", "--module", "tests.e2e.flask_app:app",
        "--master", "--processes", "2", "--enable-threads", "--die-on-term", "--need-app",
    ]  # fmt: skip
    env = {"GRACESHUT_PROPAGATION_DELAY": "1.5", "GRACESHUT_GRACE_PERIOD": "15"}
    server = Server(argv, port, tmp_path / "uwsgi.events", env)
    try:
        answer = httpx.get(f"{server.url}/shutdown", headers=pod_credential(), timeout=10)
        assert answer.status_code == 202, "one thread per process: the route does not wait"
        unready: set[str] = set()
        deadline = time.monotonic() + 1.2
        while time.monotonic() < deadline:
            probe = httpx.get(f"{server.url}/readyz", timeout=5)
            assert probe.status_code == 503
            unready.add(probe.headers["x-pid"])
            assert httpx.get(f"{server.url}/", timeout=5).status_code == 200
        time.sleep(0.6)
        assert httpx.get(f"{server.url}/", timeout=5).status_code == 503
        assert len(unready) == 2, "both processes answer 503"
        deadline = time.monotonic() + 10
        while server.events_seen()["report"] < 2:
            assert time.monotonic() < deadline, server.output()
            time.sleep(0.05)
        server.signal(signal.SIGTERM)
        assert server.wait_exit() == 0, server.output()
        assert server.events_seen() == {**dict.fromkeys(PHASES, 2), "pod-announce": 1}
    finally:
        server.stop()
