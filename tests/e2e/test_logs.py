"""graceshut's log lines reach the output under a real uvicorn, configured or not.

The app is the README's FastAPI example with a flush handler that fails
(tests/e2e/logs_app.py), run with a plain ``uvicorn logs_app:app``.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest

from ..asgi_servers import Server, free_port

pytestmark = pytest.mark.e2e

ERROR = "database is down: 1200 rows not saved"


def run_until_exit(tmp_path: Path, **env: str) -> tuple[int, str]:
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", "tests.e2e.logs_app:app", "--port", str(port)]
    settings = {
        "GRACESHUT_GRACE_PERIOD": "10",
        "GRACESHUT_SAFETY_MARGIN": "4",
        "GRACESHUT_PROPAGATION_DELAY": "0",
        **env,
    }
    server = Server(argv, port, tmp_path / "logs.events", settings)
    try:
        server.signal(signal.SIGTERM)
        status = server.wait_exit()
    finally:
        server.stop()
    return status, server.log.read_text(errors="replace")


def lines_with(output: str, text: str) -> list[str]:
    return [line for line in output.splitlines() if text in line]


def test_with_no_logging_configured_the_failure_and_the_report_reach_stderr(
    tmp_path: Path,
) -> None:
    """Nothing configured: the handler's error and the report each show as one line."""
    status, output = run_until_exit(tmp_path, E2E_LOGGING="none")
    assert status == 1, output
    (error,) = lines_with(output, ERROR)
    assert error.startswith("graceshut ERROR: handler tests.e2e.logs_app.save_cache failed")
    (report,) = lines_with(output, "shutdown (SIGTERM) finished")
    assert report.startswith("graceshut WARNING: shutdown (SIGTERM) finished with failures")
    assert "Traceback" not in output, "one readable line each"
    assert "SIGTERM received" not in output, "INFO lines stay out"


def test_a_configured_app_keeps_full_control(tmp_path: Path) -> None:
    """basicConfig: every line in the app's format, none of graceshut's own on top."""
    status, output = run_until_exit(tmp_path, E2E_LOGGING="basic")
    assert status == 1, output
    error = lines_with(output, ERROR)[0]  # then the traceback, the app's format keeps it
    assert error.startswith("APP ERROR graceshut: handler tests.e2e.logs_app.save_cache")
    assert "APP INFO graceshut: SIGTERM received: starting the shutdown" in output
    assert not lines_with(output, "graceshut ERROR:"), output
    assert not lines_with(output, "graceshut WARNING:"), output


@pytest.mark.parametrize("hang", ["", "atexit"])
def test_records_queued_for_a_listener_are_out_before_the_process_ends(
    tmp_path: Path, hang: str
) -> None:
    """QueueHandler + slow QueueListener: the report's lines get out, also on a forced exit."""
    status, output = run_until_exit(tmp_path, E2E_LOGGING="queue", E2E_HANG_AT_EXIT=hang)
    assert status == 1, output
    failed = "QUEUED ERROR graceshut: handler tests.e2e.logs_app.save_cache failed"
    assert lines_with(output, failed), output
    assert lines_with(output, "QUEUED WARNING graceshut: shutdown (SIGTERM) finished with failures")
    if hang:
        assert lines_with(output, "QUEUED ERROR graceshut: exit forced"), output
    assert not lines_with(output, "graceshut ERROR:"), "the app configured logging"
