"""The zero-drop proof for a Flask app under gunicorn (gthread), against the bare app."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ..asgi_servers import Server, free_port
from .test_rolling_restart import HAProxy, assert_the_load_reached_both, roll

pytestmark = pytest.mark.e2e

GTHREAD = ["-k", "gthread", "-w", "2", "--threads", "4"]
SYNC = ["-k", "sync", "-w", "3"]


@pytest.fixture
def haproxy(tmp_path: Path) -> Iterator[Callable[..., HAProxy]]:
    """Start HAProxy in front of ports; stopped at teardown."""
    started: list[HAProxy] = []

    def start(ports: list[int], *, up: int | None = None) -> HAProxy:
        started.append(HAProxy(tmp_path, ports, up=up))
        return started[-1]

    yield start
    for proxy in started:
        proxy.stop()


@pytest.fixture
def start_flask(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start the Flask app under gunicorn, with graceshut (``flask``) or without it."""
    servers: list[Server] = []

    def start(kind: str, env: dict[str, str] | None = None, port: int | None = None) -> Server:
        port = free_port() if port is None else port
        python = sys.executable
        argv = [python, "-m", "gunicorn", "tests.e2e.flask_app:app", "-b", f"127.0.0.1:{port}"]
        if kind in ("flask", "flask-sync"):
            argv += ["-c", "python:graceshut.gunicorn"]
        settings = {
            "GRACESHUT_GRACE_PERIOD": "20",
            "GRACESHUT_SAFETY_MARGIN": "1",
            "E2E_PLAIN": "1" if kind == "flask-plain" else "0",
            **(env or {}),
        }
        events = tmp_path / f"{kind}-{len(servers)}.events"
        workers = SYNC if kind == "flask-sync" else GTHREAD
        server = Server([*argv, *workers], port, events, settings)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def test_flask_rolling_restart_drops_nothing_and_the_bare_app_does(
    start_flask: Callable[..., Server],
    haproxy: Callable[..., HAProxy],
    capsys: pytest.CaptureFixture[str],
    record_property: Callable[[str, object], None],
) -> None:
    """preStop then SIGTERM behind HAProxy: 0 failures with graceshut, some for the bare app."""
    # One after the other, so that neither run shares the machine with the other.
    bare = roll("flask-plain", start_flask, haproxy, {})
    graceful = roll("flask", start_flask, haproxy, {"GRACESHUT_PROPAGATION_DELAY": "1.5"})
    with capsys.disabled():
        for name, result in (("bare Flask", bare), ("Flask with graceshut", graceful)):
            r = result.requests
            print(f"\nrolling restart, {name} (gunicorn gthread 2x4): {r['failed']} of {r['sent']}")
    record_property("flask_bare_failed", bare.requests["failed"])
    record_property("flask_graceshut_failed", graceful.requests["failed"])
    assert_the_load_reached_both(graceful)
    requests = graceful.requests
    assert requests["failed"] == 0, (requests, graceful.samples, graceful.output)
    assert requests["closed_by_server"] > 0, "keep-alive connections told to close"
    done = graceful.termination
    assert done.hook_result is not None
    assert done.hook_result.status == 200, (done.hook_result, graceful.output)
    assert done.sigkill_at is None
    assert done.exit_status == 0, graceful.output
    assert_the_load_reached_both(bare)
    assert bare.requests["failed"] > 0, bare.requests


def test_flask_sync_workers_rolling_restart_drops_nothing(
    start_flask: Callable[..., Server],
    haproxy: Callable[..., HAProxy],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Sync workers: the preStop call answers 202 at once, SIGTERM joins, nothing fails."""
    result = roll("flask-sync", start_flask, haproxy, {"GRACESHUT_PROPAGATION_DELAY": "1.5"})
    requests = result.requests
    with capsys.disabled():
        print(f"\nrolling restart, Flask with graceshut (gunicorn sync x3): {requests['failed']} "
              f"of {requests['sent']}")  # fmt: skip
    assert_the_load_reached_both(result)
    assert requests["failed"] == 0, (requests, result.samples, result.output)
    done = result.termination
    assert done.hook_result is not None
    assert done.hook_result.status == 202, "the sync worker is not held by the hook"
    assert done.sigkill_at is None
    assert done.exit_status == 0, result.output
