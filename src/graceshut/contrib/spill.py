"""Spill: where the data goes when the handler that should have written it failed.

Two targets, each a `SpillTarget` that the integrations take as ``spill=``:

- `SpillDirectory`: JSON lines files on a volume the pod keeps (a StatefulSet's
  PersistentVolume, a hostPath), replayed at the next start by
  `SpillDirectory.replay` (through ``WriteBehindBuffer.replay``,
  ``MappingFlusher.replay``, ``Webhook.replay``).
- `SpillLog`: one log line per record, for when no volume exists: the last resort,
  since getting the records back means fishing them out of a log pipeline.

Every line of a spill file carries the CRC-32 of its record: a process killed in the
middle of a spill (the kubelet's SIGKILL) leaves complete lines, which replay, and at
most one torn last line, which replay reports and keeps aside instead of writing it.
No extra is needed: this module uses the standard library only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence, Sized
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .._core._threads import run_in_daemon_thread
from . import _records, _replay
from ._errors import IntegrationError, describe_error
from ._replay import ReplayResult, SpillReplayError
from ._unencodable import SpillEncodeError, Unencodable

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from .._core._context import ShutdownContext

__all__ = [
    "ReplayResult",
    "SpillDirectory",
    "SpillEncodeError",
    "SpillError",
    "SpillFallback",
    "SpillLog",
    "SpillReplayError",
    "SpillTarget",
    "SpillWriteError",
    "Spilled",
]

logger = logging.getLogger("graceshut")

_CHUNK = 1000  # records per write(): a SIGKILL loses at most the chunk being encoded


class SpillError(IntegrationError, ValueError):
    """The spill directory is missing, not a directory, or not writable."""


@dataclasses.dataclass(frozen=True)
class Spilled:
    """What one spill wrote: how many records, and where (a file path, or ``log``)."""

    records: int
    to: str


class SpillWriteError(IntegrationError):
    """A spill file could not be written whole (a full volume, a failing disk).

    The file keeps the records that reached it, whole lines only, and a replay writes
    them; the others are not saved anywhere.

    Attributes:
        spilled: What reached the file.
    """

    def __init__(self, message: str, *, spilled: Spilled) -> None:
        super().__init__(message)
        self.spilled = spilled


class SpillTarget(Protocol):
    """Where a fallback spills: `SpillDirectory` or `SpillLog`."""

    @property
    def name(self) -> str:
        """The fallback's name in logs and the report."""
        ...

    def spill(self, stream: str, records: Iterable[Any]) -> Spilled:
        """Write *records* under *stream* (blocking); say how many, and where."""
        ...


class SpillDirectory:
    """JSON lines files in *path*, one file per spill, replayed at the next start.

    The directory must exist and be writable now: a bad path fails here, at startup,
    not at shutdown when nobody can fix it. Mount a volume that outlives the pod there
    (a StatefulSet's PersistentVolume: the next pod with the same name replays it);
    an ``emptyDir`` survives container restarts only, not the pod.

    Args:
        path: The directory.
        fsync: Flush each spill file and the directory to the disk before the spill
            counts as done. Leave it on: a SIGKILL alone does not lose written lines,
            but a node that goes down with the pod does without it.

    Raises:
        SpillError: *path* does not exist, is not a directory or is not writable.

    Example::

        spill = SpillDirectory("/var/lib/app/spill")
        events = WriteBehindBuffer(coordinator, engine, events_table, spill=spill)
    """

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self.name = f"spill.file[{self.path}]"
        _check_writable(self.path)

    def spill(self, stream: str, records: Iterable[Any]) -> Spilled:
        """Append *records* to a new file of *stream*, a checksummed line each; fsync it.

        Written in chunks as it goes: a kill in the middle leaves the chunks already
        written, which replay.

        Raises:
            SpillWriteError: The file could not be written whole (a full volume): it
                keeps the records that reached it, and the error says how many.
            SpillEncodeError: Some records have a value with no JSON form; the others
                were spilled.
        """
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
        target = self.path / f"{_records.safe_name(stream)}~{stamp}~{os.getpid()}.jsonl"
        unencodable = Unencodable(stream)
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o640)
        except OSError as exc:
            raise self._write_error(stream, target, records, 0, exc) from exc
        writer = _records.LineWriter(fd)
        failure: OSError | None = None
        try:
            if self.fsync:  # the file's name survives a crash too
                _records.fsync_directory(self.path)
            chunk: list[bytes] = []
            for line in unencodable.skip(_records.line, records):
                chunk.append(line)
                if len(chunk) >= _CHUNK:
                    writer.write(chunk)
                    chunk.clear()
            writer.write(chunk)
            if self.fsync:
                os.fsync(fd)
        except OSError as exc:  # a full volume: keep the whole lines that got in
            failure = exc
            writer.cut()
        finally:
            os.close(fd)
            if not writer.lines:
                with contextlib.suppress(OSError):
                    target.unlink()
        if failure is not None:
            raise self._write_error(stream, target, records, writer.lines, failure) from failure
        spilled = Spilled(writer.lines, str(target) if writer.lines else str(self.path))
        unencodable.check(spilled)
        return spilled

    def _write_error(
        self, stream: str, target: Path, records: Iterable[Any], saved: int, exc: OSError
    ) -> SpillWriteError:
        spilled = Spilled(saved, str(target) if saved else str(self.path))
        of = f" of {len(records)}" if isinstance(records, Sized) else ""
        return SpillWriteError(
            f"spill of {stream}: {saved}{of} records written to {spilled.to}, then "
            f"{describe_error(exc)}; the rest are not saved",
            spilled=spilled,
        )

    def files(self, stream: str) -> list[Path]:
        """The spill files of *stream* waiting for a replay, oldest first."""
        return _replay.stream_files(self.path, stream, ".jsonl")

    def rejected_files(self, stream: str) -> list[Path]:
        """The ``*.rejected`` files of *stream*: lines a replay could not read."""
        return _replay.stream_files(self.path, stream, ".rejected")

    async def replay(
        self,
        stream: str,
        writer: Callable[[list[Any]], object],
        *,
        batch_size: int = 1000,
    ) -> ReplayResult:
        """Hand the records spilled under *stream* to *writer*, then remove their files.

        Files go oldest first, in batches of *batch_size* records; *writer* is a plain
        function (run in a thread of its own) or an ``async def``. A file is removed
        once every record in it was written, so a replay cut short writes some records
        again next time: make the writes idempotent (client-made keys and
        ``on_conflict_do_nothing()``; Redis ``SET``). Lines that cannot be read are
        moved to a ``*.rejected`` file and reported, never dropped. Replays of one
        directory never overlap (a lock file), so worker processes may all call it.

        Raises:
            SpillReplayError: *writer* failed, or a file could not be read or its
                unreadable lines kept aside (a full volume): the file it was on stays
                for the next replay, and the error says what was written and what waits.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r} must be a positive integer")
        return await _replay.replay(
            self.path, stream, writer, batch_size=batch_size, fsync=self.fsync
        )


class SpillLog:
    """One log line per record: the last resort, when no volume outlives the pod.

    Each line is logged at *level* to the ``graceshut.spill`` logger, with the message
    ``graceshut-spill <stream> <record as JSON>`` and the fields ``spill`` (the stream)
    and ``record`` (the JSON text) for a log pipeline to find and route. Nothing replays
    these: getting the records back means collecting them from the logs, and logs can
    drop lines under pressure (a full node disk, a rate-limited collector).

    Args:
        logger: The logger, or its name.
        level: The level of the lines.
    """

    def __init__(
        self, logger: logging.Logger | str = "graceshut.spill", *, level: int = logging.WARNING
    ) -> None:
        self.logger = logging.getLogger(logger) if isinstance(logger, str) else logger
        self.level = level
        self.name = f"spill.log[{self.logger.name}]"

    def spill(self, stream: str, records: Iterable[Any]) -> Spilled:
        """Log each record on a line of its own."""
        count = 0
        unencodable = Unencodable(stream)
        for line in unencodable.skip(_records.encode, records):
            text = line.decode()
            self.logger.log(
                self.level,
                "graceshut-spill %s %s",
                stream,
                text,
                extra={"spill": stream, "record": text},
            )
            count += 1
        spilled = Spilled(count, "log")
        unencodable.check(spilled)
        return spilled


class SpillFallback:
    """A handler's fallback that spills what *take* hands it; made by the integrations.

    Args:
        target: Where to spill.
        stream: The records' kind: the spill file's name starts with it.
        take: Called with the context; returns the records to spill (the ones the
            handler left), and stops the integration from writing them elsewhere.
        records: What the records are, in the report (``rows``, ``entries``...).

    Attributes:
        saved: Records the target saved (in a spill file, whole and fsync'd, or logged),
            over every run.
        lost: Records taken for a spill that did not save them: the rest of a file that
            a full volume cut short, or records with no JSON form; all the records of a
            spill that failed without saying how many it saved. A spill cut off by the
            deadline counts in neither (its thread may still be writing).
    """

    def __init__(
        self,
        target: SpillTarget,
        stream: str,
        take: Callable[[ShutdownContext], Awaitable[Sequence[Any]]],
        records: str,
    ) -> None:
        self.target = target
        self.stream = stream
        self.name = target.name
        self._take = take
        self._unit = records
        self.saved = 0
        self.lost = 0

    async def __call__(self, ctx: ShutdownContext) -> dict[str, Any]:
        """Spill the records left behind; the report's detail says how many and where."""
        started = time.monotonic()
        records = await self._take(ctx)
        try:
            spilled = await run_in_daemon_thread(
                lambda: self.target.spill(self.stream, records), name=f"graceshut {self.name}"
            )
        except (SpillWriteError, SpillEncodeError) as exc:
            self._count(exc.spilled.records, len(records))
            raise
        except Exception:
            self._count(0, len(records))
            raise
        self._count(spilled.records, len(records))
        ctx.logger.warning(
            "%s: spilled %d %s to %s after %s",
            self.stream,
            spilled.records,
            self._unit,
            spilled.to,
            type(ctx.error).__name__ if ctx.error is not None else "a failure",
            extra={
                "handler": self.stream,
                "phase": ctx.phase.value,
                "spilled": spilled.records,
                "to": spilled.to,
                "duration": time.monotonic() - started,
            },
        )
        return {"spilled": spilled.records, "records": self._unit, "to": spilled.to}

    def _count(self, saved: int, taken: int) -> None:
        self.saved += saved
        self.lost += max(0, taken - saved)


def _check_writable(path: Path) -> None:
    if not path.exists():
        raise SpillError(
            f"spill directory {str(path)!r} does not exist: create it, or mount the volume there"
        )
    if not path.is_dir():
        raise SpillError(f"spill directory {str(path)!r} is not a directory")
    # os.access misjudges read-only mounts and root's rights: try for real.
    probe = path / f".probe~{os.getpid()}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise SpillError(
            f"spill directory {str(path)!r} is not writable by this process: {exc.strerror or exc}"
        ) from None
    os.close(fd)
    probe.unlink()
