"""WSGI servers other than gunicorn: waitress (and uWSGI where it builds)."""

from __future__ import annotations

import concurrent.futures
import shutil
import signal
import sys
import time
from pathlib import Path

import httpx
import pytest

from ..asgi_servers import Server, free_port

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


@pytest.mark.skipif(shutil.which("uwsgi") is None, reason="uWSGI is not installed")
def test_uwsgi_placeholder() -> None:
    """Placeholder replaced below when uWSGI builds."""
