"""The write-behind buffer's rows: appended by requests, taken in batches by one writer.

Knows nothing of SQL: `graceshut.contrib.sqlalchemy.WriteBehindBuffer` writes the
batches. One lock guards the rows, the closed flag and the counters, so an append, a
batch's commit and a spill never see each other half done.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import threading
import time
from typing import Any

from ._errors import IntegrationError

Row = dict[str, Any]
"""One buffered row: column keys to values."""


class BufferClosedError(IntegrationError):
    """`append` after the shutdown flush: the row would never be written, so it is refused."""


class BufferFullError(IntegrationError):
    """`append` while ``max_pending`` rows wait: the database is not keeping up (or down)."""


@dataclasses.dataclass
class FlushRun:
    """One flush's walk through the rows."""

    final: bool
    """Drain everything, late appends included, then close the buffer."""
    deadline: float | None
    stop: threading.Event
    limit: int | None
    """Rows to write at most: those waiting when the run began (None when final)."""
    written: int = 0
    batches: int = 0
    started: float = dataclasses.field(default_factory=time.monotonic)

    def fields(self) -> dict[str, float]:
        """What the run did so far, for a log record's ``extra``."""
        return {
            "written": self.written,
            "batches": self.batches,
            "duration": time.monotonic() - self.started,
        }


class RowQueue:
    """Rows waiting to be written, in order; thread-safe."""

    def __init__(self, name: str, *, max_pending: int | None) -> None:
        self._name = name
        self._max_pending = max_pending
        self._rows: collections.deque[Row] = collections.deque()
        self._lock = threading.Lock()  # guards _rows, closed and the counters
        self.closed = False
        """True once the final flush found nothing left, or a spill took the rest."""
        self.accepted = 0
        self.written = 0

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, rows: list[Row]) -> None:
        """Append *rows*: all of them, or (on an error) none.

        Raises:
            BufferClosedError: The shutdown flush has finished.
            BufferFullError: ``max_pending`` rows are waiting.
        """
        with self._lock:
            if self.closed:
                raise BufferClosedError(
                    f"{self._name}: the shutdown flush has run, a row appended now would be lost"
                )
            if self._max_pending is not None and len(self._rows) + len(rows) > self._max_pending:
                raise BufferFullError(
                    f"{self._name}: {len(self._rows)} rows already wait (max_pending="
                    f"{self._max_pending}): the database is not keeping up"
                )
            self._rows.extend(rows)
            self.accepted += len(rows)

    def close(self) -> None:
        """Refuse appends from now on."""
        with self._lock:
            self.closed = True

    def next_batch(self, run: FlushRun, batch_size: int) -> list[Row]:
        """The next batch, left in the queue until it commits; [] when the run is over.

        A final run that finds the queue empty closes it, under the same lock as `add`:
        every row accepted before that moment is in this run's reach.
        """
        if run.stop.is_set() or (run.deadline is not None and time.monotonic() >= run.deadline):
            return []
        count = batch_size
        if run.limit is not None:
            count = min(count, run.limit - run.written)
        with self._lock:
            batch = list(itertools.islice(self._rows, count))
            if not batch and run.final:
                self.closed = True
            return batch

    def committed(self, run: FlushRun, batch: list[Row]) -> None:
        """Drop a committed batch from the front of the queue, and count it."""
        with self._lock:
            # A spill may have taken the rows meanwhile (this writer outlived its wait).
            for _ in range(min(len(batch), len(self._rows))):
                self._rows.popleft()
            self.written += len(batch)
        run.written += len(batch)
        run.batches += 1

    def take_all(self) -> list[Row]:
        """Close the queue and hand over every row still in it (for a spill)."""
        with self._lock:
            self.closed = True
            rows = list(self._rows)
            self._rows.clear()
        return rows
