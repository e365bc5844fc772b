"""Real gRPC servers in subprocesses, real clients: steady load, probes, Watch streams."""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ..asgi_servers import ROOT, free_port

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
#: A channel of its own, as separate client processes would have (grpcio shares one
#: connection between channels to the same address otherwise).
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]


class GrpcServer:
    """``tests/e2e/grpc_app.py`` in a subprocess, ready once its health service answers."""

    def __init__(self, mode: str, directory: Path, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.admin_port = free_port()
        self.log = directory / f"grpc-{mode}-{self.port}.log"
        self._log_file = self.log.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.e2e.grpc_app", str(self.port), mode],
            cwd=ROOT,
            env={
                **os.environ,
                "PYTHONPATH": str(ROOT),
                "GRACESHUT_ADMIN_ADDRESS": f"127.0.0.1:{self.admin_port}",
                **(env or {}),
            },
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )
        self.address = f"127.0.0.1:{self.port}"
        deadline = time.monotonic() + 30
        while check(self.address, "liveness") != "SERVING":
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"gRPC server did not start:\n{self.output()}")
            time.sleep(0.1)

    def output(self) -> str:
        self._log_file.flush()
        return self.log.read_text(errors="replace")

    def report(self) -> dict[str, Any]:
        """The shutdown report the server printed as it exited."""
        for line in self.output().splitlines():
            if line.startswith("REPORT "):
                return dict(json.loads(line.removeprefix("REPORT ")))
        raise AssertionError(f"no report in the output:\n{self.output()}")

    def wait_exit(self, timeout: float = 40) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(f"server did not exit in {timeout}s:\n{self.output()}") from None

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        self.process.wait()
        self._log_file.close()


def check(address: str, service: str, timeout: float = 1.0) -> str:
    """One health Check on a connection of its own, as the kubelet's ``grpc`` probe does."""
    try:
        with grpc.insecure_channel(address, options=OWN_CONNECTION) as channel:
            answer = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
    except grpc.RpcError as exc:
        return str(exc.code().name)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status))


@dataclasses.dataclass
class Probe:
    """One probe: when it started and ended (wall clock) and what it answered."""

    started: float
    ended: float
    answer: str


class Prober:
    """A probe every *period* seconds on a thread, until stopped or the server is gone."""

    def __init__(
        self, address: str, service: str, period: float = 0.1, timeout: float = 1.0
    ) -> None:
        self.probes: list[Probe] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(address, service, period, timeout), daemon=True
        )
        self._thread.start()

    def _run(self, address: str, service: str, period: float, timeout: float) -> None:
        while not self._stop.wait(period):
            started = time.time()
            answer = check(address, service, timeout)
            self.probes.append(Probe(started, time.time(), answer))

    def stop(self) -> list[Probe]:
        self._stop.set()
        self._thread.join(5)
        return self.probes


class UnaryLoad:
    """Long-lived channels, each sending unary calls at an even pace, counting failures."""

    def __init__(self, address: str, *, rate: float = 100, channels: int = 4) -> None:
        self.sent = 0
        self.failures: collections.Counter[str] = collections.Counter()
        self.samples: list[str] = []
        self.last_ok = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(address, channels / rate), daemon=True)
            for _ in range(channels)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def _run(self, address: str, interval: float) -> None:
        with grpc.insecure_channel(address, options=OWN_CONNECTION) as channel:
            call = channel.unary_unary("/test.Echo/Unary")
            next_at = time.monotonic()
            while not self._stop.is_set():
                try:
                    call(b"ping", timeout=5)
                    with self._lock:
                        self.sent += 1
                        self.last_ok = time.time()
                except grpc.RpcError as exc:
                    with self._lock:
                        self.sent += 1
                        self.failures[exc.code().name] += 1
                        if len(self.samples) < 10:
                            self.samples.append(f"{exc.code().name}: {exc.details()}")
                next_at += interval
                self._stop.wait(max(0.0, next_at - time.monotonic()))

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)
        failed = sum(self.failures.values())
        return {"sent": self.sent, "failed": failed, "failures": dict(self.failures)}


class Watcher:
    """A health ``Watch`` stream on a thread: the statuses it got and how it ended."""

    def __init__(self, address: str, service: str) -> None:
        self.statuses: list[str] = []
        self.ended: str | None = None
        self.ended_at: float | None = None
        self._channel = grpc.insecure_channel(address, options=OWN_CONNECTION)
        self._call = health_pb2_grpc.HealthStub(self._channel).Watch(
            health_pb2.HealthCheckRequest(service=service)
        )
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for answer in self._call:
                self.statuses.append(
                    health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
                )
            self.ended = "OK"
        except grpc.RpcError as exc:
            self.ended = str(exc.code().name)
        self.ended_at = time.time()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
        self._channel.close()
