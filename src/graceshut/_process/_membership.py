"""This worker's place in its pod: what the coordinator needs of the worker group.

`_workers.WorkerGroup` is the protocol (files and datagrams in a shared directory);
this is how one coordinator uses it: join at lifespan startup and listen for siblings'
triggers, claim the pod's first trigger, tell whether siblings serve on, publish and
gather reports, leave.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import anyio

from .._core._loop import LoopHandle
from ._workers import WorkerGroup

logger = logging.getLogger("graceshut")

SiblingTrigger = Callable[[str, float], None]


class PodMembership:
    """One worker process among the others of its pod (gunicorn, ``uvicorn --workers``)."""

    def __init__(self, group: WorkerGroup) -> None:
        self._group = group
        self._listener = anyio.CancelScope()

    @classmethod
    def join(cls) -> PodMembership | None:
        """Join this process's group, if it has one.

        None when the process serves alone, or when the group's directory cannot be
        used (logged). Then call `follow` to act on the siblings' triggers.
        """
        try:
            # No writable temporary directory at all makes gettempdir() raise too.
            group = WorkerGroup.detect()
            if group is None:
                return None
            group.join()
        except OSError as exc:
            logger.warning(
                "cannot join the other worker processes (%s): this worker will shut down on "
                "its own triggers only",
                exc,
            )
            return None
        return cls(group)

    def follow(self, loop: LoopHandle, on_trigger: SiblingTrigger) -> None:
        """Call *on_trigger* (reason, start time) for each trigger a sibling sends.

        Also at once for a trigger that came before this worker joined (a worker
        started, or restarted, after the pod's shutdown began): call it once the
        membership is in place, so that this worker knows it does not lead.
        """
        loop.spawn(lambda: self.listen(on_trigger))
        existing = self._group.trigger()
        if existing is not None:
            on_trigger(*existing)

    async def listen(self, on_trigger: SiblingTrigger) -> None:
        """Act on siblings' triggers until `leave`."""
        with self._listener:
            await self._group.listen(on_trigger)

    def leave(self) -> None:
        """Stop listening and unregister (the last worker removes the directory)."""
        self._listener.cancel()
        self._group.leave()

    def triggered(self) -> bool:
        """Whether any worker of the pod started a shutdown (one ``stat``)."""
        return self._group.triggered()

    def claim(self, reason: str, started_at: float) -> tuple[bool, str, float]:
        """Claim the pod's first trigger and tell the siblings.

        Returns whether this worker leads (runs the once-per-pod handlers), and the
        pod's reason and start time, which are a sibling's when it claimed first.
        """
        leader, reason, started_at = self._group.claim(reason, started_at)
        self._group.broadcast("trigger", reason=reason, started_at=started_at)
        return leader, reason, started_at

    def mark_stopping(self) -> None:
        """Record that this worker stops on its own signal, not with the pod."""
        self._group.mark_stopping()

    def others_serving(self) -> bool:
        """Whether a sibling serves on: this worker is being recycled, not the pod stopped."""
        return self._group.others_serving()

    def publish(self, report: dict[str, Any]) -> None:
        """Write this worker's report for the shutdown route to gather."""
        self._group.publish_report(report)

    async def gather(self, deadline: float) -> list[dict[str, Any]]:
        """Every live worker's report, waiting for them until *deadline* (monotonic)."""
        return await self._group.gather_reports(deadline)
