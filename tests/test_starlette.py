from __future__ import annotations

import anyio
import httpx
import pytest
from asgi_lifespan import LifespanManager
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import graceshut
import graceshut.starlette
from graceshut import Coordinator

from .asgi_servers import pod_credential

pytestmark = pytest.mark.anyio


def make_app(
    coordinator: Coordinator, *, token: str | None = None, log: list[str] | None = None
) -> Starlette:
    release = anyio.Event()

    async def home(request: Request) -> PlainTextResponse:
        return PlainTextResponse("hello")

    async def slow(request: Request) -> PlainTextResponse:
        await release.wait()
        return PlainTextResponse("slow done")

    import contextlib

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):  # type: ignore[no-untyped-def]
        if log is not None:
            log.append("app startup")
        yield
        if log is not None:
            log.append("app shutdown")

    app = Starlette(routes=[Route("/", home), Route("/slow", slow)], lifespan=lifespan)
    app.state.release = release
    graceshut.starlette.install(app, coordinator, token=token)
    return app


def client_for(app: Starlette, client: tuple[str, int] = ("127.0.0.1", 50000)) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=client)
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


def fast(**kwargs: float) -> Coordinator:
    settings = {"grace_period": 10.0, "safety_margin": 1.0, "propagation_delay": 0.3}
    settings.update(kwargs)
    return Coordinator(**settings, environ={})


async def test_readiness_fails_at_once_while_the_app_keeps_serving() -> None:
    """After the trigger: /readyz is 503, /livez 200, and normal requests still succeed."""
    coordinator = fast(propagation_delay=0.5)
    app = make_app(coordinator)
    async with LifespanManager(app), client_for(app) as client:
        assert (await client.get("/readyz")).status_code == 200
        coordinator.trigger("test")
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["status"] == "shutting down"
        assert (await client.get("/livez")).status_code == 200
        served = await client.get("/")
        assert served.status_code == 200
        assert served.text == "hello"
        assert served.headers["connection"] == "close"
        await coordinator.shutdown()


async def test_in_flight_request_finishes_and_new_ones_get_503_in_drain() -> None:
    """A slow request started before the drain completes; one arriving in the drain gets 503."""
    coordinator = fast(propagation_delay=0.1)
    app = make_app(coordinator)
    results: dict[str, httpx.Response] = {}
    async with LifespanManager(app), client_for(app) as client:

        async def slow() -> None:
            results["slow"] = await client.get("/slow")

        async with anyio.create_task_group() as tg:
            tg.start_soon(slow)
            await anyio.sleep(0.05)
            assert coordinator.in_flight.count == 1
            tg.start_soon(coordinator.shutdown, "test")
            await coordinator.wait_for_drain()
            refused = await client.get("/")
            assert not coordinator.report
            app.state.release.set()
        report = await coordinator.shutdown()
    assert results["slow"].status_code == 200
    assert results["slow"].text == "slow done"
    assert results["slow"].headers["connection"] == "close"
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "1"
    assert refused.headers["connection"] == "close"
    assert refused.json()["error"] == "shutting down"
    assert coordinator.in_flight.refused == 1
    assert report.in_flight_at_start == 1
    assert report.in_flight_abandoned == 0


async def test_lifespan_shutdown_runs_the_sequence_once_between_the_apps_own_lifespan() -> None:
    """The app's startup runs first, its shutdown after graceshut's handlers, each once."""
    coordinator = fast()
    log: list[str] = []

    @coordinator.on_shutdown(phase="release")
    def release() -> None:
        log.append("graceshut release")

    app = make_app(coordinator, log=log)
    async with LifespanManager(app):
        log.append("serving")
    assert log == ["app startup", "serving", "graceshut release", "app shutdown"]
    assert coordinator.report is not None
    assert coordinator.report.reason == "lifespan"


async def test_lifespan_shutdown_skips_the_propagation_delay() -> None:
    """When the server already stopped serving, waiting for routers would be wasted time."""
    coordinator = fast(propagation_delay=5.0)
    app = make_app(coordinator)
    with anyio.fail_after(3):
        async with LifespanManager(app):
            pass
    assert coordinator.report is not None


async def test_shutdown_route_waits_and_answers_with_the_report() -> None:
    """GET /shutdown runs the sequence and returns the report; a second call joins it."""
    coordinator = fast(propagation_delay=0.0)
    calls: list[str] = []

    @coordinator.on_shutdown(phase="announce", name="deregister")
    async def deregister() -> None:
        calls.append("deregister")
        await anyio.sleep(0.1)

    app = make_app(coordinator)
    async with LifespanManager(app), client_for(app) as client:
        responses: list[httpx.Response] = []

        async def call(method: str) -> None:
            responses.append(await client.request(method, "/shutdown", headers=pod_credential()))

        async with anyio.create_task_group() as tg:
            tg.start_soon(call, "GET")
            tg.start_soon(call, "POST")
            tg.start_soon(call, "GET")
        later = await client.get("/shutdown", headers=pod_credential())
    assert [r.status_code for r in responses] == [200, 200, 200]
    body = responses[0].json()
    assert body["reason"] == "prestop"
    assert body["ok"] is True
    assert body["handlers"][0]["name"] == "deregister"
    assert all(r.json() == body for r in [*responses, later])
    assert calls == ["deregister"]


async def test_shutdown_route_wait_0_answers_202_at_once() -> None:
    """?wait=0 starts the run in the background and answers 202 immediately."""
    coordinator = fast(propagation_delay=1.0)
    app = make_app(coordinator)
    async with LifespanManager(app), client_for(app) as client:
        with anyio.fail_after(0.5):
            response = await client.post("/shutdown?wait=0", headers=pod_credential())
        assert response.status_code == 202
        assert response.json() == {"status": "started", "reason": "prestop"}
        again = await client.post("/shutdown?wait=false", headers=pod_credential())
        assert again.json()["status"] == "already running"
        assert coordinator.shutting_down


async def test_shutdown_route_needs_the_pod_secret_from_any_client_by_default() -> None:
    """Without a token, loopback proves nothing: only the pod secret starts a shutdown."""
    coordinator = fast()
    app = make_app(coordinator)
    async with LifespanManager(app):
        for client in [("10.1.2.3", 4000), ("127.0.0.1", 4000), ("::1", 4000)]:
            async with client_for(app, client=client) as caller:
                response = await caller.get("/shutdown?wait=0")
                assert response.status_code == 401
                assert "graceshut prestop" in response.json()["detail"]
                assert "the pod secret" in response.json()["detail"]
                wrong = await caller.get("/shutdown", headers={"Authorization": "Bearer nope"})
                assert wrong.status_code == 403
                assert wrong.json()["detail"] == "it does not match the pod secret"
        assert not coordinator.shutting_down
        async with client_for(app, client=("10.1.2.3", 4000)) as remote:
            ok = await remote.get("/shutdown?wait=0", headers=pod_credential())
            assert ok.status_code == 202


async def test_loopback_trust_is_an_opt_in_that_still_refuses_proxied_requests(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """GRACESHUT_TRUST_LOOPBACK=1: unproxied loopback passes; remote or proxied ones do not."""
    monkeypatch.setenv("GRACESHUT_TRUST_LOOPBACK", "1")
    coordinator = fast()
    app = make_app(coordinator)
    async with LifespanManager(app):
        async with client_for(app, client=("10.1.2.3", 4000)) as remote:
            assert (await remote.get("/shutdown")).status_code == 401
        async with client_for(app) as local:
            proxied = await local.get("/shutdown", headers={"X-Forwarded-For": "127.0.0.1"})
            assert proxied.status_code == 401
        assert not coordinator.shutting_down
        async with client_for(app, client=("::1", 4000)) as local6:
            assert (await local6.get("/shutdown?wait=0")).status_code == 202


def test_a_bad_loopback_opt_in_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """GRACESHUT_TRUST_LOOPBACK=maybe is refused at install time, naming the variable."""
    monkeypatch.setenv("GRACESHUT_TRUST_LOOPBACK", "maybe")
    with pytest.raises(graceshut.ConfigError, match="GRACESHUT_TRUST_LOOPBACK"):
        make_app(fast())


async def test_refusals_name_where_the_token_comes_from(monkeypatch: pytest.MonkeyPatch) -> None:
    """A wrong token is said not to match token= or GRACESHUT_TOKEN, whichever was used."""
    wrong = {"Authorization": "Bearer wrong"}
    by_argument = make_app(fast(), token="from-code")
    async with LifespanManager(by_argument), client_for(by_argument) as client:
        answer = (await client.get("/shutdown", headers=wrong)).json()
        assert answer["detail"] == "it does not match token="
        assert "token=" in (await client.get("/shutdown")).json()["detail"]
    monkeypatch.setenv("GRACESHUT_TOKEN", "from-env")
    by_environment = make_app(fast())
    async with LifespanManager(by_environment), client_for(by_environment) as client:
        answer = (await client.get("/shutdown", headers=wrong)).json()
        assert answer["detail"] == "it does not match GRACESHUT_TOKEN"
        assert "from-env" not in str(answer)


HOSTILE = [
    ({}, 401),
    ({"Authorization": ""}, 401),
    ({"Authorization": "Bearer"}, 401),
    ({"Authorization": "Bearer "}, 401),
    ({"Authorization": "Basic czNjcjN0"}, 401),
    ({"Authorization": "Token s3cr3t-token"}, 401),
    ({"Authorization": "Bearer s3cr3t-toke"}, 403),
    ({"Authorization": "Bearer s3cr3t-token-and-more"}, 403),
    ({"Authorization": "Bearer S3CR3T-TOKEN"}, 403),
    ({"Authorization": "Bearer " + "A" * 65536}, 403),
    ({"Authorization": "Bearer s3cr3t\u00e9token".encode()}, 403),
    ({"Authorization": b"Bearer \xffs3cr3t-token"}, 403),
    ({"Authorization": "Bearer \x00s3cr3t-token"}, 403),
]


@pytest.mark.parametrize(("headers", "status"), HOSTILE)
async def test_shutdown_route_refuses_hostile_credentials(
    headers: dict[str, str | bytes], status: int
) -> None:
    """Missing, malformed, truncated, padded or huge tokens are refused and start nothing."""
    coordinator = fast()
    app = make_app(coordinator, token="s3cr3t-token")
    async with LifespanManager(app), client_for(app) as client:
        response = await client.get("/shutdown", headers=headers)
        assert response.status_code == status
        assert response.json()["error"]
        assert "s3cr3t" not in response.text
        if status == 401:
            assert response.headers["www-authenticate"].startswith("Bearer")
        assert not coordinator.shutting_down
        assert (await client.get("/readyz")).status_code == 200


async def test_shutdown_route_refuses_duplicate_authorization_headers() -> None:
    """Two Authorization headers are ambiguous: refused even if one is right."""
    coordinator = fast()
    app = make_app(coordinator, token="s3cr3t-token")
    async with LifespanManager(app), client_for(app) as client:
        response = await client.get(
            "/shutdown",
            headers=[("Authorization", "Bearer s3cr3t-token"), ("Authorization", "Bearer x")],
        )
        assert response.status_code == 401
        assert not coordinator.shutting_down


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"])
async def test_shutdown_route_refuses_other_methods(method: str) -> None:
    """Only GET and POST trigger; anything else is 405 with Allow and starts nothing."""
    coordinator = fast()
    app = make_app(coordinator, token="s3cr3t-token")
    async with LifespanManager(app), client_for(app) as client:
        response = await client.request(
            method, "/shutdown", headers={"Authorization": "Bearer s3cr3t-token"}
        )
        assert response.status_code == 405
        assert response.headers["allow"] == "GET, POST"
        assert not coordinator.shutting_down


@pytest.mark.parametrize("query", ["wait=maybe", "wait=0&wait=1", "wait=%ff"])
async def test_shutdown_route_rejects_a_bad_query(query: str) -> None:
    """An unparseable wait parameter is a 400 that starts nothing."""
    coordinator = fast()
    app = make_app(coordinator, token="s3cr3t-token")
    async with LifespanManager(app), client_for(app) as client:
        response = await client.get(
            f"/shutdown?{query}", headers={"Authorization": "Bearer s3cr3t-token"}
        )
        assert response.status_code == 400
        assert not coordinator.shutting_down


async def test_shutdown_route_accepts_the_right_token_from_anywhere() -> None:
    """With a token, a remote client that presents it (any case of 'bearer') is served."""
    coordinator = fast(propagation_delay=0.0)
    app = make_app(coordinator, token="s3cr3t-token")
    async with LifespanManager(app), client_for(app, client=("10.9.8.7", 1)) as client:
        response = await client.get("/shutdown", headers={"Authorization": "bearer s3cr3t-token"})
        assert response.status_code == 200
        assert response.json()["ok"] is True


async def test_token_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """GRACESHUT_TOKEN protects the route when no token argument is given."""
    monkeypatch.setenv("GRACESHUT_TOKEN", "from-env")
    coordinator = fast(propagation_delay=0.0)
    app = make_app(coordinator)
    async with LifespanManager(app), client_for(app) as client:
        assert (await client.get("/shutdown")).status_code == 401
        ok = await client.get("/shutdown?wait=0", headers={"Authorization": "Bearer from-env"})
        assert ok.status_code == 202


@pytest.mark.parametrize("bad", ["", "   ", "has space", "tab\there", "caf\u00e9"])
def test_bad_tokens_are_configuration_errors(bad: str) -> None:
    """An empty or non-ASCII token is refused at install time, naming the setting."""
    with pytest.raises(graceshut.ConfigError, match="token"):
        make_app(fast(), token=bad)


async def test_probe_and_shutdown_requests_are_not_counted_as_in_flight() -> None:
    """The route's own request must not hold the drain open (it would wait on itself)."""
    coordinator = fast(propagation_delay=0.0)
    app = make_app(coordinator)
    async with LifespanManager(app), client_for(app) as client:
        with anyio.fail_after(3):
            response = await client.get("/shutdown", headers=pod_credential())
    assert response.json()["in_flight_at_start"] == 0
    assert response.json()["in_flight_abandoned"] == 0


async def test_probes_answer_head_and_refuse_post() -> None:
    """Probes accept GET and HEAD; POST is 405."""
    coordinator = fast()
    app = make_app(coordinator)
    async with LifespanManager(app), client_for(app) as client:
        head = await client.head("/readyz")
        assert head.status_code == 200
        assert head.content == b""
        assert (await client.post("/livez")).status_code == 405


async def test_fastapi_app_gets_the_same_behaviour() -> None:
    """install() works on FastAPI: probes, drain 503 and the lifespan order."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI

    log: list[str] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        log.append("startup")
        yield
        log.append("shutdown")

    app = FastAPI(lifespan=lifespan)

    @app.get("/items")
    async def items() -> dict[str, int]:
        return {"count": 1}

    coordinator = fast(propagation_delay=0.0)

    @coordinator.on_shutdown(phase="flush")
    def flush() -> None:
        log.append("flush")

    graceshut.starlette.install(app, coordinator)
    async with LifespanManager(app), client_for(app) as client:
        assert (await client.get("/items")).json() == {"count": 1}
        assert (await client.get("/readyz")).status_code == 200
        report = (await client.get("/shutdown", headers=pod_credential())).json()
        assert report["ok"] is True
        assert (await client.get("/readyz")).status_code == 503
        assert (await client.get("/items")).status_code == 503
    assert log == ["startup", "flush", "shutdown"]


def test_install_after_the_app_started_is_an_error() -> None:
    """Starlette cannot add middleware once started: install() must come first."""
    from starlette.testclient import TestClient

    app = Starlette()
    with TestClient(app):
        pass
    with pytest.raises(RuntimeError):
        graceshut.starlette.install(app, fast())


def test_testclient_without_main_thread_degrades_to_no_signals(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Under TestClient (another thread) signals are skipped with a log line; the rest works."""
    import logging

    from starlette.testclient import TestClient

    coordinator = fast(propagation_delay=0.0)
    app = make_app(coordinator)
    caplog.set_level(logging.INFO, logger="graceshut")
    with TestClient(app) as client:
        assert client.get("/readyz").status_code == 200
    assert "signal handlers not installed" in caplog.text
    assert coordinator.report is not None
    assert coordinator.report.ok


def test_install_returns_what_it_installed() -> None:
    """install() returns the coordinator and each route it added, by path."""
    coordinator = fast()
    app = Starlette()
    installed = graceshut.starlette.install(
        app, coordinator, readiness_path="/ready", liveness_path=None
    )
    assert installed.coordinator is coordinator
    assert set(installed.routes) == {"/shutdown", "/ready"}
    assert installed.routes["/ready"] is installed.readiness
    assert installed.liveness is None
    assert installed.shutdown is not None
    assert installed.signals


def test_a_second_install_on_one_app_is_refused() -> None:
    """Installing twice would count every request twice: the second call is an error."""
    app = Starlette()
    graceshut.starlette.install(app, fast())
    with pytest.raises(RuntimeError, match="already installed"):
        graceshut.starlette.install(app, fast())


def test_an_app_route_on_a_graceshut_path_is_warned_about() -> None:
    """An app that has its own /readyz is told that graceshut's shadows it."""

    async def own(request: Request) -> PlainTextResponse:
        return PlainTextResponse("mine")

    app = Starlette(routes=[Route("/readyz", own), Route("/other", own)])
    with pytest.warns(UserWarning, match="/readyz") as caught:
        graceshut.starlette.install(app, fast())
    assert "/other" not in str(caught[0].message)
    assert caught[0].filename == __file__  # points at the caller's install() line
    quiet = Starlette(routes=[Route("/readyz", own)])
    graceshut.starlette.install(quiet, fast(), readiness_path="/graceshut/readyz")
