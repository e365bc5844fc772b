"""Type-checked only: graceshut.grpc as a gRPC service writes it."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

import graceshut
import graceshut.grpc

coordinator = graceshut.Coordinator(propagation_delay=5)


async def main() -> int:
    server = grpc.aio.server(
        interceptors=[graceshut.grpc.interceptor(coordinator)],
        options=graceshut.grpc.server_options(coordinator, max_age=4.0),
    )
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    server.add_insecure_port("[::]:50051")
    installation: graceshut.grpc.GrpcInstallation = graceshut.grpc.install(
        server,
        coordinator,
        health=health,
        readiness=["helloworld.Greeter"],
        liveness="liveness",
        admin_address="9901",
    )
    names: list[str] = installation.readiness_names()
    report: graceshut.ShutdownReport = await installation.serve()
    finished: int = report.finished.get("/helloworld.Greeter/SayHello", 0)
    return report.exit_code + len(names) + finished * 0
