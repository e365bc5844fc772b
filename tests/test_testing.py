"""graceshut.testing and its pytest plugin, under anyio's plugin and under pytest-asyncio."""

from __future__ import annotations

import signal
import textwrap

import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import graceshut
import graceshut.starlette
import graceshut.testing

pytest_plugins = ["pytester"]


def make_app() -> tuple[Starlette, graceshut.Coordinator, list[str]]:
    ran: list[str] = []
    coordinator = graceshut.Coordinator(propagation_delay=30, environ={})

    @coordinator.on_shutdown("flush")
    def flush() -> None:
        ran.append("flush")

    async def home(request: object) -> PlainTextResponse:
        return PlainTextResponse("hi")

    app = Starlette(routes=[Route("/", home)])
    graceshut.starlette.install(app, coordinator)
    return app, coordinator, ran


@pytest.mark.anyio
async def test_serve_runs_the_lifespan_and_the_sequence_without_the_real_delay() -> None:
    """serve() shortens the timings, serves requests and returns the report from shutdown()."""
    app, coordinator, ran = make_app()
    async with graceshut.testing.serve(app, coordinator) as harness:
        assert (await harness.client.get("/")).text == "hi"
        with anyio_fail_after(3):
            report = await harness.shutdown()
        assert (await harness.client.get("/readyz")).status_code == 503
    assert report.ok
    assert ran == ["flush"]
    assert coordinator.settings.propagation_delay == 30, "timings restored after the block"


@pytest.mark.anyio
async def test_leaving_serve_runs_the_sequence_like_a_server_stopping() -> None:
    """Without an explicit shutdown, the lifespan shutdown runs the sequence once."""
    app, coordinator, ran = make_app()
    async with graceshut.testing.serve(app, coordinator) as harness:
        assert harness.report is None
    assert harness.report is not None
    assert harness.report.reason == "lifespan"
    assert ran == ["flush"]


@pytest.mark.anyio
async def test_serve_installs_no_signal_handlers_unless_asked() -> None:
    """The test process keeps its own SIGINT handler; send_signal refuses without opt-in."""
    app, coordinator, _ = make_app()
    before = signal.getsignal(signal.SIGINT)
    async with graceshut.testing.serve(app, coordinator) as harness:
        assert signal.getsignal(signal.SIGINT) is before
        with pytest.raises(RuntimeError, match="real_signals=True"):
            harness.send_signal(signal.SIGTERM)
    assert signal.getsignal(signal.SIGINT) is before


@pytest.mark.anyio
async def test_real_signals_when_asked() -> None:
    """With real_signals=True a real SIGTERM to the test process runs the sequence."""
    app, coordinator, ran = make_app()
    before = signal.getsignal(signal.SIGTERM)
    async with graceshut.testing.serve(app, coordinator, real_signals=True) as harness:
        harness.send_signal(signal.SIGTERM)
        with anyio_fail_after(3):
            report = await coordinator.wait()
        assert report.reason == "SIGTERM"
    assert harness.handed_on == [signal.SIGTERM], "handed on to the server after the sequence"
    assert ran == ["flush"]
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.mark.anyio
async def test_lifespan_failure_is_reported() -> None:
    """An app whose startup fails raises LifespanError with the app's message."""
    import contextlib

    @contextlib.asynccontextmanager
    async def broken(app: Starlette):  # type: ignore[no-untyped-def]
        raise RuntimeError("database unreachable")
        yield

    app = Starlette(lifespan=broken)
    coordinator = graceshut.Coordinator(environ={})
    graceshut.starlette.install(app, coordinator)
    with pytest.raises(graceshut.testing.LifespanError, match="database unreachable"):
        async with graceshut.testing.serve(app, coordinator):
            pass


PLUGIN_TEST = """
import graceshut
import graceshut.starlette
from starlette.applications import Starlette


def build():
    coordinator = graceshut.Coordinator()
    ran = []
    coordinator.add_handler(lambda: ran.append("flush"), name="flush")
    app = Starlette()
    graceshut.starlette.install(app, coordinator)
    return app, coordinator, ran


{marker}
async def test_wiring(graceshut_serve, graceshut_fast_env):
    app, coordinator, ran = build()
    assert coordinator.settings.propagation_delay == 0
    async with graceshut_serve(app, coordinator) as harness:
        response = await harness.client.get("/readyz")
        assert response.status_code == 200
        report = await harness.shutdown()
    assert report.ok and ran == ["flush"]
"""


@pytest.mark.parametrize(
    ("plugin_args", "marker"),
    [
        (["-p", "asyncio", "-p", "no:anyio"], "@__import__('pytest').mark.asyncio"),
        (["-p", "anyio", "-p", "no:asyncio"], "@__import__('pytest').mark.anyio"),
    ],
    ids=["pytest-asyncio", "anyio"],
)
def test_fixtures_work_under_pytest_asyncio_and_anyio(
    pytester: pytest.Pytester, plugin_args: list[str], marker: str
) -> None:
    """A user's suite gets the fixtures from the entry point, under either async plugin."""
    pytester.makepyfile(test_user=textwrap.dedent(PLUGIN_TEST).format(marker=marker))
    result = pytester.runpytest_subprocess(*plugin_args, "-v")
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed", 0) >= 1, result.stdout.str()
    assert "failed" not in outcomes
    assert "errors" not in outcomes


def anyio_fail_after(seconds: float):  # type: ignore[no-untyped-def]
    import anyio

    return anyio.fail_after(seconds)


@pytest.mark.anyio
async def test_serving_the_same_app_twice_gives_a_fresh_run() -> None:
    """A module-level app and coordinator can be served by several tests in a row."""
    app, coordinator, ran = make_app()
    for _ in range(2):
        async with graceshut.testing.serve(app, coordinator) as harness:
            assert (await harness.client.get("/")).status_code == 200
            assert (await harness.client.get("/readyz")).status_code == 200
            report = await harness.shutdown()
        assert report.ok
    assert ran == ["flush", "flush"]


@pytest.mark.anyio
async def test_an_app_without_lifespan_support_is_served_and_shut_down() -> None:
    """A raw ASGI app that returns from the lifespan scope: no hang, the sequence still runs."""
    coordinator = graceshut.Coordinator(environ={})
    ran: list[str] = []
    coordinator.add_handler(lambda: ran.append("flush"), name="flush")

    async def raw_app(scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] == "lifespan":
            return
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    import anyio

    with anyio.fail_after(5):
        async with graceshut.testing.serve(raw_app, coordinator) as harness:
            assert (await harness.client.get("/")).status_code == 204
    assert ran == ["flush"]
