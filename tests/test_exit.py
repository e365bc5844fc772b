"""What happens after the report: final flushes, the exit watchdog, log lines nobody can miss."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import anyio
import pytest

from graceshut import Coordinator


def fast(**kwargs: float) -> Coordinator:
    settings = {"grace_period": 2.0, "safety_margin": 0.5, "propagation_delay": 0.0}
    settings.update(kwargs)
    return Coordinator(**settings, environ={})


@pytest.mark.anyio
async def test_final_flushes_run_after_the_report_and_say_how_they_went() -> None:
    """ok, error and a hung flush: all three reported, the hung one abandoned by the deadline."""
    coordinator = fast()
    seen: list[str] = []
    release = threading.Event()

    coordinator.on_report(lambda _: seen.append("report listener"))

    def ok(report: object, timeout: float) -> None:
        seen.append(f"ok saw the report: {coordinator.report is report}")

    def fails(report: object, timeout: float) -> None:
        raise ConnectionError("collector refused")

    def hangs(report: object, timeout: float) -> None:
        release.wait(30)

    coordinator.on_final_flush("ok", ok)
    coordinator.on_final_flush("fails", fails)
    coordinator.on_final_flush("hangs", hangs)
    try:
        report = await coordinator.shutdown()
    finally:
        release.set()
    assert seen == ["report listener", "ok saw the report: True"]
    outcomes = {f.name: (f.outcome, f.error) for f in report.final_flushes}
    assert outcomes == {
        "ok": ("ok", None),
        "fails": ("error", "ConnectionError: collector refused"),
        "hangs": ("abandoned", "still running at the deadline"),
    }
    assert report.ok, "telemetry that could not be sent fails no handler"
    assert report.exit_code == 0
    assert coordinator.report is report
    assert report.to_dict()["final_flushes"][2]["outcome"] == "abandoned"
    hung = next(f for f in report.final_flushes if f.name == "hangs")
    assert report.duration + hung.duration <= coordinator.settings.budget + 0.5


@pytest.mark.anyio
async def test_a_late_waiter_waits_for_the_final_flushes() -> None:
    """wait() after the report but during a flush (a server's lifespan) returns after it."""
    coordinator = fast()
    flushing = threading.Event()

    def slow(report: object, timeout: float) -> None:
        flushing.set()
        time.sleep(0.3)

    coordinator.on_final_flush("slow", slow)
    coordinator.attach()
    coordinator.trigger("SIGTERM")
    while not flushing.is_set():
        await anyio.sleep(0.01)
    assert coordinator.report is not None, "the report is there while the flush runs"
    report = await coordinator.wait()
    assert [(f.name, f.outcome) for f in report.final_flushes] == [("slow", "ok")]


@pytest.mark.anyio
async def test_a_final_flush_can_be_taken_back() -> None:
    """on_final_flush returns an unsubscribe: the flush never runs."""
    coordinator = fast()
    unsubscribe = coordinator.on_final_flush("gone", lambda _report, _timeout: None)
    unsubscribe()
    report = await coordinator.shutdown()
    assert report.final_flushes == ()


def run_script(script: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


_HUNG_AT_EXIT = """
    import atexit, os, signal, sys, threading, time
    import anyio, graceshut
    from graceshut.contrib.termination import write_termination_message

    coordinator = graceshut.Coordinator(grace_period=3, safety_margin=2, propagation_delay=0)
    write_termination_message(coordinator, sys.argv[1])
    if sys.argv[2] == "fail":
        @coordinator.on_shutdown("flush", timeout=0.5)
        def save_rows():
            raise ConnectionError("database is down")

    def flush_to_nowhere():
        time.sleep(3600)

    if sys.argv[3] == "atexit":
        atexit.register(flush_to_nowhere)
    else:
        threading.Thread(target=flush_to_nowhere, name="stuck-consumer").start()

    async def main():
        async with coordinator.lifespan():
            os.kill(os.getpid(), signal.SIGTERM)
            await anyio.sleep(3600)

    anyio.run(main)
"""


@pytest.mark.parametrize(
    ("outcome", "hang", "what"),
    [
        ("ok", "atexit", "atexit hook flush_to_nowhere, in flush_to_nowhere"),
        ("fail", "thread", "non-daemon threads: stuck-consumer"),
    ],
)
def test_the_watchdog_ends_a_process_hung_at_exit_with_the_reports_status(
    tmp_path: Path, outcome: str, hang: str, what: str
) -> None:
    """Hung atexit hook / thread: exit at grace - margin/2 with 0 or 1, saying what hung."""
    message = tmp_path / "termination-log"
    started = time.monotonic()
    done = run_script(_HUNG_AT_EXIT, str(message), outcome, hang)
    took = time.monotonic() - started
    assert done.returncode == (0 if outcome == "ok" else 1), done.stderr
    assert took < 20, "the process ended well before the test's own timeout"
    forced = [line for line in done.stderr.splitlines() if "exit forced" in line]
    assert len(forced) == 1, done.stderr
    assert forced[0].startswith("graceshut ERROR: exit forced"), done.stderr
    assert f"still running: {what}" in forced[0]
    lines = message.read_text().splitlines()
    assert lines[0].startswith("shutdown (SIGTERM) finished")
    assert lines[1].startswith("- exit forced after")
    assert what in lines[1]


def test_no_watchdog_without_a_hand_on() -> None:
    """await coordinator.shutdown() alone (a test, a script) never ends the process."""
    done = run_script(
        """
        import anyio, time, graceshut
        from graceshut._process import _watchdog
        coordinator = graceshut.Coordinator(grace_period=1, safety_margin=0.5, environ={})
        anyio.run(coordinator.shutdown)
        time.sleep(1.5)  # past grace - margin/2
        print("still here", _watchdog.armed())
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "still here False"


_LOGS = """
    import logging, sys, graceshut
    if sys.argv[1] == "basic":
        logging.basicConfig(format="APP %(levelname)s %(message)s")
    log = logging.getLogger("graceshut")
    log.info("an info line")
    try:
        raise ConnectionError("database is down: 1200 rows not saved")
    except ConnectionError:
        log.exception("handler save failed: ConnectionError: database is down: 1200 rows not saved")
    from graceshut._core._logs import log_report_line
    log_report_line(log, logging.INFO, "shutdown (SIGTERM) finished clean", {"report": {}})
"""


def test_with_nothing_configured_warnings_and_the_report_reach_stderr() -> None:
    """No logging configured: errors and the report line on stderr, one line each."""
    done = run_script(_LOGS, "none")
    assert done.stderr.splitlines() == [
        (
            "graceshut ERROR: handler save failed: ConnectionError: database is down: 1200 rows "
            "not saved"
        ),
        "graceshut INFO: shutdown (SIGTERM) finished clean",
    ]


def test_a_configured_app_gets_only_its_own_format() -> None:
    """basicConfig: records go through the app's handler only, nothing doubled."""
    done = run_script(_LOGS, "basic")
    lines = done.stderr.splitlines()
    assert lines[0] == (
        "APP ERROR handler save failed: ConnectionError: database is down: 1200 rows not saved"
    )
    assert lines[1] == "Traceback (most recent call last):"
    assert not [line for line in lines if line.startswith("graceshut ")]


@pytest.mark.anyio
async def test_final_flush_waits_no_longer_than_the_deadline() -> None:
    """A flush registered on a tiny budget still gets its short minimum, then is abandoned."""
    coordinator = fast(grace_period=0.6, safety_margin=0.5)
    coordinator.on_final_flush("hangs", lambda _report, _timeout: time.sleep(5))
    with anyio.fail_after(3):
        report = await coordinator.shutdown()
    assert [f.outcome for f in report.final_flushes] == ["abandoned"]
