"""Arguments that cannot work are refused where they are given, naming the argument."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

import graceshut
import graceshut.starlette
import graceshut.wsgi
from graceshut import ConfigError, Coordinator
from graceshut.asgi import GracefulShutdownMiddleware

from .asgi_servers import ROOT


def fast() -> Coordinator:
    return Coordinator(grace_period=10.0, safety_margin=1.0, propagation_delay=0.3, environ={})


async def hello(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hello"})


def wsgi_hello(environ: Any, start_response: Any) -> list[bytes]:
    start_response("200 OK", [])
    return [b"hello"]


BAD_RETRY_AFTER = [
    ("abc", "retry_after='abc' must be a whole number of seconds"),
    (-5, "retry_after=-5 must be 0 or more seconds"),
    (True, "retry_after=True must be a whole number of seconds"),
    (2.5, "retry_after=2.5 must be a whole number of seconds"),
    ("5", "retry_after='5' must be a whole number of seconds"),
]
BAD_PATHS = [
    ("shutdown_path", "shutdown", "shutdown_path='shutdown' must start with '/'"),
    ("readiness_path", "readyz", "readiness_path='readyz' must start with '/'"),
    ("liveness_path", "", "liveness_path='' must start with '/'"),
    ("shutdown_path", "/shutdown?wait=0", "must be a plain path"),
    ("readiness_path", "/ready z", "must be a plain path"),
    ("liveness_path", 5, "liveness_path=5 must be a path"),
    ("liveness_path", "/shutdown", "liveness_path='/shutdown' is also shutdown_path"),
]


@pytest.mark.parametrize(("value", "message"), BAD_RETRY_AFTER)
def test_starlette_install_refuses_a_bad_retry_after(value: object, message: str) -> None:
    """install(): a Retry-After no client can read is a ConfigError, and nothing is added."""
    app, coordinator = Starlette(), fast()
    with pytest.raises(ConfigError, match=re.escape(message)):
        graceshut.starlette.install(app, coordinator, retry_after=value)  # type: ignore[arg-type]
    assert app.user_middleware == [], "nothing was added to the app"
    assert not coordinator.shutting_down
    graceshut.starlette.install(app, coordinator, retry_after=7)  # and it can be installed after


@pytest.mark.parametrize(("value", "message"), BAD_RETRY_AFTER)
def test_the_asgi_middleware_refuses_a_bad_retry_after(value: object, message: str) -> None:
    """The ASGI middleware, used alone, applies the same rule at construction."""
    with pytest.raises(ConfigError, match=re.escape(message)):
        GracefulShutdownMiddleware(hello, fast(), retry_after=value)  # type: ignore[arg-type]


@pytest.mark.parametrize(("value", "message"), BAD_RETRY_AFTER)
def test_the_wsgi_middleware_refuses_a_bad_retry_after(value: object, message: str) -> None:
    """The WSGI middleware applies the same rule, before its sequence thread starts."""
    coordinator = fast()
    with pytest.raises(ConfigError, match=re.escape(message)):
        graceshut.wsgi.GracefulShutdownMiddleware(
            wsgi_hello,
            coordinator,
            retry_after=value,  # type: ignore[arg-type]
            signals=False,
        )
    assert not any(r.coordinator is coordinator for r in graceshut._http._wsgi_runtime.runtimes())


@pytest.mark.parametrize(("argument", "value", "message"), BAD_PATHS)
def test_starlette_install_refuses_a_path_that_never_matches(
    argument: str, value: Any, message: str
) -> None:
    """install(): a route path without '/', with a query, or taken twice is a ConfigError."""
    app = Starlette()
    with pytest.raises(ConfigError, match=re.escape(message)):
        graceshut.starlette.install(app, fast(), **{argument: value})
    assert app.user_middleware == []


@pytest.mark.parametrize(("argument", "value", "message"), BAD_PATHS)
def test_the_wsgi_middleware_refuses_a_path_that_never_matches(
    argument: str, value: Any, message: str
) -> None:
    """The WSGI middleware (and so graceshut.flask.install) checks its paths alike."""
    with pytest.raises(ConfigError, match=re.escape(message)):
        graceshut.wsgi.GracefulShutdownMiddleware(
            wsgi_hello, fast(), signals=False, **{argument: value}
        )


def test_the_asgi_middleware_refuses_a_route_without_a_leading_slash() -> None:
    """GracefulShutdownMiddleware(routes=...) checks each path it is given."""
    with pytest.raises(ConfigError, match="routes: path='readyz' must start with '/'"):
        GracefulShutdownMiddleware(hello, fast(), routes={"readyz": hello})


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"signals": "no"}, "signals='no' must be True or False"),
        ({"token": ""}, "token is set but empty"),
        ({"token": 12345}, "token=12345 must be a string"),
        ({"admin_address": "[::1"}, "admin_address='[::1' must be PORT"),
        ({"admin_address": 9901}, "admin_address=9901 must be a string"),
        ({"admin_address": "12²"}, "admin_address='12²' must be PORT"),
        ({"trust_loopback": "yes"}, "trust_loopback='yes' must be True or False"),
        (
            {"trust_loopback": "yes", "shutdown_path": None},
            "trust_loopback='yes' must be True or False",
        ),
        ({"token": " ", "shutdown_path": None}, "token is set but empty"),
    ],
)
def test_starlette_install_refuses_other_bad_arguments(
    arguments: dict[str, object], message: str
) -> None:
    """The other arguments of install() are checked up front too, each named."""
    app = Starlette()
    with pytest.raises(ConfigError, match=re.escape(message)):
        graceshut.starlette.install(app, fast(), **arguments)  # type: ignore[arg-type]
    assert app.user_middleware == []


def test_a_wsgi_backend_that_does_not_exist_is_refused_at_construction() -> None:
    """backend='uvloop' fails at construction, not later on the sequence thread."""
    with pytest.raises(ConfigError, match="backend='uvloop' must be 'asyncio' or 'trio'"):
        graceshut.wsgi.GracefulShutdownMiddleware(
            wsgi_hello, fast(), signals=False, backend="uvloop"
        )


@pytest.mark.anyio
@pytest.mark.parametrize(("sent", "expected"), [(None, "1"), (0, "0"), (120, "120")])
async def test_a_valid_retry_after_is_what_refused_requests_carry(
    sent: int | None, expected: str
) -> None:
    """A valid retry_after (or the default: the delay rounded up) is sent as given."""
    coordinator = fast()
    middleware = GracefulShutdownMiddleware(hello, coordinator, retry_after=sent)
    transport = httpx.ASGITransport(app=middleware)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        state = coordinator.in_flight  # as in the drain: every request is refused
        state.shutting_down = state.draining = True
        state.refresh()
        refused = await client.get("/")
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == expected


@pytest.mark.parametrize("relative", ["graceshut-workers", "./workers", "~/workers"])
def test_a_relative_worker_dir_is_refused_naming_the_variable(relative: str) -> None:
    """GRACESHUT_WORKER_DIR must be absolute: a ConfigError when the Coordinator is built."""
    with pytest.raises(ConfigError, match=r"GRACESHUT_WORKER_DIR=.* must be an absolute path"):
        Coordinator(environ={"GRACESHUT_WORKER_DIR": relative})


@pytest.mark.parametrize("value", ["/run/graceshut", "off", "OFF", "", "0", "false"])
def test_an_absolute_or_off_worker_dir_is_accepted(value: str) -> None:
    """An absolute directory, or one of the ways to say off, builds a Coordinator."""
    Coordinator(environ={"GRACESHUT_WORKER_DIR": value})


def test_a_relative_worker_dir_from_the_process_environment_fails_at_construction() -> None:
    """Read from os.environ (no environ= given), the variable is checked the same way."""
    code = (
        "import graceshut\n"
        "try:\n"
        "    graceshut.Coordinator()\n"
        "except graceshut.ConfigError as exc:\n"
        "    print(exc)\n"
    )
    env = {**os.environ, "GRACESHUT_WORKER_DIR": "relative/dir"}
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "GRACESHUT_WORKER_DIR='relative/dir' must be an absolute path" in result.stdout


DJANGO = """
import django
from django.conf import settings
import graceshut
settings.configure(INSTALLED_APPS=["graceshut.django"], GRACESHUT={graceshut!r})
try:
    django.setup()  # graceshut's AppConfig.ready() reads the settings
except graceshut.ConfigError as exc:
    print("ConfigError:", exc)
"""


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"SHUTDOWN_PATH": "shutdown"},
            "GRACESHUT['SHUTDOWN_PATH']='shutdown' must start with '/'",
        ),
        ({"RETRY_AFTER": "abc"}, "GRACESHUT['RETRY_AFTER']='abc' must be a whole number"),
        (
            {"LIVENESS_PATH": "/readyz"},
            "GRACESHUT['LIVENESS_PATH']='/readyz' is also GRACESHUT['READINESS_PATH']",
        ),
    ],
)
def test_django_settings_are_checked_naming_the_key(
    settings: dict[str, object], message: str
) -> None:
    """settings.GRACESHUT's paths and RETRY_AFTER are refused at django.setup(), by key."""
    result = subprocess.run(
        [sys.executable, "-c", DJANGO.format(graceshut=settings)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert f"ConfigError: {message}" in result.stdout, result.stderr


def test_protected_by_token_is_gone() -> None:
    """ShutdownEndpoint has no unused protected_by_token property."""
    assert not hasattr(graceshut.asgi.ShutdownEndpoint, "protected_by_token")
