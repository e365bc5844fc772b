"""The admin listener in one process: answers, pod-wide binding, a busy event loop."""

from __future__ import annotations

import concurrent.futures
import shutil
import socket
import stat
import sys
import tempfile
from pathlib import Path

import anyio
import httpx
import pytest
from asgi_lifespan import LifespanManager
from starlette.applications import Starlette

import graceshut
import graceshut.starlette
from graceshut._http._admin import AdminListener, parse_admin_address
from graceshut._http._shutdown_route import ShutdownEndpoint

from .asgi_servers import free_port, pod_credential
from .test_starlette import fast


def test_addresses_parse_or_fail_naming_their_source() -> None:
    """PORT, HOST:PORT, [v6]:PORT, unix:/PATH; anything else names the argument or variable."""
    assert parse_admin_address("9901") == ("0.0.0.0", 9901)
    assert parse_admin_address("127.0.0.1:9901") == ("127.0.0.1", 9901)
    assert parse_admin_address("[::1]:9901") == ("::1", 9901)
    assert parse_admin_address("unix:/run/app/admin.sock") == "/run/app/admin.sock"
    assert parse_admin_address(None, {}) is None
    assert parse_admin_address(None, {"GRACESHUT_ADMIN_ADDRESS": "9902"}) == ("0.0.0.0", 9902)
    for bad in ["http", "1.2.3.4:", ":x", "99999", "unix:relative.sock"]:
        with pytest.raises(graceshut.ConfigError, match="admin_address"):
            parse_admin_address(bad)
    with pytest.raises(graceshut.ConfigError, match="GRACESHUT_ADMIN_ADDRESS"):
        parse_admin_address(None, {"GRACESHUT_ADMIN_ADDRESS": "nope"})


def admin_app(port: int) -> tuple[Starlette, graceshut.Coordinator]:
    coordinator = fast(propagation_delay=0.2)
    app = Starlette()
    graceshut.starlette.install(app, coordinator, admin_address=f"127.0.0.1:{port}")
    return app, coordinator


@pytest.mark.anyio
async def test_probes_shutdown_and_metrics_on_the_admin_port() -> None:
    """Probes and metrics open; /shutdown needs the pod secret, then reports, on both loops."""
    port = free_port()
    app, coordinator = admin_app(port)
    url = f"http://127.0.0.1:{port}"
    async with LifespanManager(app), httpx.AsyncClient(base_url=url, timeout=10) as admin:
        assert (await admin.get("/readyz")).json() == {"status": "ready"}
        assert (await admin.head("/livez")).status_code == 200
        assert (await admin.post("/readyz")).status_code == 405
        assert (await admin.get("/elsewhere")).status_code == 404
        metrics = await admin.get("/metrics")
        assert metrics.status_code == 200
        assert metrics.headers["content-type"].startswith("text/plain")
        refused = await admin.get("/shutdown")
        assert refused.status_code == 401
        assert (await admin.delete("/shutdown")).status_code == 405
        assert not coordinator.shutting_down
        report = await admin.post("/shutdown", headers=pod_credential())
        assert report.status_code == 200
        assert report.json()["reason"] == "prestop"
        assert report.json()["ok"] is True
        assert (await admin.get("/readyz")).status_code == 503
        assert (await admin.get("/livez")).status_code == 200
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/livez", timeout=2)  # released at the end of the lifespan


@pytest.mark.anyio
async def test_probes_answer_while_the_event_loop_is_blocked() -> None:
    """The admin thread needs no event loop: a probe answers while the loop is stuck."""
    port = free_port()
    app, _ = admin_app(port)
    async with LifespanManager(app):
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            probe = pool.submit(httpx.get, f"http://127.0.0.1:{port}/livez", timeout=10)
            # This thread runs the event loop, and blocks it here until the answer comes:
            # a probe served by the loop could never answer (a timeout error instead).
            answered = probe.result(timeout=30)
        assert answered.status_code == 200


def test_one_listener_per_address_and_a_sibling_takes_over() -> None:
    """Two workers: the first binds, the second waits; when the first stops, it takes over."""
    port = free_port()
    coordinator = fast()
    endpoint = ShutdownEndpoint(coordinator)
    first = AdminListener(coordinator, endpoint, ("127.0.0.1", port))
    second = AdminListener(coordinator, endpoint, ("127.0.0.1", port))

    async def serve() -> None:
        first.start()
        second.start()
        try:
            assert first.serving
            assert not second.serving
            first.stop()
            with anyio.fail_after(5):
                while not second.serving:
                    await anyio.sleep(0.05)
            answer = await anyio.to_thread.run_sync(
                lambda: httpx.get(f"http://127.0.0.1:{port}/livez", timeout=5)
            )
            assert answer.status_code == 200
        finally:
            first.stop()
            second.stop()

    anyio.run(serve)


def test_a_unix_socket_is_private_and_a_stale_one_is_replaced(tmp_path: Path) -> None:
    """unix:/PATH: mode 0600; a socket file left by a killed process does not block it."""
    path = tmp_path / "admin.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # the file stays, as after a SIGKILL
    coordinator = fast()
    listener = AdminListener(coordinator, ShutdownEndpoint(coordinator), str(path))

    async def serve() -> None:
        listener.start()
        try:
            assert listener.serving
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
            transport = httpx.HTTPTransport(uds=str(path))
            with httpx.Client(transport=transport, base_url="http://admin") as client:
                answer = await anyio.to_thread.run_sync(lambda: client.get("/readyz"))
            assert answer.json() == {"status": "ready"}
        finally:
            listener.stop()
        assert not path.exists()

    anyio.run(serve)


@pytest.mark.anyio
async def test_graceshut_prestop_reaches_an_admin_unix_socket() -> None:
    """`graceshut prestop --unix-socket`: the exec hook against unix:/PATH, secret included."""
    directory = Path(tempfile.mkdtemp(prefix="gs-"))  # a socket path has room for ~107 bytes
    path = directory / "admin.sock"
    coordinator = fast(propagation_delay=0.2)
    app = Starlette()
    graceshut.starlette.install(app, coordinator, admin_address=f"unix:{path}")
    async with LifespanManager(app):
        hook = await anyio.run_process(
            [
                sys.executable,
                "-m",
                "graceshut.cli",
                "prestop",
                "--unix-socket",
                str(path),
                "http://localhost/shutdown?wait=0",
            ],
            check=False,
        )
        assert hook.returncode == 0, hook.stderr
        assert b'"status": "started"' in hook.stdout
        assert coordinator.shutting_down
    shutil.rmtree(directory, ignore_errors=True)
