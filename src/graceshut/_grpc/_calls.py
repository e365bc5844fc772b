"""Counting the gRPC calls of a `grpc.aio` server, ending them, and ending health ``Watch``.

A `grpc.aio` server tells an interceptor about every call before its handler runs, and
lets it hand back another handler: the natural place to count calls in flight. Each
call of an async handler runs as a tracked job of the coordinator (`InFlight`), so the
drain waits for it, the report names it (by method) when it finished or was ended, and
at the drain's deadline it is ended like any tracked job: its code unwinds and its
client gets ``UNAVAILABLE``, so that a stream cut short never looks complete.

The health service's ``Watch`` streams never end by themselves (grpcio-health-checking
1.85: a ``Watch`` open held ``stop(grace=10)`` for the whole 10 s). Wrapped here, each
one ends with status OK once the drain has begun and it has written the status of its
name: the readiness names' NOT_SERVING was written at the announcement, so a watcher
has learnt it before its stream ends. The servicer registers its methods ahead of any
generic handler, so a handler added later cannot replace ``Watch``; the interceptor,
which sees the handler that was found, can.

Sync handlers (run by grpcio in its thread pool) are passed through as they are: they
are not counted, and only the server's own ``stop(grace)`` waits for them.
"""

from __future__ import annotations

import collections
import inspect
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import anyio
import grpc
from grpc import aio as grpc_aio

if TYPE_CHECKING:
    from .._core._coordinator import Coordinator

WATCH_METHOD = "/grpc.health.v1.Health/Watch"
_KINDS = ("unary_unary", "unary_stream", "stream_unary", "stream_stream")
#: What a client is told about a call ended at the drain's deadline.
CUT_DETAILS = "the server is shutting down: retry on another connection"


class CallTracker:
    """The calls of one coordinator's gRPC server: counted, ended, and their outcomes."""

    def __init__(self, coordinator: Coordinator) -> None:
        self.coordinator = coordinator
        #: Calls by (method, outcome): ``ok``, ``error`` (the handler failed or aborted
        #: the call, or the client cancelled it) or ``cut`` (graceshut ended it at the
        #: drain's deadline).
        self.outcomes: collections.Counter[tuple[str, str]] = collections.Counter()
        self.in_flight = 0
        self._watches: dict[anyio.CancelScope, _WatchContext] = {}

    def wrap(self, handler: Any, method: str) -> Any:
        """The handler for *method*, its behaviour wrapped in counting (or as found)."""
        if handler is None or not hasattr(handler, "_replace"):
            return handler  # not grpcio's own handler tuple: left as it is
        for kind in _KINDS:
            function = getattr(handler, kind, None)
            if function is None:
                continue
            if inspect.isasyncgenfunction(function):
                function = _writing(function)
            elif not inspect.iscoroutinefunction(function):
                return handler  # a sync handler: grpcio runs it in its thread pool
            watch = method == WATCH_METHOD
            return handler._replace(**{kind: self._counted(function, method, watch=watch)})
        return handler

    def end_watches(self) -> int:
        """End every health ``Watch`` stream that is not writing now; the rest end after it.

        Returns:
            How many streams were open.
        """
        for scope, context in list(self._watches.items()):
            if not context.writing:
                scope.cancel()
        return len(self._watches)

    def _counted(self, function: Callable[..., Awaitable[Any]], method: str, *, watch: bool) -> Any:
        in_flight = self.coordinator.in_flight
        coordinator = self.coordinator

        async def call(request: Any, context: Any) -> Any:
            job = in_flight.start_job(method)
            # A Watch gets a scope of its own, which ends it with OK when the drain
            # begins (the job's scope ends calls at the drain's deadline).
            ending = anyio.CancelScope()
            if watch:
                context = self._watches[ending] = _WatchContext(context, ending, coordinator)
            self.in_flight += 1
            outcome, result = "error", None
            try:
                with job, ending:
                    result = await function(request, context)
                outcome = "cut" if job.cancelled_caught else "ok"
            finally:
                self._watches.pop(ending, None)
                self.in_flight -= 1
                self.outcomes[method, outcome] += 1
                in_flight.end_job(job)
            if outcome == "cut":
                await context.abort(grpc.StatusCode.UNAVAILABLE, CUT_DETAILS)
            return result

        return call


class _WatchContext:
    """The servicer context of one ``Watch``: ends the stream after a write while draining."""

    def __init__(self, context: Any, ending: anyio.CancelScope, coordinator: Coordinator) -> None:
        self._context = context
        self._ending = ending
        self._coordinator = coordinator
        self.writing = False

    async def write(self, message: Any) -> None:
        self.writing = True
        try:
            await self._context.write(message)
        finally:
            self.writing = False
        if self._coordinator.draining:
            self._ending.cancel()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


def _writing(generator: Callable[..., Any]) -> Callable[..., Awaitable[None]]:
    """An async-generator handler as a coroutine that writes what it yields.

    grpcio consumes a generator handler outside of it, so a cancellation meant for the
    handler could land in grpcio's own write; as a coroutine it lands in the handler.
    """

    async def write_all(request: Any, context: Any) -> None:
        async for message in generator(request, context):
            await context.write(message)

    return write_all


class GracefulInterceptor(grpc_aio.ServerInterceptor):  # type: ignore[misc]
    """A `grpc.aio.ServerInterceptor` that counts and ends calls for graceshut.

    Made by `graceshut.grpc.interceptor`; pass it when creating the server.
    """

    def __init__(self, tracker: CallTracker) -> None:
        self.tracker = tracker

    async def intercept_service(
        self,
        continuation: Callable[[Any], Awaitable[Any]],
        handler_call_details: Any,
    ) -> Any:
        """Find the handler, then wrap it (`CallTracker.wrap`)."""
        handler = await continuation(handler_call_details)
        return self.tracker.wrap(handler, handler_call_details.method)
