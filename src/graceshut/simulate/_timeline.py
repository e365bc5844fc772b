"""What happened when: events on the monotonic clock, told relative to the pod's deletion."""

from __future__ import annotations

import dataclasses
import threading
import time


@dataclasses.dataclass(frozen=True)
class Event:
    """One moment of the run."""

    at: float
    """`time.monotonic` when it happened."""
    what: str
    detail: str = ""


class Timeline:
    """A thread-safe list of events; ``origin`` is the pod's deletion once it happened."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.origin: float | None = None
        self._events: list[Event] = []
        self._lock = threading.Lock()

    def add(self, what: str, detail: str = "", *, at: float | None = None) -> Event:
        """Record an event, now or at *at* (a `time.monotonic` value)."""
        event = Event(time.monotonic() if at is None else at, what, detail)
        with self._lock:
            self._events.append(event)
        return event

    def relative(self, at: float) -> float:
        """Seconds since the deletion (negative before it), or since the run started."""
        origin = self.started if self.origin is None else self.origin
        return at - origin

    @property
    def events(self) -> list[Event]:
        """The events in time order."""
        with self._lock:
            return sorted(self._events, key=lambda e: e.at)
