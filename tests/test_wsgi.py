"""graceshut.wsgi in-process: the routes, the count, the refusal, on asyncio and trio loops."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest
from werkzeug.test import Client

import graceshut
from graceshut.wsgi import GracefulShutdownMiddleware, StreamCutError

BACKENDS = ["asyncio", "trio"]


class LocalClient(Client):
    """A test client whose requests come from loopback, as a server would say."""

    def open(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("environ_base", {"REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": "50000"})
        kwargs.setdefault("buffered", True)  # read and close the body, as a server does
        return super().open(*args, **kwargs)


def hello(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


@pytest.fixture(params=BACKENDS)
def make(request: pytest.FixtureRequest) -> Iterator[Callable[..., GracefulShutdownMiddleware]]:
    """Build a middleware whose sequence thread runs on the parametrized loop."""
    made: list[GracefulShutdownMiddleware] = []

    def build(app: Any = hello, **settings: Any) -> GracefulShutdownMiddleware:
        options = {"grace_period": 10.0, "safety_margin": 1.0, "propagation_delay": 0.3}
        token = settings.pop("token", None)
        options.update(settings)
        coordinator = graceshut.Coordinator(**options, environ={})
        middleware = GracefulShutdownMiddleware(
            app, coordinator, signals=False, backend=request.param, token=token
        )
        made.append(middleware)
        return middleware

    yield build
    for middleware in made:
        middleware.runtime.stop(timeout=10)


def ignore_start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
    """A server's start_response that keeps nothing."""


def wait_for(predicate: Callable[[], bool], timeout: float = 5) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "condition not met in time"
        time.sleep(0.01)


def test_probes_route_and_refusal(make: Callable[..., GracefulShutdownMiddleware]) -> None:
    """/shutdown?wait=0 flips readiness, the app serves through the delay, then 503s."""
    middleware = make()
    client = LocalClient(middleware)
    assert client.get("/readyz").status_code == 200
    started = client.get("/shutdown?wait=0")
    assert started.status_code == 202, started.text
    assert started.json == {"status": "started", "reason": "prestop"}
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json["reason"] == "prestop"
    assert client.get("/livez").status_code == 200
    assert client.get("/").status_code == 200, "served during the propagation delay"
    coordinator = middleware.coordinator
    wait_for(lambda: coordinator.draining)
    refused = client.get("/")
    assert refused.status_code == 503
    assert refused.headers["Retry-After"] == "1"
    assert refused.json["error"] == "shutting down"
    wait_for(lambda: coordinator.report is not None)
    report = coordinator.report
    assert report is not None
    assert report.ok
    assert coordinator.in_flight.refused == 1
    assert client.post("/readyz").status_code == 405


def test_the_drain_waits_for_an_open_response(
    make: Callable[..., GracefulShutdownMiddleware],
) -> None:
    """A response iterable not yet closed by the server holds the drain open."""
    middleware = make()
    coordinator = middleware.coordinator
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "wsgi.multithread": True}
    body = middleware(environ, ignore_start)
    assert coordinator.in_flight.count == 1
    LocalClient(middleware).get("/shutdown?wait=0")
    wait_for(lambda: coordinator.draining)
    time.sleep(0.3)
    assert coordinator.phase is graceshut.Phase.DRAIN, "still draining: the response is open"
    assert list(body) == [b"hello"]
    body.close()  # type: ignore[attr-defined]
    wait_for(lambda: coordinator.report is not None)
    report = coordinator.report
    assert report is not None
    assert report.in_flight_at_start == 1
    assert report.in_flight_abandoned == 0
    assert coordinator.in_flight.count == 0


def test_a_stream_is_cut_once_the_drain_is_over(
    make: Callable[..., GracefulShutdownMiddleware],
) -> None:
    """A response still streaming after the drain's share raises instead of ending cleanly."""
    go_on = threading.Event()

    def stream(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"first"
        go_on.wait(10)
        yield b"second"

    middleware = make(stream, grace_period=2.0, safety_margin=0.5, propagation_delay=0.1)
    coordinator = middleware.coordinator
    body = middleware({"REQUEST_METHOD": "GET", "PATH_INFO": "/"}, ignore_start)
    chunks = iter(body)
    assert next(chunks) == b"first"
    LocalClient(middleware).get("/shutdown?wait=0")
    wait_for(lambda: coordinator.draining and coordinator.phase is not graceshut.Phase.DRAIN)
    go_on.set()
    with pytest.raises(StreamCutError):
        next(chunks)
    body.close()  # type: ignore[attr-defined]  # as the server does, within the margin
    wait_for(lambda: middleware.coordinator.in_flight.count == 0)


def test_the_route_keeps_the_asgi_rules(make: Callable[..., GracefulShutdownMiddleware]) -> None:
    """Same authentication as graceshut.asgi: no forwarded or remote calls, bearer token."""
    middleware = make()
    client = LocalClient(middleware)
    remote = client.get("/shutdown", environ_overrides={"REMOTE_ADDR": "10.1.2.3"})
    assert remote.status_code == 403
    forwarded = client.get("/shutdown", headers={"X-Forwarded-For": "10.1.2.3"})
    assert forwarded.status_code == 403
    assert not middleware.coordinator.shutting_down, "a refused call starts nothing"

    guarded = make(token="s3cret")
    client = LocalClient(guarded)
    assert client.get("/shutdown").status_code == 401
    wrong = client.get("/shutdown", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 403
    assert "s3cret" not in wrong.text
    assert not guarded.coordinator.shutting_down
    threaded = {"wsgi.multithread": True}
    answer = client.get(
        "/shutdown", headers={"Authorization": "Bearer s3cret"}, environ_overrides=threaded
    )
    assert answer.status_code == 200, answer.text
    assert answer.json["ok"] is True
    assert answer.json["reason"] == "prestop"


def test_one_thread_per_worker_answers_at_once(
    make: Callable[..., GracefulShutdownMiddleware],
) -> None:
    """wsgi.multithread false (gunicorn sync): 202 unless ?wait=1 asks to wait."""
    client = LocalClient(make())
    assert client.get("/shutdown").status_code == 202
    waited = LocalClient(make()).get("/shutdown?wait=1")
    assert waited.status_code == 200
    assert waited.json["ok"] is True


def test_sync_and_async_handlers_run_on_the_sequence_thread(
    make: Callable[..., GracefulShutdownMiddleware],
) -> None:
    """Both kinds of handler run once, and the report lists them."""
    middleware = make()
    coordinator = middleware.coordinator
    ran: list[str] = []

    @coordinator.on_shutdown("flush")
    def sync_flush() -> None:
        ran.append("sync")

    @coordinator.on_shutdown("release")
    async def async_release() -> None:
        ran.append("async")

    answer = LocalClient(middleware).get("/shutdown", environ_overrides={"wsgi.multithread": True})
    assert answer.status_code == 200
    assert sorted(ran) == ["async", "sync"]
    names = {h["name"]: h["outcome"] for h in answer.json["handlers"]}
    assert set(names.values()) == {"ok"}
