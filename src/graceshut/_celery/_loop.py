"""A Celery worker's event loop (kombu's hub) as graceshut sees it, from another thread.

Celery's consumer runs on the main thread inside kombu's hub, and graceshut's sequence
on a thread of its own (`SequenceThread`). Whatever touches the consumer, the pool or
the broker channel is handed to the hub through a pipe the hub watches, and done there:
never from the sequence thread, never in a signal handler. Each turn of the hub is a
heartbeat: the liveness probe reads it, and so never asks the broker anything.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio

if TYPE_CHECKING:
    from .._core._coordinator import Coordinator

logger = logging.getLogger("graceshut")

#: Seconds between two heartbeats of the hub (and two looks at the running tasks).
HEARTBEAT = 0.25
#: A hub silent for this long is taken as gone (the worker is past its own shutdown):
#: work meant for it is then done on the sequence's thread.
_HUB_GONE = 2.0


class _HubCall:
    """One function for the hub's thread; run once, by whoever claims it first."""

    def __init__(self, func: Callable[[], Any]) -> None:
        self.func = func
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None
        self._claim = threading.Lock()

    def run(self) -> None:
        if not self._claim.acquire(blocking=False):
            return
        try:
            self.result = self.func()
        except Exception as exc:  # handed to the waiting side
            self.error = exc
        finally:
            self.done.set()


class WorkerLoop:
    """The worker's hub: work handed to it, its heartbeat, and the probes built on them."""

    def __init__(self, coordinator: Coordinator, *, liveness_timeout: float) -> None:
        self.coordinator = coordinator
        self.liveness_timeout = liveness_timeout
        self.consumer: Any = None
        self.last_beat: float | None = None
        self.closing = False
        """Set once the sequence is over: Celery's own stop closes the hub."""
        self._calls: collections.deque[_HubCall] = collections.deque()
        self._wake_r = self._wake_w = -1
        self._looked = 0.0
        self._look: Callable[[], None] = lambda: None

    # -- on the hub's thread ------------------------------------------------------------

    def attach(self, consumer: Any, look: Callable[[], None]) -> None:
        """Hook into the worker's loop; on its main thread, once the consumer is ready.

        *look* is called on the hub's thread with each heartbeat (4 times a second).
        """
        self.consumer = consumer
        self._look = look
        hub = consumer.hub
        if hub is not None:
            self._wake_r, self._wake_w = os.pipe()
            os.set_blocking(self._wake_r, False)
            os.set_blocking(self._wake_w, False)
            # Each turn of the loop beats; it turns at least every second (kombu polls
            # with a timeout), and survives what a reconnection clears (Celery 5.5
            # clears the timer, the hub's readers are reset).
            hub.on_tick.add(self._on_tick)
        # The timer keeps the loop turning 4 times a second, so that work handed to
        # it and signals are seen at once (without an event loop, a transport without
        # one: the consumer's timer thread beats).
        consumer.timer.call_repeatedly(HEARTBEAT, self._tick)
        self._tick()

    def _on_tick(self) -> None:
        now = time.monotonic()
        if now - self._looked >= HEARTBEAT:
            self._tick()
        else:
            self.last_beat = now

    def _tick(self) -> None:
        self.last_beat = self._looked = time.monotonic()
        hub = self.consumer.hub
        if hub is not None and not self.closing and self._wake_r not in hub.readers:
            # Again after a reconnection: the consumer resets the hub's readers then.
            # (Not once the run is over: Celery's own stop closes the hub.)
            try:
                hub.add_reader(self._wake_r, self._run_calls)
            except Exception:  # a hub being closed: the timer still runs the calls
                logger.debug("cannot watch graceshut's pipe from the hub", exc_info=True)
        self._run_calls()
        self._look()

    def _run_calls(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            os.read(self._wake_r, 512)
        while self._calls:
            self._calls.popleft().run()

    # -- from any thread ----------------------------------------------------------------

    def wake(self) -> None:
        """Make the hub turn now: a signal handed on to Celery runs at its next turn."""
        if self._wake_w >= 0:
            with contextlib.suppress(BlockingIOError, OSError):
                os.write(self._wake_w, b"\0")

    # -- on the sequence's loop ---------------------------------------------------------

    async def on_hub(self, func: Callable[[], Any]) -> Any:
        """Run *func* on the hub's thread and return its result.

        If the hub has stopped beating (the worker's own shutdown is under way), run it
        here instead: nothing else touches the consumer any more.
        """
        call = _HubCall(func)
        if self._wake_w < 0:
            call.run()
        else:
            self._calls.append(call)
            self.wake()
        while not call.done.is_set():
            beat = self.last_beat
            if beat is None or time.monotonic() - beat > _HUB_GONE:
                call.run()
            await anyio.sleep(0.01)
        if call.error is not None:
            raise call.error
        return call.result

    # -- on the admin listener's threads ------------------------------------------------

    def readiness(self) -> tuple[int, dict[str, object]]:
        """``/readyz``: 200 while the worker consumes tasks, never asking the broker."""
        coordinator = self.coordinator
        if coordinator.shutting_down:
            phase = coordinator.phase
            return 503, {
                "status": "shutting down",
                "reason": coordinator.reason,
                "phase": phase.value if phase else None,
            }
        consumer = self.consumer
        if consumer is None or consumer.connection is None or consumer.task_consumer is None:
            return 503, {"status": "not consuming"}
        return 200, {"status": "ready"}

    def liveness(self) -> tuple[int, dict[str, object]]:
        """``/livez``: 200 while the worker's loop beats, never asking the broker.

        A loop that stopped beating for ``liveness_timeout`` seconds while connected is
        stuck; one waiting for the broker to come back is alive (and not ready).
        """
        beat = self.last_beat
        age = None if beat is None else round(time.monotonic() - beat, 3)
        body: dict[str, object] = {
            "status": "alive",
            "heartbeat_age": age,
            "shutting_down": self.coordinator.shutting_down,
        }
        consumer = self.consumer
        connected = consumer is not None and consumer.connection is not None
        if age is not None and age > self.liveness_timeout and connected:
            body["status"] = "stuck"
            return 503, body
        return 200, body
