"""Spill and replay on a volume that is full: a real 64 KiB tmpfs, mounted for each test.

The story: the database is down at shutdown and the spill fills its volume; at the next
start the replay runs on that full volume. Mounting needs root (the CI machine runs the
suite as root); without it these tests fail, they do not skip.
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import pytest
import sqlalchemy as sa

import graceshut
from graceshut import Outcome
from graceshut.contrib.spill import (
    SpillDirectory,
    SpillReplayError,
    SpillWriteError,
)
from graceshut.contrib.sqlalchemy import WriteBehindBuffer

pytestmark = pytest.mark.anyio

SIZE = "64k"


@pytest.fixture
def volume(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs of the test's own, unmounted after it."""
    if os.geteuid() != 0:
        pytest.fail("mounting the test's tmpfs needs root (the CI runs as root)", pytrace=False)
    mountpoint = tmp_path / "volume"
    mountpoint.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={SIZE},mode=0755", "tmpfs", str(mountpoint)],
        check=True,
        capture_output=True,
    )
    try:
        yield mountpoint
    finally:
        # Lazy: a file a failed test left open must not leave the mount behind.
        subprocess.run(["umount", "-l", str(mountpoint)], check=True, capture_output=True)


def grow(file: BinaryIO) -> None:
    while True:
        file.write(b"\0" * 1024)


def fill(volume: Path) -> Path:
    """Take every byte left on *volume*: a file that grows until ENOSPC."""
    filler = volume / "filler"
    with filler.open("wb", buffering=0) as file, pytest.raises(OSError) as full:
        grow(file)
    assert full.value.errno == errno.ENOSPC
    return filler


def rows(count: int) -> list[dict[str, Any]]:
    return [{"id": i, "payload": f"row {i:05d} " + "x" * 80} for i in range(count)]


class Sink:
    """A replay writer that keeps what it got."""

    def __init__(self) -> None:
        self.records: list[Any] = []

    def __call__(self, batch: list[Any]) -> None:
        self.records.extend(batch)


def leftovers(volume: Path) -> list[str]:
    """Files a replay or spill must not leave: temporaries, probes."""
    return sorted(p.name for p in volume.iterdir() if p.name.endswith(".tmp") or "probe" in p.name)


def test_a_spill_that_fills_the_volume_keeps_whole_records_and_says_how_many(
    volume: Path,
) -> None:
    """The spill stops at ENOSPC with whole lines only; its error counts what reached them."""
    spill = SpillDirectory(volume)

    with pytest.raises(SpillWriteError) as caught:
        spill.spill("events", rows(2000))

    saved = caught.value.spilled.records
    assert 0 < saved < 2000
    assert f"{saved} of 2000 records written to {caught.value.spilled.to}" in str(caught.value)
    assert "No space left on device" in str(caught.value)
    (path,) = spill.files("events")
    assert str(path) == caught.value.spilled.to
    data = path.read_bytes()
    assert data.endswith(b"\n")
    assert data.count(b"\n") == saved


def test_a_spill_with_no_room_for_a_single_record_leaves_no_file(volume: Path) -> None:
    """A volume already full: nothing saved, no empty spill file left for the replay."""
    spill = SpillDirectory(volume)
    fill(volume)

    with pytest.raises(SpillWriteError, match=r"0 of 10 records written to"):
        spill.spill("events", rows(10))

    assert spill.files("events") == []


async def test_database_down_and_a_full_volume_then_the_next_start_replays_what_was_saved(
    volume: Path, tmp_path: Path
) -> None:
    """The report and the buffer's counts say what reached the disk; the replay writes it."""
    database = tmp_path / "db" / "app.sqlite"  # its directory is missing: the database is down
    metadata = sa.MetaData()
    table = sa.Table(
        "events",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("payload", sa.String(100)),
    )
    coordinator = graceshut.Coordinator(
        grace_period=10, safety_margin=1, propagation_delay=0, environ={}
    )
    buffer = WriteBehindBuffer(
        coordinator,
        sa.create_engine(f"sqlite:///{database}"),
        table,
        name="events",
        spill=SpillDirectory(volume),
    )
    buffer.extend(rows(2000))

    report = await coordinator.shutdown()

    (result,) = report.handlers
    assert result.outcome is Outcome.ERROR
    assert result.fallback is not None
    assert result.fallback.outcome is Outcome.ERROR
    assert result.fallback.error is not None
    assert "SpillWriteError" in result.fallback.error
    assert f"{buffer.spilled} of 2000 records written to" in result.fallback.error
    assert 0 < buffer.spilled < 2000
    assert buffer.spilled + buffer.lost == 2000

    # The next start: the database is back, the volume still full.
    database.parent.mkdir()
    metadata.create_all(engine := sa.create_engine(f"sqlite:///{database}"))
    restarted = WriteBehindBuffer(
        graceshut.Coordinator(environ={}),
        engine,
        table,
        name="events",
        spill=SpillDirectory(volume),
    )
    replayed = await restarted.replay()

    assert (replayed.written, replayed.rejected) == (buffer.spilled, 0)
    with engine.connect() as conn:
        ids = conn.scalars(sa.select(table.c.id).order_by(table.c.id)).all()
    assert ids == list(range(buffer.spilled))
    assert leftovers(volume) == []
    engine.dispose()


async def test_replay_on_a_full_volume_raises_its_error_and_leaves_no_temporary_file(
    volume: Path,
) -> None:
    """A torn line with no room for its .rejected file: SpillReplayError, then it goes through."""
    spill = SpillDirectory(volume)
    path = Path(spill.spill("events", rows(20)).to)
    with path.open("ab") as file:  # the last line of a process killed mid-write
        file.write(b'{"crc32":12345,"record":{"id":')
    filler = fill(volume)
    sink = Sink()

    with pytest.raises(SpillReplayError) as caught:
        await spill.replay("events", sink)

    assert (caught.value.written, caught.value.pending) == (20, 0)
    message = str(caught.value)
    assert "20 records written" in message
    assert "1 unreadable lines could not be kept in" in message
    assert "No space left on device" in message
    assert "the file stays whole for the next replay" in message
    assert [r["id"] for r in sink.records] == list(range(20))
    assert leftovers(volume) == []
    assert spill.files("events") == [path]
    assert spill.rejected_files("events") == []

    filler.unlink()  # room again: the next replay writes the file again and keeps the line
    result = await spill.replay("events", sink)

    assert (result.written, result.files, result.rejected) == (20, 1, 1)
    assert spill.files("events") == []
    (kept,) = spill.rejected_files("events")
    assert kept.read_bytes() == b'{"crc32":12345,"record":{"id":\n'
    assert leftovers(volume) == []
