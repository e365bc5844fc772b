"""WSGI servers other than gunicorn: waitress (and uWSGI where it builds)."""

from __future__ import annotations

import concurrent.futures
import signal
import sys
import time
from pathlib import Path

import pytest

from ..asgi_servers import HTTP, Server, free_port, pod_credential

pytestmark = pytest.mark.e2e

PHASES = ["announce", "drain", "flush", "release", "report"]


def test_waitress_sigterm_runs_the_whole_sequence(tmp_path: Path) -> None:
    """waitress installs no SIGTERM handler: graceshut drains, then exits the process with 0."""
    port = free_port()
    argv = [
        sys.executable, "-m", "waitress", f"--listen=127.0.0.1:{port}",
        "tests.e2e.flask_app:app",
    ]  # fmt: skip
    # A delay long enough for the probes of it to land inside it on a loaded machine.
    env = {"GRACESHUT_PROPAGATION_DELAY": "3", "GRACESHUT_GRACE_PERIOD": "15"}
    server = Server(argv, port, tmp_path / "waitress.events", env)
    try:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            # Outlasts the delay: the drain waits for it.
            slow = pool.submit(HTTP.get, f"{server.url}/slow?seconds=6", timeout=20)
            time.sleep(0.5)  # for it to arrive before the signal
            server.signal(signal.SIGTERM)
            deadline = time.monotonic() + 20
            while HTTP.get(f"{server.url}/readyz", timeout=5).status_code == 200:
                assert time.monotonic() < deadline, "readiness never failed"
                time.sleep(0.02)
            during = HTTP.get(f"{server.url}/", timeout=5)
            # The drain handler writes its line as the drain begins.
            while server.events_seen()["drain"] < 1:
                assert time.monotonic() < deadline, server.output()
                time.sleep(0.02)
            refused = HTTP.get(f"{server.url}/", timeout=5)
            assert slow.result().status_code == 200, "the slow request completed"
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
    # A delay long enough for the probes to reach both processes inside it on a loaded
    # machine (the kernel, not uWSGI, picks the process that accepts).
    env = {"GRACESHUT_PROPAGATION_DELAY": "6", "GRACESHUT_GRACE_PERIOD": "20"}
    server = Server(argv, port, tmp_path / "uwsgi.events", env)
    try:
        sent = time.monotonic()
        answer = HTTP.get(f"{server.url}/shutdown", headers=pod_credential(), timeout=10)
        assert answer.status_code == 202, "one thread per process: the route does not wait"
        unready: set[str] = set()
        # Probe through at most 5 s of the 6 s delay, which began after the call was sent.
        deadline = sent + 5
        while time.monotonic() < deadline and len(unready) < 2:
            probe = HTTP.get(f"{server.url}/readyz", timeout=5)
            assert probe.status_code == 503
            unready.add(probe.headers["x-pid"])
            assert HTTP.get(f"{server.url}/", timeout=5).status_code == 200
        # Each process writes its drain line as its drain begins.
        deadline = time.monotonic() + 20
        while server.events_seen()["drain"] < 2:
            assert time.monotonic() < deadline, server.output()
            time.sleep(0.02)
        assert HTTP.get(f"{server.url}/", timeout=5).status_code == 503
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
