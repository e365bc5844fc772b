"""A Celery worker's main process as graceshut sees it: its loop, its tasks, its broker.

Celery's consumer runs on the main thread inside kombu's event loop (the hub), and
graceshut's sequence on a thread of its own (`SequenceThread`). Whatever touches the
consumer, the pool or the broker channel is handed to the hub through a pipe the hub
watches, and done there: never from the sequence thread, never in a signal handler.

A timer of our own on the hub, every quarter second, is the liveness probe's heartbeat
and tells the sequence which tasks the pool runs: each is a tracked job of the
coordinator, named ``name[id]``, so that the drain waits for it and the report names
what the drain had to end. Ending one is Celery's own soft-shutdown step for it
(`Consumer.cancel_active_requests`); a pool that cannot stop a task (threads) leaves it
running until the process exits, and its late acknowledgement is never sent. Then
every message the worker still holds unacknowledged (tasks ended, ETA tasks held,
tasks prefetched) goes back to the broker's queue with kombu's
`restore_unacked_once`, before the flush phase, instead of waiting in Redis's
``unacked`` hash for the visibility timeout.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio

from ._loop import LoopHandle

if TYPE_CHECKING:
    from ._coordinator import Coordinator
    from ._report import ShutdownReport

logger = logging.getLogger("graceshut")

#: Seconds between two heartbeats of the hub (and two looks at the running tasks).
HEARTBEAT = 0.25
#: A hub silent for this long is taken as gone (the worker is past its own shutdown):
#: work meant for it is then done on the sequence's thread.
_HUB_GONE = 2.0
#: After the report, how long a worker whose threads pool still runs an ended task
#: waits for Celery's own stop before it exits.
_UNSTOPPABLE_WAIT = 1.0


@dataclasses.dataclass(eq=False)
class _Job:
    label: str
    scope: anyio.CancelScope


@dataclasses.dataclass(frozen=True)
class HandBack:
    """What the end of the drain gave back to the broker, or could not."""

    restored: tuple[str, ...]
    cancelled: tuple[str, ...]


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


class WorkerBridge:
    """Between the sequence's loop and the worker's hub; one per worker process."""

    def __init__(self, coordinator: Coordinator, *, liveness_timeout: float) -> None:
        self.coordinator = coordinator
        self.liveness_timeout = liveness_timeout
        self.consumer: Any = None
        self.last_beat: float | None = None
        self.unstoppable = 0
        """Tasks ended at the drain's end that their pool could not stop (threads)."""
        self._calls: collections.deque[_HubCall] = collections.deque()
        self._wake_r = self._wake_w = -1
        self._jobs: dict[str, _Job] = {}
        self._ended: set[str] = set()  # ended at the drain's end: never tracked again
        self._running: list[Any] = []  # the hub's latest look at the pool
        self._watching = False
        self._report: ShutdownReport | None = None

    # -- on the hub's thread ------------------------------------------------------------

    def attach(self, consumer: Any) -> None:
        """Hook into the worker's loop; on its main thread, once the consumer is ready."""
        self.consumer = consumer
        hub = consumer.hub
        if hub is not None:
            self._wake_r, self._wake_w = os.pipe()
            os.set_blocking(self._wake_r, False)
            os.set_blocking(self._wake_w, False)
        # The hub's own timer (without an event loop, a transport without one: the
        # consumer's timer thread).
        consumer.timer.call_repeatedly(HEARTBEAT, self._tick)
        self._tick()

    def _tick(self) -> None:
        self.last_beat = time.monotonic()
        hub = self.consumer.hub
        if hub is not None and self._wake_r not in hub.readers:
            # Again after a reconnection: the consumer resets the hub's readers then.
            hub.add_reader(self._wake_r, self._run_calls)
        self._run_calls()
        self._running = _running_requests()
        if not self._watching:
            # The sequence's loop may not run yet: then at the next tick.
            self._watching = self.coordinator.call_soon_threadsafe(self._start_watching)

    def _run_calls(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            os.read(self._wake_r, 512)
        while self._calls:
            self._calls.popleft().run()

    def stop_consuming(self) -> list[str]:
        """Cancel the task consumer and the ETA tasks held in the timer; their labels."""
        consumer = self.consumer
        if consumer.task_consumer is not None:
            # What Celery's own warm shutdown does first (the `Tasks` bootstep's stop).
            consumer.task_consumer.cancel()
        held = []
        timer = consumer.timer
        eta_handlers = {consumer.apply_eta_task, getattr(consumer, "_limit_post_eta", None)}
        for event in timer.queue:
            entry = event[2]
            if getattr(entry, "fun", None) in eta_handlers and entry.args:
                # Due later: its message stays unacknowledged and goes back to the
                # broker at the end of the drain, instead of starting here.
                entry.cancel()
                held.append(task_label(entry.args[0]))
        return held

    def hand_back(self, cutting: bool, known: frozenset[str]) -> HandBack | None:
        """End what runs (when *cutting*), and give every held message back to the broker.

        None when a task started that the sequence has not seen yet (not cutting): the
        drain waits for it first.
        """
        consumer = self.consumer
        running = _running_requests()
        if not cutting and any(request.id not in known for request in running):
            return None
        cancelled = []
        pool = consumer.pool
        executor = getattr(pool, "executor", None)
        if executor is not None and not _can_stop_tasks(pool):
            # Tasks queued in the threads pool but not started would start after their
            # message went back to the broker: drop them (they run elsewhere).
            executor.shutdown(wait=False, cancel_futures=True)
        if running:
            if _can_stop_tasks(pool):
                # Celery's soft-shutdown step (5.5 and 5.6 named it differently).
                cancel = (
                    getattr(consumer, "cancel_active_requests", None)
                    or consumer.cancel_all_unacked_requests
                )
                cancel()
            for request in running:
                if not (request.task.acks_late and not request.acknowledged):
                    # Acknowledged when it started (early ack): nothing to give back.
                    cancelled.append(task_label(request))
                elif not _can_stop_tasks(pool):
                    # A thread cannot be stopped: the task runs on until the process
                    # exits, and its late ack must never reach the broker, which is
                    # given the message back below.
                    request.acknowledged = True
                    self.unstoppable += 1
        restored: list[str] = []
        task_consumer = consumer.task_consumer
        if task_consumer is not None:
            qos = task_consumer.channel.qos
            # Acks of tasks that just finished may wait in ``_dirty`` for kombu to apply
            # them: those messages are done, not handed back.
            acked = set(getattr(qos, "_dirty", ()))
            restored = [
                _message_label(message)
                for tag, message in list(qos._delivered.items())  # noqa: SLF001
                if tag not in acked
            ]
            qos.restore_unacked_once()
        return HandBack(tuple(restored), tuple(cancelled))

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
            with contextlib.suppress(BlockingIOError, OSError):
                os.write(self._wake_w, b"\0")
        while not call.done.is_set():
            beat = self.last_beat
            if beat is None or time.monotonic() - beat > _HUB_GONE:
                call.run()
            await anyio.sleep(0.01)
        if call.error is not None:
            raise call.error
        return call.result

    def _start_watching(self) -> None:
        LoopHandle().spawn(self._watch)

    async def _watch(self) -> None:
        while True:
            self._sync(self._running)
            await anyio.sleep(HEARTBEAT)

    def _sync(self, running: list[Any]) -> None:
        """Track each running task as a job of the coordinator, named ``name[id]``."""
        in_flight = self.coordinator.in_flight
        ids = {request.id: request for request in running}
        for task_id, job in list(self._jobs.items()):
            if task_id not in ids and not job.scope.cancel_called:
                del self._jobs[task_id]
                in_flight.end_job(job.scope)
                if self.coordinator.shutting_down:
                    self.coordinator.note_task("finished", job.label)
        for task_id, request in ids.items():
            if task_id not in self._jobs and task_id not in self._ended:
                label = task_label(request)
                self._jobs[task_id] = _Job(label, in_flight.start_job(label))

    async def announce(self) -> None:
        """The announce handler: stop taking tasks at once."""
        held = await self.on_hub(self.stop_consuming)
        logger.info(
            "stopped consuming tasks; %d ETA task%s held for the broker",
            len(held),
            "" if len(held) == 1 else "s",
            extra={"phase": "announce", "held": held},
        )

    async def drain(self) -> None:
        """The drain hook: wait for the tasks, end them at the drain's end, hand back."""
        while True:
            cut = [job for job in self._jobs.values() if job.scope.cancel_called]
            if cut or not self._jobs:
                known = frozenset(self._jobs)
                back = await self.on_hub(functools.partial(self.hand_back, bool(cut), known))
                if back is not None:
                    break
            await anyio.sleep(0.05)
        for task_id, job in list(self._jobs.items()):
            if job.scope.cancel_called:
                del self._jobs[task_id]
                self._ended.add(task_id)
                self.coordinator.in_flight.end_job(job.scope)
        for label in back.restored:
            self.coordinator.note_task("restored", label)
        for label in back.cancelled:
            self.coordinator.note_task("cancelled", label)
        logger.info(
            "%d task%s handed back to the broker%s",
            len(back.restored),
            "" if len(back.restored) == 1 else "s",
            f", {len(back.cancelled)} cancelled (acknowledged at start)" if back.cancelled else "",
            extra={
                "phase": "drain",
                "restored": list(back.restored),
                "cancelled": list(back.cancelled),
            },
        )

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

    def after_report(self, report: ShutdownReport) -> None:
        """Report listener: the process exits inside the grace period, whatever runs on.

        Celery's own stop waits for the pool, and a thread pool's running task cannot be
        stopped: at ``grace period - safety_margin / 2`` (a second after the report when
        the drain ended such a task) the process ends with the report's status (the
        messages were handed back already).
        """
        settings = self.coordinator.settings
        left = report.started_at + settings.grace_period - settings.safety_margin / 2 - time.time()
        if self.unstoppable:
            # Celery's stop would wait for that thread to the end: give its consumer's
            # close a moment, no more (the task's message is back in the queue already).
            left = min(left, _UNSTOPPABLE_WAIT)

        def end() -> None:
            logger.warning(
                "the worker is still stopping %.1fs before the grace period ends: exiting now",
                settings.safety_margin / 2,
                extra={"outcome": "timeout", "unstoppable": self.unstoppable},
            )
            logging.shutdown()
            os._exit(report.exit_code)

        timer = threading.Timer(max(0.0, left), end)
        timer.daemon = True
        timer.start()
        self._report = report

    def exit_now(self) -> None:
        """At interpreter exit, once the other exit functions ran: end the process.

        After a worker's sequence, the interpreter's own teardown only delays the exit
        (measured: 2 to 3 s after Celery's prefork pool has stopped, with every thread
        gone); the exit status is the report's.
        """
        report = self._report
        if report is None:
            return
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(report.exit_code)


def task_label(request: Any) -> str:
    """``name[id]``: how the logs and the report name a task."""
    return f"{request.name}[{request.id}]"


def _message_label(message: Any) -> str:
    headers = getattr(message, "headers", None) or {}
    name, task_id = headers.get("task"), headers.get("id")
    if name and task_id:
        return f"{name}[{task_id}]"
    return f"message[{getattr(message, 'delivery_tag', '?')}]"


def _running_requests() -> list[Any]:
    """The requests the pool runs now (Celery's ``active_requests``)."""
    from celery.worker.state import active_requests  # noqa: PLC0415 - optional dependency

    for _ in range(5):
        try:
            return list(active_requests)
        except RuntimeError:  # changed size while copied (the threads pool accepts a task)
            continue
    return list(active_requests)


def _can_stop_tasks(pool: Any) -> bool:
    """Whether the pool can end a running task (prefork can; threads cannot)."""
    from celery.concurrency.base import BasePool  # noqa: PLC0415 - optional dependency

    # Prefork sets ``terminate_job`` on the instance when its pool starts.
    return getattr(pool.terminate_job, "__func__", None) is not BasePool.terminate_job
