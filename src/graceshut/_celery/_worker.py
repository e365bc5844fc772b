"""A Celery worker's tasks and broker messages through the shutdown sequence.

With each heartbeat of the worker's loop (`graceshut._celery._loop`) the sequence learns
which tasks the pool runs: each is a tracked job of the coordinator, named
``name[id]``, so that the drain waits for it and the report names what the drain had
to end. Prefetched tasks the pool has not started are dropped at the announce. Ending
a task is Celery's own soft-shutdown step for it (`Consumer.cancel_active_requests`);
a pool that cannot stop a task (threads) leaves it running until the process exits,
and its late acknowledgement is never sent. Then every message the worker still holds
unacknowledged (tasks ended, ETA tasks held, tasks prefetched) goes back to the
broker's queue with kombu's `restore_unacked_once`, before the flush phase, instead of
waiting in Redis's ``unacked`` hash for the visibility timeout.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import functools
import logging
import os
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

import anyio

from .._core._loop import LoopHandle
from ._loop import HEARTBEAT

if TYPE_CHECKING:
    from .._core._coordinator import Coordinator
    from .._core._report import ShutdownReport
    from ._loop import WorkerLoop

logger = logging.getLogger("graceshut")

#: After the report, how long a worker whose threads pool still runs an ended task
#: waits for Celery's own stop before it exits.
_UNSTOPPABLE_WAIT = 1.0
#: Seconds before the drain's end that the hand-back starts (a third of a short drain).
_HAND_BACK = 1.0
#: How long past the drain's end the sequence waits for a slow hand-back (broker round
#: trips on a loaded machine: 1.7 s seen), so that the report still names its tasks.
_HAND_BACK_OVERRUN = 2.0
#: Tasks named in the hand-back's log line (all of them are in its ``extra``).
_NAMED = 10


@dataclasses.dataclass(eq=False)
class _Job:
    label: str
    scope: anyio.CancelScope


@dataclasses.dataclass(frozen=True)
class HandBack:
    """What the end of the drain gave back to the broker, or could not."""

    restored: tuple[str, ...]
    cancelled: tuple[str, ...]


class WorkerBridge:
    """The worker's tasks as the sequence's work; one per worker process."""

    def __init__(self, coordinator: Coordinator, loop: WorkerLoop) -> None:
        self.coordinator = coordinator
        self.loop = loop
        self.unstoppable = 0
        """Tasks ended at the drain's end that their pool could not stop (threads)."""
        self._jobs: dict[str, _Job] = {}
        self._ended: set[str] = set()  # ended at the drain's end: never tracked again
        self._handed: set[str] = set()  # handed back: the drain ends their jobs
        self._running: list[Any] = []  # the hub's latest look at the pool
        self._watching = False
        self._report: ShutdownReport | None = None

    # -- on the hub's thread ------------------------------------------------------------

    def look(self) -> None:
        """With each heartbeat: note which tasks run, for the sequence's loop to track."""
        self._running = _running_requests()
        if not self._watching:
            # The sequence's loop may not run yet: then at the next heartbeat.
            self._watching = self.coordinator.call_soon_threadsafe(self._start_watching)

    def stop_consuming(self) -> list[str]:
        """Cancel the task consumer and the ETA tasks held in the timer; their labels."""
        consumer = self.loop.consumer
        if consumer.task_consumer is not None:
            # What Celery's own warm shutdown does first (the `Tasks` bootstep's stop).
            consumer.task_consumer.cancel()
        _drop_unstarted(consumer)
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
        consumer = self.loop.consumer
        running = _running_requests()
        if not cutting and any(request.id not in known for request in running):
            return None
        cancelled = []
        pool = consumer.pool
        _drop_unstarted(consumer)  # first: an ended task's process takes no other
        if running:
            if _can_stop_tasks(pool):
                # Celery's soft-shutdown step (5.5 and 5.6 named it differently).
                cancel = (
                    getattr(consumer, "cancel_active_requests", None)
                    or consumer.cancel_all_unacked_requests
                )
                cancel()
            for request in running:
                stoppable = _can_stop_tasks(pool)
                # A thread cannot be stopped: the task runs on until the process exits.
                self.unstoppable += 0 if stoppable else 1
                if not (request.task.acks_late and not request.acknowledged):
                    # Acknowledged when it started (early ack): nothing to give back.
                    cancelled.append(task_label(request))
                elif not stoppable:
                    # Its late ack must never reach the broker, which is given the
                    # message back below.
                    request.acknowledged = True
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
            if task_id not in ids and task_id not in self._handed:
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
        if self.loop.consumer is None:
            return  # not a worker (a process that imports the app to send tasks)
        held = await self.loop.on_hub(self.stop_consuming)
        logger.info(
            "stopped consuming tasks; %d ETA task%s held for the broker",
            len(held),
            "" if len(held) == 1 else "s",
            extra={"phase": "announce", "held": held},
        )

    async def drain(self) -> None:
        """The drain hook: wait for the tasks, hand back at the drain's end, then log.

        The hand-back (ending tasks, restoring messages: broker round trips on the
        worker's loop) starts `_HAND_BACK` seconds before the drain's end, so that it is
        done when graceshut ends the tasks' jobs there; they are then reported as ended
        (``abandoned``), named as requests are.
        """
        if self.loop.consumer is None:
            return
        end = anyio.current_effective_deadline()  # the drain's end: the hook is cut there
        cut_at = end - min(_HAND_BACK, max(0.0, end - anyio.current_time()) / 3)
        back = None
        while back is None:
            # Polled: the jobs change with each look of the hub (4 times a second).
            while self._jobs and anyio.current_time() < cut_at:  # noqa: ASYNC110
                await anyio.sleep(0.05)
            cutting = bool(self._jobs)
            self._handed.update(self._jobs)  # from here on, their end is the drain's
            hand_back = functools.partial(self.hand_back, cutting, frozenset(self._jobs))
            with anyio.CancelScope(shield=True) as waiting:
                # The hub gives the messages back whether this waits or not; the report
                # names them only if it does, a moment past the drain's end if need be.
                waiting.deadline = end + _HAND_BACK_OVERRUN
                back = await self.loop.on_hub(hand_back)
            if waiting.cancelled_caught:
                logger.warning(
                    "the hand-back to the broker was still under way %gs after the drain's "
                    "end: the report does not name its tasks",
                    _HAND_BACK_OVERRUN,
                    extra={"phase": "drain"},
                )
                return
            if back is None:  # a task started that the last look missed: wait for it
                await anyio.sleep(HEARTBEAT)
        self._note(back)
        # graceshut's drain ends them a moment later, and names them.
        while any(not job.scope.cancel_called for job in self._jobs.values()):  # noqa: ASYNC110
            await anyio.sleep(0.02)
        for task_id, job in list(self._jobs.items()):
            del self._jobs[task_id]
            self._ended.add(task_id)
            self.coordinator.in_flight.end_job(job.scope)

    def _note(self, back: HandBack) -> None:
        """Record and log what the hand-back did (before anything that can be cut)."""
        for label in back.restored:
            self.coordinator.note_task("restored", label)
        for label in back.cancelled:
            self.coordinator.note_task("cancelled", label)
        logger.info(
            "%d task%s handed back to the broker%s%s",
            len(back.restored),
            "" if len(back.restored) == 1 else "s",
            f", {len(back.cancelled)} cancelled (acknowledged at start)" if back.cancelled else "",
            f": {', '.join(back.restored[:_NAMED])}" if back.restored else "",
            extra={
                "phase": "drain",
                "restored": list(back.restored),
                "cancelled": list(back.cancelled),
            },
        )

    # -- after the run ------------------------------------------------------------------

    def after_report(self, report: ShutdownReport) -> None:
        """Report listener: the process exits inside the grace period, whatever runs on.

        Celery's own stop waits for the pool, and a thread pool's running task cannot be
        stopped: at ``grace period - safety_margin / 2`` (a second after the report when
        the drain ended such a task) the process ends with the report's status (the
        messages were handed back already).
        """
        if self.loop.consumer is None:
            return
        self.loop.closing = True
        # After every report listener, the signal chain's hand-on to Celery included.
        self.coordinator.call_soon_threadsafe(self.loop.wake)
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

    return _copied(active_requests)


def _copied(requests: Any) -> list[Any]:
    """A copy of one of Celery's sets of requests, which threads may change meanwhile."""
    for _ in range(5):
        try:
            return list(requests)
        except RuntimeError:  # changed size while copied (the threads pool accepts a task)
            continue
    return list(requests)


def _drop_unstarted(consumer: Any) -> None:
    """Drop the prefetched tasks no process has started: they start nowhere here.

    They wait for a free process in the worker's semaphore (prefork) or the pool's
    buffer. Their messages stay unacknowledged and go back to the broker with the
    others: what Celery itself does when it loses its connection (``on_close``).
    """
    semaphore = getattr(consumer.controller, "semaphore", None)
    if semaphore is not None:
        semaphore.clear()
    pool = consumer.pool
    flush = getattr(pool, "flush", None)
    if _can_stop_tasks(pool) and callable(flush):
        flush()
    executor = getattr(pool, "executor", None)
    if isinstance(executor, concurrent.futures.ThreadPoolExecutor):
        # The threads pool queues them in its executor: cancel them there. The threads
        # running tasks go on; a new executor takes what the pool may still be given.
        pool.executor = concurrent.futures.ThreadPoolExecutor(max_workers=pool.limit)
        executor.shutdown(wait=False, cancel_futures=True)


def _can_stop_tasks(pool: Any) -> bool:
    """Whether the pool can end a running task (prefork can; threads cannot)."""
    from celery.concurrency.base import BasePool  # noqa: PLC0415 - optional dependency

    # Prefork sets ``terminate_job`` on the instance when its pool starts.
    return getattr(pool.terminate_job, "__func__", None) is not BasePool.terminate_job
