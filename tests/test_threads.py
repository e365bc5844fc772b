"""Sync handlers run in daemon threads: a stuck one never holds the process past its report."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

SCRIPT = """
import time, anyio, graceshut

coordinator = graceshut.Coordinator(grace_period=5, safety_margin=0.5, propagation_delay=0)

@coordinator.on_shutdown("release", timeout=0.3)
def stuck() -> None:
    time.sleep(3600)  # a client call to a server that never answers

async def main() -> None:
    report = await coordinator.shutdown()
    print(report.handlers[0].outcome.value, flush=True)

anyio.run(main, backend="{backend}")
"""


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_stuck_sync_handler_does_not_keep_the_process_alive(backend: str) -> None:
    """The process exits right after the report even though the handler's thread still runs."""
    # The handler sleeps an hour: a process held up by its thread would hit this timeout.
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SCRIPT).format(backend=backend)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.stdout.strip() == "timeout", result.stderr
    assert result.returncode == 0
