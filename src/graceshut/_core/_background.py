"""Fire-and-forget work that a shutdown waits for: `Coordinator.spawn`."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import anyio

if TYPE_CHECKING:
    from ._coordinator import Coordinator
    from ._loop import LoopHandle

logger = logging.getLogger("graceshut")


def spawn(
    coordinator: Coordinator,
    loop: LoopHandle,
    func: Callable[..., Awaitable[object]],
    args: tuple[object, ...],
    *,
    name: str | None,
    timeout: float | None,
) -> None:
    """Run *func(*args)* as a task of its own, tracked until it ends (see `spawn`)."""
    if timeout is not None and not timeout > 0:
        raise ValueError(f"timeout={timeout!r} must be a number of seconds greater than 0")
    label: str = name or getattr(func, "__qualname__", None) or repr(func)
    # Counted from now, not from when the task first runs: a shutdown that begins in
    # between must already wait for it.
    in_flight = coordinator.in_flight
    ended_by_drain = in_flight.start_job(label)

    async def job() -> None:
        try:
            with ended_by_drain, anyio.move_on_after(timeout) as scope:
                try:
                    await func(*args)
                except Exception:
                    logger.exception("background job %s failed", label, extra={"job": label})
            if scope.cancelled_caught:
                logger.warning(
                    "background job %s cut off after its timeout of %gs",
                    label,
                    timeout,
                    extra={"job": label},
                )
        finally:
            in_flight.end_job(ended_by_drain)

    loop.spawn(job)
