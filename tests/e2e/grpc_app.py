"""A gRPC service for the e2e tests: generic handlers on bytes, and the standard health service.

``python -m tests.e2e.grpc_app PORT graceshut|baseline``

- ``/test.Echo/Unary`` answers after ``GRPC_APP_DELAY`` seconds (default 0.005);
  ``/test.Echo/Slow`` after ``GRPC_APP_SLOW`` seconds (default 2);
- ``/test.Echo/Ticks`` streams a tick every 50 ms until the drain begins, then ends
  (a stream that learns of the drain from ``coordinator.draining``);
  ``/test.Echo/Forever`` streams ticks until it is ended;
- the health servicer knows ``""``, ``test.Echo`` (readiness) and ``liveness``;
- ``GRPC_APP_FAIL=1`` adds a flush handler that fails.

``sync``: the sync ``grpc.server``, wired as docs/grpc.md shows.
``graceshut``: the server wired with graceshut.grpc (admin listener on
``GRACESHUT_ADMIN_ADDRESS``). ``baseline``: the common practice, ``await
server.stop(grace=5)`` on SIGTERM, with the health service left as it is.
With graceshut it prints the shutdown report as JSON (``REPORT {...}``) at the end.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

import graceshut
import graceshut.grpc

#: Where the port listens: 0.0.0.0 under ``graceshut simulate`` (probes come to the pod IP).
HOST = os.environ.get("GRPC_APP_HOST", "127.0.0.1")


def handlers(coordinator: graceshut.Coordinator | None) -> grpc.GenericRpcHandler:
    delay = float(os.environ.get("GRPC_APP_DELAY", "0.005"))
    slow = float(os.environ.get("GRPC_APP_SLOW", "2"))

    async def unary(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        await asyncio.sleep(delay)
        return request

    async def slow_call(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        await asyncio.sleep(slow)
        # Wall clock, for the tests: the drain cannot end (nor the port close) before it.
        print(f"SLOW_DONE {time.time()}", flush=True)
        return b"slow " + request

    async def ticks(request: bytes, context: grpc.aio.ServicerContext):
        n = 0
        while coordinator is None or not coordinator.draining:
            yield b"tick %d" % n
            n += 1
            await asyncio.sleep(0.05)

    async def forever(request: bytes, context: grpc.aio.ServicerContext):
        n = 0
        while True:  # deaf to the drain: ended at the deadline
            yield b"tick %d" % n
            n += 1
            await asyncio.sleep(0.05)

    return grpc.method_handlers_generic_handler(
        "test.Echo",
        {
            "Unary": grpc.unary_unary_rpc_method_handler(unary),
            "Slow": grpc.unary_unary_rpc_method_handler(slow_call),
            "Ticks": grpc.unary_stream_rpc_method_handler(ticks),
            "Forever": grpc.unary_stream_rpc_method_handler(forever),
        },
    )


async def health_service(server: grpc.aio.Server) -> health_aio.HealthServicer:
    health = health_aio.HealthServicer()
    for name in ("test.Echo", "liveness"):
        await health.set(name, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    return health


async def with_graceshut(port: str) -> int:
    coordinator = graceshut.Coordinator()
    server = grpc.aio.server(
        interceptors=[graceshut.grpc.interceptor(coordinator)],
        # GRPC_APP_MAX_AGE=0: without the connection age (to measure what it changes).
        options=graceshut.grpc.server_options(
            coordinator, max_age=float(os.environ["GRPC_APP_MAX_AGE"])
        )
        if "GRPC_APP_MAX_AGE" in os.environ
        else graceshut.grpc.server_options(coordinator),
    )
    server.add_generic_rpc_handlers((handlers(coordinator),))
    health = await health_service(server)
    server.add_insecure_port(f"{HOST}:{port}")
    installation = graceshut.grpc.install(server, coordinator, health=health, liveness="liveness")
    if os.environ.get("GRPC_APP_FAIL"):

        @coordinator.on_shutdown("flush", timeout=1)
        def flush_fails() -> None:
            raise RuntimeError("the cache could not be written")

    report = await installation.serve()
    print("REPORT " + json.dumps(report.to_dict()), flush=True)
    return report.exit_code


async def baseline(port: str) -> int:
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handlers(None),))
    await health_service(server)
    server.add_insecure_port(f"{HOST}:{port}")
    await server.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop(grace=5)
    return 0


def sync_server(port: str) -> int:
    """The sync ``grpc.server``, wired as docs/grpc.md shows."""
    from concurrent import futures

    from grpc_health.v1 import health

    slow = float(os.environ.get("GRPC_APP_SLOW", "2"))

    def unary(request: bytes, context: grpc.ServicerContext) -> bytes:
        return request

    def slow_call(request: bytes, context: grpc.ServicerContext) -> bytes:
        time.sleep(slow)
        return b"slow " + request

    coordinator = graceshut.Coordinator()
    server = grpc.server(futures.ThreadPoolExecutor(8))
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "test.Echo",
                {
                    "Unary": grpc.unary_unary_rpc_method_handler(unary),
                    "Slow": grpc.unary_unary_rpc_method_handler(slow_call),
                },
            ),
        )
    )
    servicer = health.HealthServicer()
    for name in ("test.Echo", "liveness"):
        servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    server.add_insecure_port(f"{HOST}:{port}")

    @coordinator.on_shutdown("announce", timeout=1)
    def not_ready() -> None:
        servicer.set("test.Echo", health_pb2.HealthCheckResponse.NOT_SERVING)

    @coordinator.on_shutdown("drain", timeout=15)
    def stop(ctx: graceshut.ShutdownContext) -> None:
        server.stop(grace=max(0.0, ctx.remaining() - 2)).wait()

    # A listener: after the sequence, SIGTERM's default action ends the process at once.
    coordinator.on_report(lambda report: print("REPORT " + json.dumps(report.to_dict())))

    async def serve() -> None:
        async with coordinator.lifespan():  # SIGTERM and SIGINT start the sequence
            server.start()
            await coordinator.wait()

    asyncio.run(serve())
    return 0


def main() -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")
    port, mode = sys.argv[1], sys.argv[2]
    if mode == "sync":
        return sync_server(port)
    return asyncio.run(with_graceshut(port) if mode == "graceshut" else baseline(port))


if __name__ == "__main__":
    sys.exit(main())
