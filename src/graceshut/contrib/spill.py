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

import dataclasses
import datetime as dt
import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .._core._handlers import is_async_callable
from .._core._threads import run_in_daemon_thread
from . import _records
from ._errors import IntegrationError, describe_error
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
    "Spilled",
]

logger = logging.getLogger("graceshut")

_CHUNK = 1000  # records per write(): a SIGKILL loses at most the chunk being encoded


class SpillError(IntegrationError, ValueError):
    """The spill directory is missing, not a directory, or not writable."""


class SpillReplayError(IntegrationError):
    """The writer failed during a replay: the file it was on stays whole for the next one.

    Attributes:
        written: Records written by this replay before the failure.
        pending: Records left in spill files.
    """

    def __init__(self, message: str, *, written: int, pending: int) -> None:
        super().__init__(message)
        self.written = written
        self.pending = pending


@dataclasses.dataclass(frozen=True)
class Spilled:
    """What one spill wrote: how many records, and where (a file path, or ``log``)."""

    records: int
    to: str


@dataclasses.dataclass(frozen=True)
class ReplayResult:
    """What a replay did.

    Attributes:
        written: Records handed to the writer (and written: it returned).
        files: Spill files replayed and removed.
        rejected: Lines that could not be read (torn by a kill, or damaged): kept, next
            to the file they came from, in ``*.rejected`` files that replay never reads.
        rejected_files: The ``*.rejected`` files of this stream, old ones included.
    """

    written: int = 0
    files: int = 0
    rejected: int = 0
    rejected_files: tuple[Path, ...] = ()


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
        """
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
        target = self.path / f"{_records.safe_name(stream)}~{stamp}~{os.getpid()}.jsonl"
        count = 0
        unencodable = Unencodable(stream)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o640)
        try:
            if self.fsync:  # the file's name survives a crash too
                _records.fsync_directory(self.path)
            chunk: list[bytes] = []
            for line in unencodable.skip(_records.line, records):
                chunk.append(line)
                if len(chunk) >= _CHUNK:
                    _records.write_all(fd, b"".join(chunk))
                    count += len(chunk)
                    chunk.clear()
            _records.write_all(fd, b"".join(chunk))
            count += len(chunk)
            if self.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        if not count:
            target.unlink()
        spilled = Spilled(count, str(target) if count else str(self.path))
        unencodable.check(spilled)
        return spilled

    def files(self, stream: str) -> list[Path]:
        """The spill files of *stream* waiting for a replay, oldest first."""
        return sorted(self.path.glob(f"{_records.safe_name(stream)}~*.jsonl"))

    def rejected_files(self, stream: str) -> list[Path]:
        """The ``*.rejected`` files of *stream*: lines a replay could not read."""
        return sorted(self.path.glob(f"{_records.safe_name(stream)}~*.rejected"))

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
            SpillReplayError: *writer* failed; its file stays for the next replay.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r} must be a positive integer")
        written = files = rejected = 0
        is_async = is_async_callable(writer)
        async with _records.replay_lock(self.path):
            for path in self.files(stream):
                records, bad = _records.read(path)
                for start in range(0, len(records), batch_size):
                    batch = records[start : start + batch_size]
                    try:
                        await _records.call_writer(writer, batch, is_async=is_async)
                    except Exception as exc:
                        pending = (
                            len(records)
                            - start
                            + sum(len(_records.read(p)[0]) for p in self.files(stream) if p > path)
                        )
                        raise SpillReplayError(
                            f"replay of {path}: {written} records written, then a batch of "
                            f"{len(batch)} failed; {pending} records stay spilled: "
                            f"{describe_error(exc)}",
                            written=written,
                            pending=pending,
                        ) from exc
                    written += len(batch)
                if bad:
                    _records.keep_rejected(path, bad, fsync=self.fsync)
                    rejected += len(bad)
                path.unlink()
                files += 1
            if files and self.fsync:
                _records.fsync_directory(self.path)
        result = ReplayResult(written, files, rejected, tuple(self.rejected_files(stream)))
        fields = {
            "spill": stream,
            "path": str(self.path),
            "written": written,
            "files": files,
            "rejected": rejected,
        }
        if result.rejected_files:
            logger.warning(
                "replay of %s: %d records written from %d files; %d unreadable lines kept in %s",
                stream,
                written,
                files,
                rejected,
                ", ".join(str(p) for p in result.rejected_files),
                extra=fields,
            )
        elif files:
            logger.info(
                "replay of %s: %d records written from %d files",
                stream,
                written,
                files,
                extra=fields,
            )
        return result


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

    async def __call__(self, ctx: ShutdownContext) -> dict[str, Any]:
        """Spill the records left behind; the report's detail says how many and where."""
        started = time.monotonic()
        records = await self._take(ctx)
        spilled = await run_in_daemon_thread(
            lambda: self.target.spill(self.stream, records), name=f"graceshut {self.name}"
        )
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
