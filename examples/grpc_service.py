"""A gRPC service under graceshut: ``python -m examples.grpc_service``.

``helloworld.Greeter/SayHello`` answers ``Hello, <name>`` (bytes in, bytes out: generic
handlers, so that the example needs no generated code; a real service registers its
generated servicer the same way), ``helloworld.Greeter/Subscribe`` streams a greeting a
second until the drain begins, and the standard health service answers for
``helloworld.Greeter`` (readiness) and ``liveness``. It listens on ``PORT`` (50051) on
every address; ``GRACESHUT_ADMIN_ADDRESS`` puts the probes, ``/shutdown`` and
``/metrics`` on a port of their own (examples/k8s/deployment-grpc.yaml sets 9901).
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

import graceshut
import graceshut.grpc

coordinator = graceshut.Coordinator()  # GRACESHUT_* variables, else a 30 s grace period


async def say_hello(name: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return b"Hello, " + name


async def subscribe(name: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    # Ends itself when the drain begins: the client subscribes again, on another pod.
    while not coordinator.draining:
        yield b"Hello again, " + name
        await asyncio.sleep(1)


greeter = grpc.method_handlers_generic_handler(
    "helloworld.Greeter",
    {
        "SayHello": grpc.unary_unary_rpc_method_handler(say_hello),
        "Subscribe": grpc.unary_stream_rpc_method_handler(subscribe),
    },
)


async def main() -> int:
    server = grpc.aio.server(
        interceptors=[graceshut.grpc.interceptor(coordinator)],
        options=graceshut.grpc.server_options(coordinator),
    )
    server.add_generic_rpc_handlers((greeter,))
    health = health_aio.HealthServicer()
    await health.set("helloworld.Greeter", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    server.add_insecure_port(f"[::]:{os.environ.get('PORT', '50051')}")
    installation = graceshut.grpc.install(server, coordinator, health=health, liveness="liveness")
    report = await installation.serve()  # starts the server; returns after the sequence
    return report.exit_code


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
