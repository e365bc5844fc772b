"""The gRPC side of the simulation: the kubelet's ``grpc`` probe and a gRPC load.

The probe is the kubelet's (``pkg/probe/grpc``): a new plaintext connection, the health
service's ``Check`` for the probe's service name, a pass only for SERVING.

The load behaves like long-lived gRPC channels, each a connection of its own: unary
calls at an even pace, taken in turn from the methods given, and one server stream per
streaming method, opened again whenever it ends (after a tenth of a second when it
ended cleanly). Requests are empty messages (valid for
any protobuf request type) and answers are not decoded: any status the app chose counts
as an answer. A call fails when the channel cannot connect, the connection breaks
(``UNAVAILABLE``), the deadline passes, or the status is ``CANCELLED``, ``UNKNOWN``,
``INTERNAL`` or ``DATA_LOSS``; a stream fails when it ends with one of those. Before a
channel makes a new connection (the first, or after a GOAWAY), the Service is asked where
it goes, as for HTTP clients (`graceshut.simulate._service`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

try:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("grpc probes and loads need grpcio: pip install 'graceshut[grpc]'") from exc

from ._actions import Result
from ._load import ERROR, REFUSED, RESET, TIMEOUT, LoadGenerator
from ._service import ELSEWHERE, NO_ENDPOINT, POD

#: Seconds before a stream that ended cleanly is opened again.
_RESUBSCRIBE = 0.1
#: A connection of its own per channel, as separate client processes have.
_OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]
_FAILED = {
    "CANCELLED": ERROR,
    "UNKNOWN": ERROR,
    "INTERNAL": ERROR,
    "DATA_LOSS": ERROR,
    "DEADLINE_EXCEEDED": TIMEOUT,
}


def check(service: str, host: str, port: int, timeout: float) -> Result:
    """One ``grpc`` probe, as the kubelet makes it."""
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        with grpc.insecure_channel(address, options=_OWN_CONNECTION) as channel:
            answer = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
    except grpc.RpcError as exc:
        code = exc.code()
        if code == grpc.StatusCode.UNIMPLEMENTED:
            error = "this server does not implement the grpc health protocol"
        else:
            error = f"health rpc probe failed: {code.name}: {exc.details()}"
        return Result(ok=False, duration=0.0, error=error)
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
    if status != "SERVING":
        return Result(ok=False, duration=0.0, error=f"service unhealthy (responded with {status})")
    return Result(ok=True, duration=0.0)


class GrpcLoad(LoadGenerator):
    """gRPC clients instead of HTTP ones, with the same counters and routing.

    The spec's ``grpc_unary`` methods are called from ``concurrency`` channels at
    ``rate`` calls per second in all; each ``grpc_stream`` method has a stream of its own.
    """

    def start(self) -> None:
        """Start the clients."""
        self._address = f"{self.spec.host}:{self.spec.port}"
        start = time.monotonic()
        work: list[tuple[str, Callable[..., None], tuple[Any, ...]]] = []
        if self.spec.grpc_unary:
            work += [(f"grpc-{i}", self._unary, (i, start)) for i in range(self.spec.concurrency)]
        work += [(f"grpc-stream-{m}", self._stream, (m,)) for m in self.spec.grpc_stream]
        for name, target, args in work:
            thread = threading.Thread(target=target, args=args, name=name, daemon=True)
            self._threads.append(thread)
            thread.start()

    def _unary(self, index: int, start: float) -> None:
        spec = self.spec
        interval = spec.concurrency / spec.rate if spec.rate > 0 else 0.0
        scheduled = start + index / spec.rate if spec.rate > 0 else start
        channel = _Channel(self._address)
        turn = index
        try:
            while not self._stop.is_set():
                if interval:
                    delay = scheduled - time.monotonic()
                    if delay > 0 and self._stop.wait(delay):
                        break
                    scheduled = max(scheduled + interval, time.monotonic())
                method = spec.grpc_unary[turn % len(spec.grpc_unary)]
                turn += 1
                if not channel.ready and not self._routed(method, channel):
                    if not interval and self._stop.wait(0.01):
                        break
                    continue
                self._call(channel, method)
        finally:
            channel.close()

    def _call(self, channel: _Channel, method: str) -> None:
        self.stats.add(sent=1)
        started = time.monotonic()
        try:
            channel.channel.unary_unary(method)(b"", timeout=self.spec.timeout)
        except grpc.RpcError as exc:
            self._answered_or_failed(exc, method, started)
            return
        self.stats.answered(0, time.monotonic() - started)

    def _stream(self, method: str) -> None:
        channel = _Channel(self._address)
        try:
            while not self._stop.is_set():
                if not channel.ready and not self._routed(method, channel):
                    self._stop.wait(0.1)
                    continue
                self.stats.add(sent=1)
                started = time.monotonic()
                call = channel.channel.unary_stream(method)(b"")
                stopper = threading.Thread(target=self._cancel_on_stop, args=(call,), daemon=True)
                stopper.start()
                try:
                    for _ in call:
                        pass
                except grpc.RpcError as exc:
                    if not self._stop.is_set():
                        self._answered_or_failed(exc, method, started)
                    continue
                self.stats.answered(0, time.monotonic() - started)
                # Subscribe again soon, not in a tight loop against a pod whose handler
                # ends new streams at once while it drains.
                self._stop.wait(_RESUBSCRIBE)
        finally:
            channel.close()

    def _cancel_on_stop(self, call: Any) -> None:
        while not self._stop.wait(0.1):
            if call.done():
                return
        call.cancel()

    def _routed(self, method: str, channel: _Channel) -> bool:
        """Whether the Service sends the channel's new connection to this pod."""
        where = self._route()
        if where == ELSEWHERE:
            self.stats.add(rerouted=1)
            self.stats.tick("rerouted")
        elif where != POD:
            self.stats.add(sent=1)
            self.stats.fail(REFUSED, NO_ENDPOINT, method)
        else:
            self.stats.add(connections=1)
            channel.connecting()
        return where == POD

    def _answered_or_failed(self, exc: grpc.RpcError, method: str, started: float) -> None:
        code = exc.code()
        details = exc.details() or ""
        if code == grpc.StatusCode.UNAVAILABLE:
            kind = REFUSED if "refused" in details.lower() else RESET
        else:
            kind = _FAILED.get(code.name, "")
        if not kind:
            self.stats.answered(code.value[0], time.monotonic() - started)
            return
        if kind == REFUSED and self._route() == ELSEWHERE:
            # A GOAWAY crossed the call and grpcio opened a new connection for it: the
            # Service sends that one to another pod, which answers it.
            self.stats.add(sent=-1, rerouted=1)
            self.stats.tick("rerouted")
            return
        self.stats.fail(kind, f"{code.name}: {details}", method)


class _Channel:
    """A channel with its own connection, and whether that connection is up."""

    def __init__(self, address: str) -> None:
        self.channel = grpc.insecure_channel(address, options=_OWN_CONNECTION)
        self._state: Any = None
        self._used = False
        self.channel.subscribe(self._changed, try_to_connect=False)

    @property
    def ready(self) -> bool:
        """Whether a call goes on an open connection (else a new one is made)."""
        connecting = self._state in (
            grpc.ChannelConnectivity.READY,
            grpc.ChannelConnectivity.CONNECTING,
        )
        return self._used and connecting

    def connecting(self) -> None:
        self._used = True
        self._state = grpc.ChannelConnectivity.CONNECTING

    def _changed(self, state: Any) -> None:
        self._state = state

    def close(self) -> None:
        self.channel.unsubscribe(self._changed)
        self.channel.close()
