"""Reaching the running event loop from a signal handler or another thread.

A signal handler runs on the main thread between two bytecodes, often in the middle
of the event loop itself: anyio's ``from_thread`` helpers deadlock there (asyncio) or
refuse (trio). The loop's own thread-safe entry points are what is safe to call.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any


def running_on_trio() -> bool:
    """Whether the calling code runs under trio (else asyncio); call it from async code."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return True
    return False


class LoopHandle:
    """The event loop that was running when this handle was made (asyncio or trio)."""

    __slots__ = ("_asyncio_loop", "_tasks", "_trio_token")

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self._trio_token: Any = None
        self._asyncio_loop: asyncio.AbstractEventLoop | None = None
        try:
            self._asyncio_loop = asyncio.get_running_loop()
        except RuntimeError:
            self._trio_token = _current_trio_token()

    @property
    def is_trio(self) -> bool:
        """Whether the loop is trio's (else asyncio's)."""
        return self._asyncio_loop is None

    def call_soon_threadsafe(self, func: Callable[[], object]) -> None:
        """Run *func* on the loop's thread soon; safe from signal handlers and threads."""
        if self._asyncio_loop is not None:
            self._asyncio_loop.call_soon_threadsafe(func)
        else:
            self._trio_token.run_sync_soon(func)

    def spawn(self, func: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Start *func* as a task of its own; call it on the loop's thread only.

        The task belongs to no caller, so a cancelled request or a closed task group
        cannot take the shutdown sequence down with it.
        """
        func = _logging_failures(func)
        if self._asyncio_loop is not None:
            task = self._asyncio_loop.create_task(func())
            self._tasks.add(task)  # keep a reference, or the task may be collected
            task.add_done_callback(self._tasks.discard)
        else:
            import trio  # noqa: PLC0415 - only reached when trio is running

            trio.lowlevel.spawn_system_task(func)


def _logging_failures(
    func: Callable[[], Coroutine[Any, Any, None]],
) -> Callable[[], Coroutine[Any, Any, None]]:
    """Log what a background task raises: on trio it would crash the whole run."""

    async def guarded() -> None:
        try:
            await func()
        except Exception:
            logging.getLogger("graceshut").exception("graceshut background task failed")

    return guarded


def _current_trio_token() -> Any:
    try:
        import trio  # noqa: PLC0415 - trio is optional
    except ImportError:
        raise RuntimeError("graceshut needs a running asyncio or trio event loop") from None
    try:
        return trio.lowlevel.current_trio_token()
    except RuntimeError:
        raise RuntimeError("graceshut needs a running asyncio or trio event loop") from None
