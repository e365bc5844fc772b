"""``propagation_delay="auto"``: the delay ends on evidence that traffic stopped, never before.

Driven in-process through the real middleware (httpx's ASGI transport), on asyncio and
trio. The report's ``propagation`` field says how each delay ended.
"""

from __future__ import annotations

import socket

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
from graceshut import ConfigError, Coordinator
from graceshut._process._sockets import established_peers, peer

pytestmark = pytest.mark.anyio

QUIET = 0.3
FLOOR = 0.4
CAP = 2.0


def auto(**kwargs: object) -> Coordinator:
    settings: dict[str, object] = {
        "grace_period": 10.0,
        "safety_margin": 1.0,
        "propagation_delay": "auto",
        "propagation_floor": FLOOR,
        "propagation_cap": CAP,
        "quiet_window": QUIET,
    }
    settings.update(kwargs)
    return Coordinator(**settings, environ={})  # type: ignore[arg-type]


def app_for(coordinator: Coordinator) -> Starlette:
    async def home(request: Request) -> PlainTextResponse:
        return PlainTextResponse("hello")

    app = Starlette(routes=[Route("/", home)])
    graceshut.starlette.install(app, coordinator)
    return app


def client_for(app: Starlette) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=("10.1.2.3", 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


async def traffic(
    client: httpx.AsyncClient, *, seconds: float, every: float, until_refused: bool = False
) -> int:
    """Requests one after the other for *seconds*, *every* seconds apart; how many.

    With *until_refused*, stop at the first 503 (the drain began).
    """
    sent = 0
    with anyio.move_on_after(seconds):
        while True:
            status = (await client.get("/")).status_code
            if until_refused and status == 503:
                break
            assert status == 200
            sent += 1
            await anyio.sleep(every)
    return sent


def delay_of(report: graceshut.ShutdownReport) -> float:
    """Seconds from the trigger to the end of the delay: when the drain could begin."""
    return next(p.started + p.duration for p in report.phases if p.name == "propagation")


async def test_a_busy_pod_that_goes_quiet_leaves_after_the_floor_not_the_cap() -> None:
    """Busy before the trigger, silent after: the delay ends on evidence, not before the floor."""
    coordinator = auto()
    app = app_for(coordinator)
    async with LifespanManager(app), client_for(app) as client:
        sent = await traffic(client, seconds=1.3, every=0.005)
        report = await coordinator.shutdown("test")
    assert sent > 50
    assert report.propagation == "evidence", report.to_dict()
    assert delay_of(report) >= FLOOR


async def test_requests_that_keep_coming_hold_the_delay_to_the_cap() -> None:
    """New requests inside every quiet window after the trigger: the delay runs to the cap."""
    coordinator = auto()
    app = app_for(coordinator)
    async with LifespanManager(app), client_for(app) as client:
        await traffic(client, seconds=1.3, every=0.005)
        coordinator.trigger("test")
        await traffic(client, seconds=CAP + 2, every=QUIET / 6, until_refused=True)
        report = await coordinator.wait()
    assert report.propagation == "cap", report.to_dict()
    assert delay_of(report) >= CAP


async def test_a_trickle_before_the_trigger_is_no_evidence() -> None:
    """Too few requests before the trigger: silence after it proves nothing, the cap holds."""
    coordinator = auto()
    app = app_for(coordinator)
    async with LifespanManager(app), client_for(app) as client:
        sent = await traffic(client, seconds=1.3, every=0.25)
        report = await coordinator.shutdown("test")
    assert sent < 10
    assert report.propagation == "cap", report.to_dict()
    assert delay_of(report) >= CAP


async def test_an_idle_pod_waits_the_whole_cap() -> None:
    """No traffic at all: the delay runs to the cap."""
    coordinator = auto()
    app = app_for(coordinator)
    async with LifespanManager(app):
        await anyio.sleep(1.1)
        report = await coordinator.shutdown("test")
    assert report.propagation == "cap"
    assert delay_of(report) >= CAP


async def test_without_a_source_of_evidence_auto_is_the_cap() -> None:
    """A coordinator that serves no HTTP (a worker pod) has no evidence: the cap."""
    report = await auto().shutdown("test")
    assert report.propagation == "cap"


async def test_a_fixed_delay_says_so_and_a_short_budget_says_so() -> None:
    """A fixed delay reports ``fixed``; one cut to leave the flush its time reports ``budget``."""
    fixed = Coordinator(grace_period=10, safety_margin=1, propagation_delay=0.2, environ={})
    assert (await fixed.shutdown("test")).propagation == "fixed"

    short = Coordinator(grace_period=3, safety_margin=1, propagation_delay=5, environ={})

    @short.on_shutdown("flush", timeout=1.5)
    async def flush() -> None:
        pass

    report = await short.shutdown("test")
    assert report.propagation == "budget"
    assert report.to_dict()["propagation"] == "budget"
    assert [h.outcome.value for h in report.handlers] == ["ok"]


async def test_readiness_can_serve_through_the_delay_and_fail_at_the_drain() -> None:
    """``readiness_on_terminate="serve"``: 200 through the delay, 503 once the drain begins."""
    coordinator = Coordinator(
        grace_period=10,
        safety_margin=1,
        propagation_delay=0.5,
        readiness_on_terminate="serve",
        environ={},
    )
    app = app_for(coordinator)
    async with LifespanManager(app), client_for(app) as client:
        coordinator.trigger("test")
        assert coordinator.shutting_down
        assert (await client.get("/readyz")).status_code == 200
        await coordinator.wait_for_drain()
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["phase"] == "drain"
        await coordinator.wait()


def test_auto_comes_from_the_argument_or_the_variable() -> None:
    """``"auto"`` by argument or ``GRACESHUT_PROPAGATION_DELAY``; the cap is the delay's bound."""
    by_env = Coordinator(
        environ={"GRACESHUT_PROPAGATION_DELAY": "AUTO", "GRACESHUT_PROPAGATION_CAP": "20"}
    ).settings
    assert by_env.propagation_auto
    assert by_env.propagation_delay == 20
    assert by_env.propagation_floor == 2
    assert by_env.quiet_window == 1
    by_arg = Coordinator(propagation_delay="auto", environ={}).settings
    assert by_arg.propagation_auto
    assert by_arg.propagation_delay == 15
    assert not Coordinator(environ={}).settings.propagation_auto


@pytest.mark.parametrize(
    ("kwargs", "environ", "named"),
    [
        ({"propagation_floor": 10, "propagation_cap": 5}, {}, "propagation_floor=10"),
        (
            {},
            {"GRACESHUT_PROPAGATION_FLOOR": "9", "GRACESHUT_PROPAGATION_CAP": "3"},
            "GRACESHUT_PROPAGATION_FLOOR",
        ),
        ({"quiet_window": 0}, {}, "quiet_window=0"),
        ({}, {"GRACESHUT_QUIET_WINDOW": "soon"}, "GRACESHUT_QUIET_WINDOW"),
    ],
)
def test_bad_auto_settings_are_refused_naming_them(
    kwargs: dict[str, float], environ: dict[str, str], named: str
) -> None:
    """A floor over the cap, or a quiet window that is not a positive number, names itself."""
    with pytest.raises(ConfigError, match=named):
        Coordinator(propagation_delay="auto", environ=environ, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "environ", "named"),
    [
        ({"readiness_on_terminate": "later"}, {}, "readiness_on_terminate='later'"),
        ({}, {"GRACESHUT_READINESS_ON_TERMINATE": "x"}, "GRACESHUT_READINESS_ON_TERMINATE"),
        ({"propagation_delay": "soon"}, {}, "propagation_delay='soon'"),
    ],
)
def test_bad_choices_are_refused_naming_them(
    kwargs: dict[str, str], environ: dict[str, str], named: str
) -> None:
    """Readiness on terminate is ``fail`` or ``serve``; a delay is seconds or ``auto``."""
    with pytest.raises(ConfigError, match=named):
        Coordinator(environ=environ, **kwargs)  # type: ignore[arg-type]


def test_the_kernels_table_shows_an_open_connection_from_both_ends() -> None:
    """`established_peers` finds a real TCP connection, as a server would name its client."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as client:
            accepted, address = server.accept()
            with accepted:
                peers = established_peers()
                assert peer(address[0], address[1], port) in peers
                assert peer("::ffff:127.0.0.1", address[1], port) in peers
                client_port = client.getsockname()[1]
                assert peer("127.0.0.1", port, client_port) in peers
    assert peer("not an address", 1, 2) is None
    assert peer("127.0.0.1", "80", 2) is None
