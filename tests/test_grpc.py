"""graceshut.grpc in-process: a real `grpc.aio` server and client on one event loop.

grpcio's asyncio server runs on asyncio only: these tests do not run on trio.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from prometheus_client import CollectorRegistry

import graceshut
import graceshut.grpc
from graceshut.cli import main
from graceshut.simulate._actions import Grpc
from graceshut.simulate._grpc import check
from graceshut.simulate._manifest import ManifestError, read_manifest

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture
def anyio_backend() -> str:
    """grpc.aio needs asyncio."""
    return "asyncio"


def echo_handlers() -> grpc.GenericRpcHandler:
    async def unary(request: bytes, context: Any) -> bytes:
        return request

    async def refuse(request: bytes, context: Any) -> bytes:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "no")
        return b""

    async def stream(request: bytes, context: Any) -> AsyncIterator[bytes]:
        for n in range(3):
            yield b"%d" % n

    return grpc.method_handlers_generic_handler(
        "t.Echo",
        {
            "Unary": grpc.unary_unary_rpc_method_handler(unary),
            "Refuse": grpc.unary_unary_rpc_method_handler(refuse),
            "Stream": grpc.unary_stream_rpc_method_handler(stream),
        },
    )


async def make_server(
    coordinator: graceshut.Coordinator,
) -> tuple[Any, health_aio.HealthServicer, int]:
    server = grpc.aio.server(interceptors=[graceshut.grpc.interceptor(coordinator)])
    server.add_generic_rpc_handlers((echo_handlers(),))
    servicer = health_aio.HealthServicer()
    for name in ("t.Echo", "other"):
        await servicer.set(name, SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    return server, servicer, port


async def serving(installation: graceshut.grpc.GrpcInstallation, port: int) -> asyncio.Task[Any]:
    task = asyncio.ensure_future(installation.serve())
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        await channel.channel_ready()
    return task


def test_install_needs_the_interceptor() -> None:
    """A server made without graceshut's interceptor is refused, with the fix in the message."""
    coordinator = graceshut.Coordinator(grace_period=5)
    with pytest.raises(RuntimeError, match=r"interceptors=\[graceshut.grpc.interceptor"):
        graceshut.grpc.install(object(), coordinator, health=health_aio.HealthServicer())


def test_install_refuses_the_sync_health_servicer() -> None:
    """The thread-based servicer is refused by name: install wires the asyncio one."""
    coordinator = graceshut.Coordinator(grace_period=5)
    graceshut.grpc.interceptor(coordinator)
    with pytest.raises(TypeError, match=r"aio\.HealthServicer"):
        graceshut.grpc.install(object(), coordinator, health=health.HealthServicer())


def test_liveness_cannot_be_a_readiness_name() -> None:
    """The liveness name among the readiness names would fail the liveness probe: refused."""
    coordinator = graceshut.Coordinator(grace_period=5)
    graceshut.grpc.interceptor(coordinator)
    with pytest.raises(ValueError, match="liveness='live'"):
        graceshut.grpc.install(
            object(),
            coordinator,
            health=health_aio.HealthServicer(),
            readiness=["t.Echo", "live"],
            liveness="live",
        )


@pytest.mark.anyio
async def test_every_name_but_liveness_goes_not_serving() -> None:
    """Readiness defaults to every known name but liveness, which serves on until the exit."""
    coordinator = graceshut.Coordinator(grace_period=5, propagation_delay=0.2)
    server, servicer, port = await make_server(coordinator)
    installation = graceshut.grpc.install(
        server, coordinator, health=servicer, liveness="live", signals=False
    )
    task = await serving(installation, port)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        live = await stub.Check(health_pb2.HealthCheckRequest(service="live"))
        assert live.status == SERVING  # set by serve(): the servicer did not know it
        assert await channel.unary_unary("/t.Echo/Unary")(b"hi") == b"hi"
        coordinator.trigger("test")
        await asyncio.sleep(0.1)  # in the propagation delay: still serving
        statuses = {
            name: (await stub.Check(health_pb2.HealthCheckRequest(service=name))).status
            for name in ("", "t.Echo", "other", "live")
        }
        assert await channel.unary_unary("/t.Echo/Unary")(b"again") == b"again"
    report = await task
    assert statuses == {
        "": NOT_SERVING,
        "t.Echo": NOT_SERVING,
        "other": NOT_SERVING,
        "live": SERVING,
    }
    assert installation.readiness_names() == ["", "t.Echo", "other"]
    assert report.ok
    assert report.finished["/t.Echo/Unary"] == 1  # the one after the trigger
    assert report.finished["/grpc.health.v1.Health/Check"] == 4


@pytest.mark.anyio
async def test_named_readiness_leaves_the_other_names_alone() -> None:
    """Only the readiness names given go NOT_SERVING."""
    coordinator = graceshut.Coordinator(grace_period=5, propagation_delay=0)
    server, servicer, port = await make_server(coordinator)
    installation = graceshut.grpc.install(
        server, coordinator, health=servicer, readiness=["t.Echo"], signals=False
    )
    task = await serving(installation, port)
    report = await coordinator.shutdown("test")
    await task
    assert report.ok
    assert servicer._server_status["t.Echo"] == NOT_SERVING
    assert servicer._server_status["other"] == SERVING


@pytest.mark.anyio
async def test_metrics_count_calls_by_method_and_outcome() -> None:
    """The admin registry gets the gRPC calls: ok, error (aborted by the handler), streams."""
    coordinator = graceshut.Coordinator(grace_period=5, propagation_delay=0)
    server, servicer, port = await make_server(coordinator)
    registry = CollectorRegistry()
    installation = graceshut.grpc.install(
        server,
        coordinator,
        health=servicer,
        signals=False,
        admin_address="127.0.0.1:0",
        admin_registry=registry,
    )
    task = await serving(installation, port)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        for _ in range(2):
            await channel.unary_unary("/t.Echo/Unary")(b"x")
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await channel.unary_unary("/t.Echo/Refuse")(b"x")
        streamed = [m async for m in channel.unary_stream("/t.Echo/Stream")(b"")]
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert streamed == [b"0", b"1", b"2"]
    in_flight = registry.get_sample_value("graceshut_grpc_calls_in_flight")

    def calls(method: str, outcome: str) -> float | None:
        labels = {"method": method, "outcome": outcome}
        return registry.get_sample_value("graceshut_grpc_calls_total", labels)

    assert calls("/t.Echo/Unary", "ok") == 2
    assert calls("/t.Echo/Refuse", "error") == 1
    assert calls("/t.Echo/Stream", "ok") == 1
    assert in_flight == 0
    await coordinator.shutdown("test")
    await task


def test_a_manifest_grpc_probe_is_read(tmp_path: Path) -> None:
    """simulate reads a ``grpc`` probe (port and service), as the kubelet runs it."""
    manifest = tmp_path / "pod.json"
    probe = {"grpc": {"port": 50051, "service": "liveness"}, "periodSeconds": 5}
    container = {"name": "app", "command": ["app"], "livenessProbe": probe}
    manifest.write_text(json.dumps({"kind": "Pod", "spec": {"containers": [container]}}))
    spec = read_manifest(manifest, None)
    assert spec.liveness is not None
    assert spec.liveness.action == Grpc(port=50051, service="liveness")
    assert spec.liveness.period == 5


def test_a_grpc_probe_port_must_be_a_number(tmp_path: Path) -> None:
    """Kubernetes takes no port name for a grpc probe: neither does simulate."""
    manifest = tmp_path / "pod.json"
    probe = {"grpc": {"port": "grpc"}}
    container = {"name": "app", "command": ["app"], "readinessProbe": probe}
    manifest.write_text(json.dumps({"kind": "Pod", "spec": {"containers": [container]}}))
    with pytest.raises(ManifestError, match=r"readinessProbe\.grpc\.port"):
        read_manifest(manifest, None)


@pytest.mark.parametrize("method", ["test.Echo/Unary", "/test.Echo", "/test.Echo/", "//Unary"])
def test_simulate_refuses_a_malformed_grpc_method(
    method: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--grpc`` takes ``/package.Service/Method``; anything else exits 2 naming it."""
    with pytest.raises(SystemExit) as exited:
        main(["simulate", "--grpc", method, "--", "app"])
    assert exited.value.code == 2
    assert "/package.Service/Method" in capsys.readouterr().err


@pytest.mark.anyio
async def test_the_grpc_probe_answers_as_the_kubelet_reads_it() -> None:
    """SERVING passes; NOT_SERVING and an unknown name fail with the kubelet's words."""
    coordinator = graceshut.Coordinator(grace_period=5, propagation_delay=0)
    server, servicer, port = await make_server(coordinator)
    await servicer.set("down", NOT_SERVING)
    await server.start()
    try:
        results = {
            name: await asyncio.to_thread(check, name, "127.0.0.1", port, 2.0)
            for name in ("t.Echo", "down", "unknown")
        }
    finally:
        await server.stop(0)
    assert results["t.Echo"].ok
    assert results["down"].error == "service unhealthy (responded with NOT_SERVING)"
    assert not results["unknown"].ok
    assert "NOT_FOUND" in str(results["unknown"].error)


def test_server_options_set_a_connection_age_within_the_delay() -> None:
    """The connection age fits in the propagation delay (grpcio adds up to 10%); none at 0."""
    five = graceshut.Coordinator(grace_period=30, propagation_delay=5)
    (name, age_ms), *rest = graceshut.grpc.server_options(five)
    assert (name, rest) == ("grpc.max_connection_age_ms", [])
    assert age_ms * 1.1 < 5000
    assert graceshut.grpc.server_options(five, max_age=2.5) == [
        ("grpc.max_connection_age_ms", 2500)
    ]
    none = graceshut.Coordinator(grace_period=30, propagation_delay=0)
    assert graceshut.grpc.server_options(none) == []
