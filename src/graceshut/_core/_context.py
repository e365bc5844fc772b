"""What a shutdown handler is told about the run it takes part in."""

from __future__ import annotations

import dataclasses
import logging
import time

from ._phases import Phase


@dataclasses.dataclass(frozen=True)
class ShutdownContext:
    """Passed to handlers that accept one argument.

    Attributes:
        reason: What started the shutdown (``"SIGTERM"``, ``"prestop"``, ``"lifespan"``...).
        phase: The phase this handler runs in.
        deadline: When this handler is cut off, as a `time.monotonic` timestamp: the
            earlier of its own timeout and the time the later phases need.
        logger: The ``graceshut`` logger, to log with the run's structured fields.
        error: In a fallback, why the handler failed: what it raised, or a
            `TimeoutError` when it ran out of time. None in the handler itself.
    """

    reason: str
    phase: Phase
    deadline: float
    logger: logging.Logger
    error: BaseException | None = None

    def remaining(self) -> float:
        """Seconds left before this handler is cut off (never negative).

        Pass it on as a timeout to clients that take one::

            @coordinator.on_shutdown("release")
            def release(ctx):
                client.delete("lock", timeout=ctx.remaining())
        """
        return max(0.0, self.deadline - time.monotonic())
