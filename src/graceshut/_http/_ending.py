"""Ending the requests that still run: streams after ``stream_grace``, all at the drain's end.

A server waits for every open response before it exits (uvicorn without bound), so a
stream or a long-poll left running at the deadline would keep the process alive past
the grace period, and the app's own lifespan shutdown would never run.

Finding the requests costs nothing per request on asyncio: at the moment of ending,
walk `asyncio.all_tasks()` and pick the tasks whose coroutine chain (``cr_await``)
runs through the middleware with an HTTP or WebSocket scope (1.5-2.2 us a task, 9 ms
for 4,000). Keeping a handle per request instead would cost the hot path 0.25-0.5 us.
trio cannot cancel one task from outside, so on trio each request runs in a
`trio.CancelScope` of its own (about 5 us a request, trio only), found the same way:
by walking trio's task tree to the middleware's frame and its scope.

A stream is a response under way: the chain passes through a Starlette `Response`'s
``__call__`` (`StreamingResponse`, sse-starlette's `EventSourceResponse`, a big body)
but not through its background tasks, which count as in flight until they finish.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
from collections.abc import Callable, Iterator
from types import CodeType, FrameType
from typing import TYPE_CHECKING, Any

from starlette.background import BackgroundTask, BackgroundTasks
from starlette.responses import Response

from .._core._loop import running_on_trio

if TYPE_CHECKING:
    from .._core._tracker import InFlight

#: Local of the middleware's frame that holds a trio request's cancel scope.
_TRIO_SCOPE = "graceshut_cancel"
_BACKGROUND = frozenset({BackgroundTask.__call__.__code__, BackgroundTasks.__call__.__code__})


@dataclasses.dataclass(frozen=True)
class Running:
    """One request, WebSocket or tracked job that graceshut can end."""

    label: str
    """``GET /path`` (no query string), ``WEBSOCKET /path``, or a tracked job's name."""
    stream: bool
    cancel: Callable[[], None]


def end_requests(state: InFlight, call: CodeType, *, streams_only: bool) -> list[str]:
    """Cancel what the middleware whose ``__call__`` is *call* serves now; their labels.

    Only streams when *streams_only*; tracked jobs are the core's to end.
    """
    labels = []
    for running in find_running(state, call):
        if running.stream or not streams_only:
            running.cancel()
            labels.append(running.label)
    return labels


def find_running(state: InFlight, call: CodeType) -> list[Running]:
    """The requests and WebSockets that the middleware of *state* is serving now.

    *call* is the code of the middleware's ``__call__``, whose frames mark a request.
    """
    found = []
    for task, coro in _tasks():
        frames = _frames(coro)
        for frame in frames:
            if frame.f_code is not call:
                continue
            f_locals = frame.f_locals
            middleware: Any = f_locals.get("self")
            scope = f_locals.get("scope")
            if getattr(middleware, "_state", None) is not state or not isinstance(scope, dict):
                break
            if scope.get("type") not in ("http", "websocket"):
                break
            if scope.get("path") in middleware.routes:
                break
            deeper = list(frames)
            cancel = _canceller(state, task, deeper)
            if cancel is not None:
                found.append(Running(_label(scope), _is_stream(deeper), cancel))
            break
    return found


def _tasks() -> Iterator[tuple[Any, Any]]:
    """Every task of the running loop and its coroutine."""
    if not running_on_trio():
        for task in asyncio.all_tasks():
            yield task, task.get_coro()
        return
    import trio  # noqa: PLC0415 - only reached on trio

    stack: list[Any] = [trio.lowlevel.current_root_task()]
    while stack:
        node = stack.pop()
        if node is None:
            continue
        yield node, node.coro
        for nursery in node.child_nurseries:
            stack.extend(nursery.child_tasks)


def _frames(awaitable: Any) -> Iterator[FrameType]:
    """The frames of a coroutine chain, outermost first, as far as it can be followed."""
    for _ in range(1000):  # a bound, in case of an unexpected cycle
        frame = getattr(awaitable, "cr_frame", None) or getattr(awaitable, "gi_frame", None)
        if frame is None:
            return
        yield frame
        awaitable = getattr(awaitable, "cr_await", None) or getattr(awaitable, "gi_yieldfrom", None)


def _canceller(state: InFlight, task: Any, deeper: list[FrameType]) -> Callable[[], None] | None:
    if isinstance(task, asyncio.Task):
        return functools.partial(_cut, state, task)
    for frame in deeper:
        scope = frame.f_locals.get(_TRIO_SCOPE)
        if scope is not None:
            return functools.partial(_cut, state, scope)
    return None  # on trio, served before the coordinator knew it: cannot be ended


def _cut(state: InFlight, handle: Any) -> None:
    """Cancel an asyncio task or a trio cancel scope, noting that graceshut did it."""
    state.cut.add(handle)
    handle.cancel()


def _is_stream(frames: list[FrameType]) -> bool:
    responding = False
    for frame in frames:
        code = frame.f_code
        if code in _BACKGROUND:
            return False  # background work after the response: in flight, not a stream
        if code.co_name == "__call__" and isinstance(frame.f_locals.get("self"), Response):
            responding = True
    return responding


def _label(scope: dict[str, Any]) -> str:
    method = scope.get("method", "GET") if scope.get("type") == "http" else "WEBSOCKET"
    return f"{method} {scope.get('path', '')}"
