"""The replay of a stream's spill files: oldest first, each removed once all of it is written.

Part of `graceshut.contrib.spill`, which re-exports `ReplayResult` and `SpillReplayError`.
A replay that cannot go on raises `SpillReplayError` whatever stopped it (the writer,
or the file work on a full or failing volume), so that an app that catches it to start
anyway can always start; it never leaves a temporary file behind.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .._core._handlers import is_async_callable
from . import _records
from ._errors import IntegrationError, describe_error

logger = logging.getLogger("graceshut")


class SpillReplayError(IntegrationError):
    """A replay stopped: the file it was on stays whole for the next one.

    The writer failed, or the file work did: a spill file could not be read, or its
    unreadable lines could not be kept aside (a full volume).

    Attributes:
        written: Records written by this replay before it stopped.
        pending: Records not written yet, left in spill files for the next replay. The
            file the replay stopped on stays whole: the next replay writes the records
            it had written from that file again.
    """

    def __init__(self, message: str, *, written: int, pending: int) -> None:
        super().__init__(message)
        self.written = written
        self.pending = pending


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


def stream_files(directory: Path, stream: str, suffix: str) -> list[Path]:
    """The files of *stream* in *directory* that end in *suffix*, oldest first."""
    return sorted(directory.glob(f"{_records.safe_name(stream)}~*{suffix}"))


async def replay(
    directory: Path,
    stream: str,
    writer: Callable[[list[Any]], object],
    *,
    batch_size: int,
    fsync: bool,
) -> ReplayResult:
    """`SpillDirectory.replay`'s work, under the directory's replay lock."""
    written = files = rejected = 0
    is_async = is_async_callable(writer)

    def stopped(path: Path, cause: BaseException, what: str, left: int = 0) -> SpillReplayError:
        later = sum(_count(p) for p in stream_files(directory, stream, ".jsonl") if p > path)
        pending = left + later
        return SpillReplayError(
            f"replay of {path}: {written} records written, then {what}: "
            f"{describe_error(cause)}; {pending} records not written yet stay spilled, and "
            "the file stays whole for the next replay",
            written=written,
            pending=pending,
        )

    try:
        async with _records.replay_lock(directory):
            for path in stream_files(directory, stream, ".jsonl"):
                try:
                    records, bad = _records.read(path)
                except OSError as exc:
                    raise stopped(path, exc, "the file could not be read") from exc
                for start in range(0, len(records), batch_size):
                    batch = records[start : start + batch_size]
                    try:
                        await _records.call_writer(writer, batch, is_async=is_async)
                    except Exception as exc:
                        what = f"a batch of {len(batch)} failed"
                        raise stopped(path, exc, what, len(records) - start) from exc
                    written += len(batch)
                try:
                    if bad:
                        _records.keep_rejected(path, bad, fsync=fsync)
                    path.unlink()
                except OSError as exc:
                    kept = path.with_suffix(".rejected").name
                    what = f"its {len(bad)} unreadable lines could not be kept in {kept}"
                    raise stopped(path, exc, what) from exc
                rejected += len(bad)
                files += 1
            if files and fsync:
                _records.fsync_directory(directory)
    except OSError as exc:  # the lock file, or the directory's fsync
        raise stopped(directory, exc, "the spill directory failed") from exc
    result = ReplayResult(
        written, files, rejected, tuple(stream_files(directory, stream, ".rejected"))
    )
    _log(directory, stream, result)
    return result


def _count(path: Path) -> int:
    """Records in a spill file; 0 for one that cannot be read now."""
    try:
        return len(_records.read(path)[0])
    except OSError:
        return 0


def _log(directory: Path, stream: str, result: ReplayResult) -> None:
    fields = {
        "spill": stream,
        "path": str(directory),
        "written": result.written,
        "files": result.files,
        "rejected": result.rejected,
    }
    if result.rejected_files:
        logger.warning(
            "replay of %s: %d records written from %d files; %d unreadable lines kept in %s",
            stream,
            result.written,
            result.files,
            result.rejected,
            ", ".join(str(p) for p in result.rejected_files),
            extra=fields,
        )
    elif result.files:
        logger.info(
            "replay of %s: %d records written from %d files",
            stream,
            result.written,
            result.files,
            extra=fields,
        )
