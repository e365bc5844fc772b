"""Run hypercorn with graceshut owning SIGTERM and SIGINT.

hypercorn's own command line gives the app no chance to see SIGTERM in time: it runs
the app in a child process and turns the signal into an event that the child polls, or
installs loop-level handlers that fire before anything of the app's. Its programmatic
``serve(..., shutdown_trigger=...)`` installs no handlers at all: graceshut then takes
the signals, runs the whole sequence while hypercorn keeps serving, and only then lets
hypercorn close.

Example (``python -m myapp``)::

    import sys
    from hypercorn.config import Config
    import graceshut.hypercorn

    config = Config()
    config.bind = ["0.0.0.0:8000"]
    sys.exit(graceshut.hypercorn.run(app, coordinator, config, worker_class="trio"))
"""

from __future__ import annotations

import signal
import threading
from typing import TYPE_CHECKING, Any, Literal

import anyio

from ._loop import LoopHandle
from ._signals import force_exit

if TYPE_CHECKING:
    from types import FrameType

    from hypercorn.config import Config

    from ._coordinator import Coordinator
    from ._report import ShutdownReport

__all__ = ["run", "serve"]


async def serve(app: Any, coordinator: Coordinator, config: Config | None = None) -> ShutdownReport:
    """Serve *app* with hypercorn on the running loop until graceshut's sequence is over.

    SIGTERM and SIGINT start the sequence; hypercorn is told to close once it is done.
    Works on asyncio and trio (whichever is running).

    Returns:
        The shutdown report (its `exit_code` is the status to exit with).
    """
    from hypercorn.config import Config  # noqa: PLC0415 - optional dependency

    config = config or Config()
    coordinator.attach()
    own_signals = _OwnSignals(coordinator)
    own_signals.install()
    try:
        if LoopHandle().is_trio:
            from hypercorn.trio import serve as hypercorn_serve  # noqa: PLC0415
        else:
            from hypercorn.asyncio import serve as hypercorn_serve  # type: ignore[assignment]  # noqa: PLC0415

        async def until_finished() -> None:
            await coordinator.wait()

        await hypercorn_serve(app, config, shutdown_trigger=until_finished)
    finally:
        own_signals.restore(finished=coordinator.report is not None)
    # Served until the lifespan shutdown joined the run: the report is there.
    return await coordinator.wait()


def run(
    app: Any,
    coordinator: Coordinator,
    config: Config | None = None,
    *,
    worker_class: Literal["asyncio", "uvloop", "trio"] = "asyncio",
) -> int:
    """Run `serve` in a new event loop and return the exit status (0 clean, 1 failed)."""
    backend = "trio" if worker_class == "trio" else "asyncio"
    options: dict[str, Any] = {"use_uvloop": True} if worker_class == "uvloop" else {}

    async def main() -> int:
        report = await serve(app, coordinator, config)
        return report.exit_code

    return anyio.run(main, backend=backend, backend_options=options)


class _OwnSignals:
    """SIGTERM and SIGINT start the sequence; hypercorn installs none of its own here."""

    def __init__(self, coordinator: Coordinator) -> None:
        self._coordinator = coordinator
        self._interrupted = False
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._handle)

    def restore(self, *, finished: bool) -> None:
        for signum, handler in self._previous.items():
            if finished and signum == signal.SIGTERM:
                # The kubelet's SIGTERM follows a preStop run closely: if it came between
                # here and the exit, the default action would turn a clean exit into 143.
                signal.signal(signum, signal.SIG_IGN)
            else:
                signal.signal(signum, handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        coordinator = self._coordinator
        if signum == signal.SIGINT:
            if self._interrupted and coordinator.report is None:
                force_exit(signum)  # a second Ctrl-C, as at a terminal
            self._interrupted = True
        if not coordinator.shutting_down:
            coordinator.trigger(signal.Signals(signum).name)
