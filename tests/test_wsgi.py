"""graceshut.wsgi in-process: the routes, the count, the refusal, on asyncio and trio loops."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import httpx
import pytest
from werkzeug.test import Client

import graceshut
from graceshut.wsgi import GracefulShutdownMiddleware, StreamCutError

from .asgi_servers import pod_credential

BACKENDS = ["asyncio", "trio"]


class LocalClient(Client):
    """A test client calling from inside the pod: loopback, with the pod secret.

    ``anonymous=True`` leaves the credential out.
    """

    def open(self, *args: Any, anonymous: bool = False, **kwargs: Any) -> Any:
        kwargs.setdefault("environ_base", {"REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": "50000"})
        headers = dict(kwargs.pop("headers", None) or {})
        if not anonymous and "Authorization" not in headers:
            headers.update(pod_credential(required=False))
        kwargs["headers"] = headers
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
        keys = ("token", "trust_loopback", "admin_address")
        route = {k: settings.pop(k) for k in keys if k in settings}
        options.update(settings)
        coordinator = graceshut.Coordinator(**options, environ={})
        middleware = GracefulShutdownMiddleware(
            app, coordinator, signals=False, backend=request.param, **route
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
    """The ASGI route's own rules: the pod secret or the token, loopback proves nothing."""
    middleware = make()
    client = LocalClient(middleware)
    anonymous = client.get("/shutdown", anonymous=True)
    assert anonymous.status_code == 401, "loopback alone is not trusted"
    wrong = client.get("/shutdown", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 403
    assert "nope" not in wrong.text
    assert not middleware.coordinator.shutting_down, "a refused call starts nothing"
    threaded = {"wsgi.multithread": True}
    answer = client.get("/shutdown", environ_overrides=threaded)
    assert answer.status_code == 200, answer.text
    assert answer.json["ok"] is True
    assert answer.json["reason"] == "prestop"

    guarded = make(token="s3cret")
    client = LocalClient(guarded)
    assert client.get("/shutdown").status_code == 403, "the pod secret is not the token"
    answer = client.get(
        "/shutdown", headers={"Authorization": "Bearer s3cret"}, environ_overrides=threaded
    )
    assert answer.status_code == 200, answer.text


def test_trusted_loopback_still_refuses_forwarded_calls(
    make: Callable[..., GracefulShutdownMiddleware],
) -> None:
    """trust_loopback=True: a bare loopback call passes, a relayed or remote one does not."""
    middleware = make(trust_loopback=True)
    client = LocalClient(middleware)
    remote = client.get("/shutdown", anonymous=True, environ_overrides={"REMOTE_ADDR": "10.1.2.3"})
    assert remote.status_code == 401
    relayed = client.get("/shutdown", anonymous=True, headers={"X-Forwarded-For": "10.1.2.3"})
    assert relayed.status_code == 401
    assert not middleware.coordinator.shutting_down
    assert client.get("/shutdown", anonymous=True).status_code == 202


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


def test_the_admin_listener_answers_for_a_wsgi_app(
    make: Callable[..., GracefulShutdownMiddleware],
) -> None:
    """admin_address: the probes and the route on a port of their own, from the sequence thread."""
    middleware = make(admin_address="127.0.0.1:0")
    admin = middleware.runtime.admin
    assert admin is not None
    wait_for(lambda: admin.bound_address is not None)
    host, port = admin.bound_address  # type: ignore[misc]
    url = f"http://{host}:{port}"
    assert httpx.get(f"{url}/readyz").status_code == 200
    answer = httpx.get(f"{url}/shutdown?wait=0", headers=pod_credential())
    assert answer.status_code == 202, answer.text
    assert httpx.get(f"{url}/readyz").status_code == 503
