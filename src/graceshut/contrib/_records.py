"""Spill files: records as checksummed JSON lines, and the file work of spill and replay.

A spill file line is ``{"crc32":<CRC-32 of the record's bytes>,"record":<the record>}``:
JSON on its own (jq reads it), and a line torn by a kill or damaged on the disk fails
the check, so replay can tell it from a good one.

JSON has no dates, decimals, UUIDs or bytes, and a spilled row must come back with the
very values it had, or the database would store a string where a timestamp was (SQLite
through SQLAlchemy refuses it outright). Such values are written as a two-key object,
``{"$type": "datetime", "value": "2026-11-30T12:00:00+00:00"}``, and read back as the
original type. A mapping of the user's that has exactly the keys ``$type`` and
``value`` with one of these type names would be read back as that type.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import decimal
import json
import os
import re
import uuid
import zlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio

from .._core._handlers import refuse_awaitable
from .._core._threads import run_in_daemon_thread

_TYPE = "$type"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_LOCK = ".replay.lock"

_PREFIX = b'{"crc32":'
_MIDDLE = b',"record":'
_SUFFIX = b"}\n"

_ENCODERS: list[tuple[type, str, Callable[[Any], Any]]] = [
    # datetime before date: a datetime is a date too.
    (dt.datetime, "datetime", lambda v: v.isoformat()),
    (dt.date, "date", lambda v: v.isoformat()),
    (dt.time, "time", lambda v: v.isoformat()),
    (dt.timedelta, "timedelta", lambda v: [v.days, v.seconds, v.microseconds]),
    (decimal.Decimal, "decimal", str),
    (uuid.UUID, "uuid", str),
    (bytes, "bytes", lambda v: base64.b64encode(v).decode()),
    (tuple, "tuple", list),
    (frozenset, "frozenset", list),
    (set, "set", list),
]

_DECODERS: dict[str, Callable[[Any], Any]] = {
    "datetime": dt.datetime.fromisoformat,
    "date": dt.date.fromisoformat,
    "time": dt.time.fromisoformat,
    "timedelta": lambda v: dt.timedelta(days=v[0], seconds=v[1], microseconds=v[2]),
    "decimal": decimal.Decimal,
    "uuid": uuid.UUID,
    "bytes": base64.b64decode,
    "tuple": tuple,
    "frozenset": frozenset,
    "set": set,
}


def encode(record: Any) -> bytes:
    """*record* as one line of compact JSON (UTF-8), tagged values included.

    Raises:
        TypeError: A value of a type with no JSON form here.
    """
    return json.dumps(
        _tag(record), separators=(",", ":"), ensure_ascii=False, allow_nan=True
    ).encode()


def decode(data: bytes) -> Any:
    """The record that `encode` wrote.

    Raises:
        ValueError: Not JSON, not UTF-8, or a tagged value that does not read back.
    """
    try:
        return json.loads(data, object_hook=_untag)
    except (TypeError, KeyError, IndexError, decimal.InvalidOperation) as exc:
        raise ValueError(str(exc)) from exc


def _tag(value: Any) -> Any:
    # Walk the record ourselves: json's `default` never sees tuples, which it writes
    # as lists, and a tuple key in a cache must come back as a tuple.
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, dict):
        return {_key(k): _tag(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_tag(v) for v in value]
    for kind, name, convert in _ENCODERS:
        if isinstance(value, kind):
            converted = convert(value)
            if isinstance(converted, list):
                converted = [_tag(v) for v in converted]
            return {_TYPE: name, "value": converted}
    raise TypeError(
        f"cannot spill a value of type {type(value).__name__}: supported are JSON types, "
        "datetime, date, time, timedelta, Decimal, UUID, bytes, tuple and set"
    )


def _key(key: Any) -> str:
    if isinstance(key, str):
        return key
    raise TypeError(f"cannot spill a mapping with a key of type {type(key).__name__}: {key!r}")


def _untag(obj: dict[str, Any]) -> Any:
    if len(obj) == 2 and _TYPE in obj and "value" in obj:  # noqa: PLR2004 - the two keys
        decoder = _DECODERS.get(obj[_TYPE])
        if decoder is not None:
            return decoder(obj["value"])
    return obj


# -- spill files ------------------------------------------------------------------------------


def line(record: Any) -> bytes:
    """*record* as one line of a spill file, newline included."""
    payload = encode(record)
    return b"%s%d%s%s%s" % (_PREFIX, zlib.crc32(payload), _MIDDLE, payload, _SUFFIX)


def read(path: Path) -> tuple[list[Any], list[bytes]]:
    """The records of a spill file, and the lines that are not whole, checked records."""
    records: list[Any] = []
    bad: list[bytes] = []
    with path.open("rb") as file:
        for raw in file:
            record = _parse(raw)
            if record is _BAD:
                bad.append(raw)
            else:
                records.append(record)
    return records, bad


_BAD: Any = object()


def _parse(raw: bytes) -> Any:
    if not (raw.startswith(_PREFIX) and raw.endswith(_SUFFIX)):
        return _BAD
    middle = raw.find(_MIDDLE)
    if middle < 0:
        return _BAD
    payload = raw[middle + len(_MIDDLE) : -len(_SUFFIX)]
    try:
        if int(raw[len(_PREFIX) : middle]) != zlib.crc32(payload):
            return _BAD
        return decode(payload)
    except ValueError:  # not a number, not JSON, not UTF-8, an unknown tagged type
        return _BAD


def keep_rejected(path: Path, lines: list[bytes], *, fsync: bool) -> None:
    """Write *lines* to ``<path stem>.rejected``, whole or not at all (rename).

    Raises:
        OSError: The file could not be written (a full volume): nothing of it is left.
    """
    target = path.with_suffix(".rejected")
    temporary = path.parent / f"{path.stem}.rejected.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    try:
        try:
            write_all(fd, b"".join(raw if raw.endswith(b"\n") else raw + b"\n" for raw in lines))
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        temporary.replace(target)
    except BaseException:
        with contextlib.suppress(OSError):  # a half-written copy is no use to anyone
            temporary.unlink()
        raise


class LineWriter:
    """Appends lines to a new file, and knows how many of them reached it whole.

    A write to a full volume takes part of the data, then fails: what it took may end
    in a torn line. `cut` drops that line, so the file holds exactly `lines` records.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.lines = 0
        self.size = 0  # bytes of the whole lines written: where the next one starts

    def write(self, lines: list[bytes]) -> None:
        """Write *lines* in one go; on an error, count the ones that got in whole."""
        data = b"".join(lines)
        view = memoryview(data)
        done = 0
        try:
            while done < len(data):
                done += os.write(self.fd, view[done:])
        finally:
            for raw in lines:
                if done < len(raw):
                    break
                done -= len(raw)
                self.lines += 1
                self.size += len(raw)

    def cut(self) -> None:
        """Drop a torn last line (best effort: shrinking a file needs no space)."""
        with contextlib.suppress(OSError):
            os.ftruncate(self.fd, self.size)


def write_all(fd: int, data: bytes) -> None:
    """Write all of *data*: a write to a full disk may take only part of it."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def fsync_directory(path: Path) -> None:
    """Make a file's creation or removal in *path* durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def safe_name(stream: str) -> str:
    """*stream* as the start of a file name: ``sqlalchemy.write_behind_events``."""
    return _UNSAFE.sub("_", stream).strip("_") or "records"


async def call_writer(
    writer: Callable[[list[Any]], object], batch: list[Any], *, is_async: bool
) -> None:
    """Hand *batch* to a replay's writer: async on the loop, sync in a thread."""
    if is_async:
        await writer(batch)  # type: ignore[misc]
        return
    returned = await run_in_daemon_thread(lambda: writer(batch), name="graceshut replay")
    refuse_awaitable(returned, f"the replay writer {writer!r}")


@contextlib.asynccontextmanager
async def replay_lock(directory: Path) -> AsyncIterator[None]:
    """Hold the directory's replay lock: worker processes replay one after the other."""
    import fcntl  # noqa: PLC0415 - POSIX only, as the pods are

    fd = os.open(directory / _LOCK, os.O_WRONLY | os.O_CREAT, 0o640)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                await anyio.sleep(0.05)  # another worker replays: wait for it
        yield
    finally:
        os.close(fd)
