"""A Django project wired with graceshut.django, under gunicorn (WSGI) and uvicorn (ASGI)."""

from __future__ import annotations

import concurrent.futures
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ..asgi_servers import HTTP, Server, free_port

pytestmark = pytest.mark.e2e

PHASES = ["announce", "drain", "flush", "release", "report"]
PROJECT = "tests.e2e.django_project"


def command(kind: str, port: int) -> list[str]:
    python = sys.executable
    return {
        "gunicorn": [
            python, "-m", "gunicorn", f"{PROJECT}.wsgi:application", "-c",
            "python:graceshut.gunicorn", "-k", "gthread", "-w", "2", "--threads", "2",
            "-b", f"127.0.0.1:{port}",
        ],
        "uvicorn": [
            python, "-m", "uvicorn", f"{PROJECT}.asgi:application", "--port", str(port),
        ],
    }[kind]  # fmt: skip


@pytest.fixture(params=["gunicorn", "uvicorn"])
def django(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    port = free_port()
    env = {
        "GRACESHUT_GRACE_PERIOD": "25",  # the drain ends 19 s in: the slow request ends first
        # Long enough for the probes of the delay to land inside it on a loaded machine.
        "GRACESHUT_PROPAGATION_DELAY": "3",
        "DJANGO_SETTINGS_MODULE": f"{PROJECT}.settings",
    }
    server = Server(command(request.param, port), port, tmp_path / "django.events", env)
    server.kind = request.param  # type: ignore[attr-defined]
    try:
        yield server
    finally:
        server.stop()
        print(server.log.read_text(errors="replace"))  # shown for a failed test only


def get(server: Server, path: str) -> httpx.Response:
    return HTTP.get(f"{server.url}{path}", timeout=30)


def test_sigterm_drains_a_django_project(django: Server) -> None:
    """SIGTERM: unready at once, served through the delay, slow ends, 503 after, exit 0."""
    workers = 2 if django.kind == "gunicorn" else 1  # type: ignore[attr-defined]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        django.signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        while get(django, "/readyz").status_code == 200:
            assert time.monotonic() < deadline, "readiness never flipped"
            time.sleep(0.01)
        slow = pool.submit(get, django, "/slow?seconds=6")  # outlasts the delay
        during = list(pool.map(lambda _: get(django, "/").status_code, range(10)))
        # Each worker's drain handler writes its line as its drain begins; the drain then
        # waits for the slow request.
        while django.events_seen()["drain"] < workers:
            assert time.monotonic() < deadline, "the drain never began"
            time.sleep(0.02)
        refused = get(django, "/")
        assert slow.result().status_code == 200, "the slow request completed"
    assert during == [200] * 10, "served during the propagation delay"
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "3", "GRACESHUT['RETRY_AFTER'] from settings"
    assert django.wait_exit() == 0, django.output()
    assert django.events_seen() == dict.fromkeys(PHASES, workers), django.events_seen()
