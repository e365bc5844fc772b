"""graceshut.contrib.spill on its own: the file format, torn and damaged files, bad paths.

The tests with real PostgreSQL, Redis and a killed process are in test_spill_servers.py.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import logging
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

import graceshut
from graceshut import Outcome
from graceshut.contrib.cache import flush_mapping
from graceshut.contrib.spill import (
    SpillDirectory,
    SpillEncodeError,
    SpillError,
    SpillLog,
    SpillReplayError,
)
from graceshut.contrib.termination import render_termination_message
from graceshut.contrib.webhook import notify

from ._http_recorder import closed_port_url, serving

pytestmark = pytest.mark.anyio


def fast() -> graceshut.Coordinator:
    return graceshut.Coordinator(grace_period=10, safety_margin=1, propagation_delay=0, environ={})


class Sink:
    """A replay writer that keeps what it got, and can fail on a chosen call."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.batches: list[list[Any]] = []
        self.fail_on = fail_on

    def __call__(self, batch: list[Any]) -> None:
        if self.fail_on is not None and len(self.batches) == self.fail_on:
            self.fail_on = None
            raise ConnectionError("database down")
        self.batches.append(batch)

    @property
    def records(self) -> list[Any]:
        return [record for batch in self.batches for record in batch]


async def test_records_round_trip_with_their_python_types(tmp_path: Path) -> None:
    """Dates, decimals, UUIDs, bytes and tuples come back as they were; files then go."""
    spill = SpillDirectory(tmp_path)
    records = [
        {
            "id": i,
            "at": dt.datetime(2026, 11, 30, 12, i, tzinfo=dt.timezone.utc),
            "price": decimal.Decimal("9.90"),
            "ref": uuid.UUID(int=i),
            "blob": bytes([i]),
            "key": ("user", i),
            "text": 'é\n"quoted"',
        }
        for i in range(5)
    ]
    spilled = spill.spill("events", records)
    assert spilled.records == 5
    assert Path(spilled.to).parent == tmp_path
    sink = Sink()

    result = await spill.replay("events", sink, batch_size=2)

    assert sink.records == records
    assert [len(b) for b in sink.batches] == [2, 2, 1]
    assert (result.written, result.files, result.rejected) == (5, 1, 0)
    assert spill.files("events") == []
    again = await spill.replay("events", sink)
    assert again.written == 0
    assert len(sink.records) == 5


async def test_a_torn_last_line_and_a_damaged_line_are_kept_aside_and_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Good records replay; the torn and the bit-flipped lines go to a .rejected file."""
    spill = SpillDirectory(tmp_path)
    path = Path(spill.spill("rows", [{"id": i} for i in range(10)]).to)
    lines = path.read_bytes().splitlines(keepends=True)
    lines[3] = lines[3].replace(b'"id":3', b'"id":8')  # checksum no longer matches
    path.write_bytes(b"".join(lines) + lines[0][:15])  # and a last line cut by a kill
    sink = Sink()

    with caplog.at_level(logging.WARNING, "graceshut"):
        result = await spill.replay("rows", sink)

    assert [r["id"] for r in sink.records] == [0, 1, 2, 4, 5, 6, 7, 8, 9]
    assert result.rejected == 2
    (kept,) = result.rejected_files
    assert kept.read_bytes() == lines[3] + lines[0][:15] + b"\n"
    assert not path.exists()
    assert "2 unreadable lines kept in" in caplog.text
    assert (await spill.replay("rows", sink)).written == 0  # .rejected files never replay


async def test_a_failing_writer_leaves_the_file_for_the_next_replay(tmp_path: Path) -> None:
    """A replay cut short by the writer keeps the file whole; the next one finishes it."""
    spill = SpillDirectory(tmp_path)
    spill.spill("rows", [{"id": i} for i in range(6)])
    spill.spill("rows", [{"id": i} for i in range(6, 9)])
    sink = Sink(fail_on=1)

    with pytest.raises(SpillReplayError, match="2 records written, then a batch of 2") as info:
        await spill.replay("rows", sink, batch_size=2)
    assert (info.value.written, info.value.pending) == (2, 7)
    assert len(spill.files("rows")) == 2

    result = await spill.replay("rows", sink, batch_size=2)

    assert result.written == 9
    assert sorted({r["id"] for r in sink.records}) == list(range(9))  # ids 0-1 went twice
    assert spill.files("rows") == []


def test_a_missing_path_or_a_file_is_refused_at_construction(tmp_path: Path) -> None:
    """The error names the directory and says what is wrong, before any shutdown."""
    with pytest.raises(SpillError, match="does not exist: create it, or mount the volume"):
        SpillDirectory(tmp_path / "nope")
    (tmp_path / "file").write_text("")
    with pytest.raises(SpillError, match="is not a directory"):
        SpillDirectory(tmp_path / "file")


def test_an_unwritable_path_is_refused_at_construction(tmp_path: Path) -> None:
    """A read-only directory fails when the app starts, in a process without root's override."""
    directory = tmp_path / "ro"
    directory.mkdir(mode=0o555)
    script = "import sys; from graceshut.contrib.spill import SpillDirectory as S; S(sys.argv[1])"
    command = [sys.executable, "-c", script, str(directory)]
    setpriv = shutil.which("setpriv")
    if os.geteuid() == 0:
        # Root writes anywhere: drop the capability that lets it, as a pod's
        # non-root user (or a read-only mount) would be refused.
        assert setpriv is not None, "setpriv (util-linux) is needed to test as root"
        command = [setpriv, "--bounding-set=-dac_override,-dac_read_search", *command]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1
    assert f"spill directory {str(directory)!r} is not writable" in done.stderr
    assert "Permission denied" in done.stderr


async def test_the_log_spill_writes_one_marked_line_per_record(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The last resort: a cache flush that fails logs each entry under graceshut-spill."""
    coordinator = fast()

    def down(batch: dict[str, str]) -> None:
        raise ConnectionError("redis down")

    cache = {"a": "1", "b": "2"}
    flusher = flush_mapping(coordinator, cache, down, name="prices", spill=SpillLog())
    with caplog.at_level(logging.INFO):
        report = await coordinator.shutdown()

    lines = [r for r in caplog.records if r.name == "graceshut.spill"]
    assert [r.getMessage() for r in lines] == [
        'graceshut-spill prices ["a","1"]',
        'graceshut-spill prices ["b","2"]',
    ]
    assert [json.loads(r.__dict__["record"]) for r in lines] == [["a", "1"], ["b", "2"]]
    (result,) = report.handlers
    assert result.outcome is Outcome.ERROR
    assert result.fallback is not None
    assert result.fallback.detail == {"spilled": 2, "records": "entries", "to": "log"}
    assert flusher.spilled == 2
    assert cache == {}


async def test_a_webhook_that_never_answered_is_sent_at_replay(tmp_path: Path) -> None:
    """A notice spilled while the receiver was down reaches it at the next start, once."""
    coordinator = fast()
    spill = SpillDirectory(tmp_path)
    notify(coordinator, closed_port_url(), retries=0, timeout=1, phase="report", spill=spill)
    report = await coordinator.shutdown("SIGTERM")
    (result,) = report.handlers
    assert result.fallback is not None
    assert result.fallback.detail is not None
    assert result.fallback.detail["spilled"] == 1
    message = render_termination_message(report)
    assert f"spilled 1 requests to {tmp_path}" in message

    with serving() as server:
        webhook = notify(fast(), server.url + "/audit", retries=0, spill=spill, name=result.name)
        replayed = await webhook.replay()
        assert (await webhook.replay()).written == 0

    assert replayed.written == 1
    (received,) = server.received
    assert received.path == "/audit"
    assert received.json()["event"] == "shutdown"
    assert received.json()["reason"] == "SIGTERM"


def test_the_spill_file_is_json_lines_with_a_checksum(tmp_path: Path) -> None:
    """Each line parses as JSON on its own: jq and log tools read spill files as they are."""
    spill = SpillDirectory(tmp_path)
    path = Path(spill.spill("sqlalchemy.write_behind[events]", [{"id": 1}, {"id": 2}]).to)
    assert path.name.startswith("sqlalchemy.write_behind_events~")
    assert path.suffix == ".jsonl"
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["record"] for line in lines] == [{"id": 1}, {"id": 2}]
    assert all(isinstance(line["crc32"], int) for line in lines)


async def test_a_record_that_cannot_be_encoded_costs_that_record_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The other records are spilled; the error counts the bad one, the log keeps its repr."""
    spill = SpillDirectory(tmp_path)
    records: list[Any] = [{"id": 1}, {"id": object()}, {"id": 3}]
    with (
        caplog.at_level(logging.ERROR, "graceshut"),
        pytest.raises(
            SpillEncodeError, match=r"spilled 2 records to .*; 1 could not be encoded"
        ) as info,
    ):
        spill.spill("rows", records)
    assert info.value.unencodable == 1
    assert "cannot spill {'id': <object object at" in caplog.text
    sink = Sink()
    assert (await spill.replay("rows", sink)).written == 2
    assert sink.records == [{"id": 1}, {"id": 3}]
