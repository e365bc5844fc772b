"""Running sync code off the event loop without holding up the process exit."""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Callable
from typing import Any, TypeVar, cast

import anyio

from ._loop import LoopHandle

T = TypeVar("T")


async def run_in_daemon_thread(func: Callable[[], T], *, name: str) -> T:
    """Run *func* in a new daemon thread and return its result (or raise its error).

    Cancelling the wait abandons the thread, and a daemon thread never holds up the
    process exit: a handler stuck on an unreachable server ends with the process instead
    of keeping it alive until the kubelet's SIGKILL (anyio's worker threads on asyncio
    are joined at interpreter exit). The thread sees the caller's context variables.
    """
    loop = LoopHandle()
    done = anyio.Event()
    outcome: list[tuple[bool, Any]] = []
    context = contextvars.copy_context()

    def target() -> None:
        try:
            outcome.append((True, context.run(func)))
        except BaseException as exc:  # handed to the waiting task
            outcome.append((False, exc))
        finally:
            # The loop may be gone when an abandoned thread ends: nobody is waiting then.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(done.set)

    threading.Thread(target=target, name=name, daemon=True).start()
    await done.wait()
    succeeded, value = outcome[0]
    if succeeded:
        return cast("T", value)
    raise value
