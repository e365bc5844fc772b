"""The WSGI examples run: Flask and Django under gunicorn, real SIGTERM."""

from __future__ import annotations

import concurrent.futures
import json
import signal
import sys
import time
from pathlib import Path

import httpx
import pytest

from .asgi_servers import HTTP, Server, free_port, pod_credential
from .test_examples import FAST, PHASE_LINES, assert_phases_in_order, rows

pytestmark = pytest.mark.e2e


def gunicorn(app: str, tmp_path: Path, env: dict[str, str], *options: str) -> Server:
    port = free_port()
    argv = [
        sys.executable, "-m", "gunicorn", "-c", "python:graceshut.gunicorn",
        "-b", f"127.0.0.1:{port}", *options, app,
    ]  # fmt: skip
    return Server(argv, port, tmp_path / "example.events", {**FAST, **env})


def test_the_flask_example_saves_every_view_on_sigterm(tmp_path: Path) -> None:
    """examples/flask_app.py under gthread 2x4: served through the delay, every view saved."""
    database = tmp_path / "flask.sqlite3"
    # A delay long enough for the probes of it to land inside it on a loaded machine.
    env = {"FLASK_DEMO_DATABASE": str(database), "GRACESHUT_PROPAGATION_DELAY": "3"}
    options = ["-k", "gthread", "-w", "2", "--threads", "4"]
    server = gunicorn("examples.flask_app:app", tmp_path, env, *options)
    try:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            for _ in range(10):
                assert HTTP.get(f"{server.url}/").status_code == 200
            # Outlasts the delay: the drain waits for it.
            slow = pool.submit(HTTP.get, f"{server.url}/slow?seconds=5", timeout=20)
            time.sleep(0.5)  # for it to arrive before the signal
            server.signal(signal.SIGTERM)
            deadline = time.monotonic() + 20
            while HTTP.get(f"{server.url}/readyz").status_code != 503:
                assert time.monotonic() < deadline, "readiness never failed"
                time.sleep(0.02)
            assert HTTP.get(f"{server.url}/").status_code == 200, "the propagation delay"
            assert slow.result().status_code == 200
        assert server.wait_exit(20) == 0, server.output()
        output = server.output()
    finally:
        server.stop()
    # The announce handler runs once per pod (on preStop), and no handler reports.
    assert_phases_in_order(
        output, [x for x in PHASE_LINES if "announce" not in x and "report" not in x]
    )
    assert output.count("leaving the load balancer") == 0, "once per pod: only on preStop"
    assert dict(rows(database, "SELECT path, count(*) FROM views GROUP BY path")) == {
        "/": 11,
        "/slow": 1,
    }


def test_the_django_example_saves_its_cache_on_sigterm(tmp_path: Path) -> None:
    """examples/django_project under gunicorn sync: the cache is written before the exit."""
    env = {"DJANGO_DEMO_DIR": str(tmp_path)}
    server = gunicorn("examples.django_project.wsgi", tmp_path, env, "-w", "1")
    try:
        for name in ["ada", "bob", "ada"]:
            assert httpx.get(f"{server.url}/", params={"name": name}).text == f"hello {name}\n"
        answer = httpx.get(f"{server.url}/shutdown", headers=pod_credential())
        assert answer.status_code == 202, "a sync worker is not held by the route"
        assert httpx.get(f"{server.url}/readyz").status_code == 503
        deadline = time.monotonic() + 10
        while not list(tmp_path.glob("greetings-*.json")):
            assert time.monotonic() < deadline, server.output()
            time.sleep(0.05)
        server.signal(signal.SIGTERM)
        assert server.wait_exit(15) == 0, server.output()
    finally:
        server.stop()
    (saved,) = tmp_path.glob("greetings-*.json")
    assert json.loads(saved.read_text()) == {"ada": 2, "bob": 1}
