from __future__ import annotations

import logging
from pathlib import Path

import pytest

from graceshut import Coordinator, Phase
from graceshut.contrib.termination import (
    DEFAULT_PATH,
    ENV_TERMINATION_LOG,
    MAX_BYTES,
    deadline_line,
    render_termination_message,
    write_termination_message,
)

pytestmark = pytest.mark.anyio


def fast() -> Coordinator:
    return Coordinator(grace_period=10, safety_margin=1, propagation_delay=0, environ={})


async def test_writes_the_summary_and_the_failed_handlers(tmp_path: Path) -> None:
    """The file holds the summary line, then one line per failed handler, nothing for ok ones."""
    target = tmp_path / "termination-log"
    target.write_text("x" * 10_000)  # a longer previous message is replaced, not overlaid
    coordinator = fast()
    assert write_termination_message(coordinator, target) == target

    @coordinator.on_shutdown(Phase.FLUSH, timeout=1, name="save")
    def save() -> None:
        pass

    @coordinator.on_shutdown(Phase.RELEASE, timeout=1, name="unlock")
    def unlock() -> None:
        raise RuntimeError("lock server gone\nsecond line")

    report = await coordinator.shutdown("SIGTERM")

    lines = target.read_text().splitlines()
    assert lines[0] == report.summary()
    assert lines[0].startswith("shutdown (SIGTERM) finished with failures in ")
    assert len(lines) == 3
    assert lines[1] == deadline_line(report)
    assert lines[1].startswith("deadline: 9.0s after the first trigger (config): configured")
    assert lines[2].startswith("- release/unlock: error after 0.0")
    assert lines[2].endswith("RuntimeError: lock server gone second line")


async def test_a_clean_run_is_the_summary_and_the_deadline(tmp_path: Path) -> None:
    """A clean shutdown writes its summary line and the deadline's, nothing more."""
    target = tmp_path / "log"
    coordinator = fast()
    write_termination_message(coordinator, str(target))
    coordinator.add_handler(lambda: None, phase="flush", timeout=1, name="noop")
    report = await coordinator.shutdown()
    assert target.read_text() == f"{report.summary()}\n{deadline_line(report)}"
    assert "finished clean" in report.summary()


async def test_the_variable_chooses_the_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GRACESHUT_TERMINATION_LOG is used when no path is given, and the file is created."""
    target = tmp_path / "from-env"
    monkeypatch.setenv(ENV_TERMINATION_LOG, str(target))
    coordinator = fast()
    assert write_termination_message(coordinator) == target
    await coordinator.shutdown()
    assert target.read_text().startswith("shutdown (manual) finished clean")


@pytest.mark.parametrize("kind", ["missing-dir", "not-a-dir", "is-a-dir"])
async def test_an_unwritable_path_is_skipped_with_a_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    """No file can be made there: the run still ends ok and an INFO line says why."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    target = {
        "missing-dir": tmp_path / "no" / "such" / "dir" / "log",
        "not-a-dir": blocker / "log",
        "is-a-dir": tmp_path,
    }[kind]
    coordinator = fast()
    write_termination_message(coordinator, target)
    with caplog.at_level(logging.DEBUG, logger="graceshut"):
        report = await coordinator.shutdown()
    assert report.ok
    [record] = [r for r in caplog.records if "termination message" in r.getMessage()]
    assert record.levelno == logging.INFO
    assert record.getMessage().startswith(f"termination message not written to {target}: ")
    assert record.__dict__["outcome"] == "skipped"


async def test_the_default_path_is_not_created_outside_kubernetes(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Without /dev/termination-log (no pod), nothing is created and the skip is DEBUG."""
    if Path(DEFAULT_PATH).exists():
        pytest.skip(f"{DEFAULT_PATH} exists here: a real pod's message is left alone")
    monkeypatch.delenv(ENV_TERMINATION_LOG, raising=False)
    coordinator = fast()
    assert write_termination_message(coordinator) == Path(DEFAULT_PATH)
    with caplog.at_level(logging.DEBUG, logger="graceshut"):
        await coordinator.shutdown()
    assert not Path(DEFAULT_PATH).exists()
    [record] = [r for r in caplog.records if "termination message" in r.getMessage()]
    assert record.levelno == logging.DEBUG


async def test_many_failures_stay_within_4_kb(tmp_path: Path) -> None:
    """200 failing handlers with long errors: the file is at most 4096 bytes, and says so."""
    target = tmp_path / "log"
    coordinator = fast()
    write_termination_message(coordinator, target)
    for i in range(200):

        def fail(i: int = i) -> None:
            raise ValueError(f"handler {i} broke: " + "é" * 1000)

        coordinator.add_handler(fail, phase="flush", timeout=1, name=f"h{i:03}")

    report = await coordinator.shutdown()

    data = target.read_bytes()
    assert len(data) <= MAX_BYTES
    text = data.decode()  # never cut inside a multi-byte character
    lines = text.splitlines()
    assert lines[0] == report.summary()
    listed = [line for line in lines if line.startswith("- flush/h")]
    assert all(len(line.encode()) <= 512 for line in listed)
    assert all(line.endswith("...") for line in listed)
    assert lines[-1] == f"... and {200 - len(listed)} more not ok (see the logs)"
    assert 5 <= len(listed) < 200
    assert len(data) > MAX_BYTES - 600  # the room is used, not wasted


async def test_render_respects_any_cap() -> None:
    """For every cap from 1 to 600 bytes, the rendered message fits and starts with the summary."""
    coordinator = fast()
    for i in range(5):

        def fail(i: int = i) -> None:
            raise RuntimeError(f"boom {i}")

        coordinator.add_handler(fail, phase="release", timeout=1, name=f"r{i}")
    report = await coordinator.shutdown()
    summary = report.summary()
    for cap in range(1, 600):
        message = render_termination_message(report, max_bytes=cap)
        assert len(message.encode()) <= cap
        first = message.split("\n")[0]
        assert first == summary or (len(summary.encode()) > cap and first.endswith("."))


def test_a_cap_below_one_byte_is_refused() -> None:
    """max_bytes=0 is a mistake made at startup, not a silent empty message."""
    with pytest.raises(ValueError, match="max_bytes"):
        write_termination_message(fast(), "/tmp/x", max_bytes=0)  # noqa: S108
