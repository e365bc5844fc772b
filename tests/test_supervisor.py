"""The supervisor's watchdog, on real processes: a supervisor script with real children.

Each test runs a small supervisor in a subprocess (it ends itself with ``os._exit``):
its workers are real child processes, its signal is a real SIGTERM, and the pod's
trigger is the file a worker group writes. gunicorn's master under it is in
``tests/e2e/test_gunicorn_master.py``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from graceshut._process._workers import WorkerGroup

SUPERVISOR = textwrap.dedent(
    """
    import os, signal, subprocess, sys, time
    from graceshut._process._supervisor import SupervisorWatchdog

    children = [subprocess.Popen([sys.executable, "-c", code]) for code in sys.argv[1:]]
    watchdog = SupervisorWatchdog(
        lambda: [child.pid for child in children],
        grace_period=float(os.environ.get("TEST_GRACE", "2")),
        safety_margin=1.0,
    )
    # What a supervisor does on SIGTERM: here, it hangs in its own exit work. Unbuffered
    # writes: a signal that lands inside a print() would make its handler's print fail.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: os.write(1, b"own handler ran\\n"))
    watchdog.install()
    os.write(1, b"ready\\n")
    while True:
        time.sleep(1)
    """
)
EXITS_AT_ONCE = "import sys; sys.exit(0)"
#: A worker still busy at the supervisor's moment (its own budget is longer).
SLOW = "import time; time.sleep(3); print('slow worker done', flush=True)"


def supervise(tmp_path: Path, *children: str, grace: float = 2.0) -> subprocess.Popen[str]:
    script = tmp_path / "supervisor.py"
    script.write_text(SUPERVISOR)
    env = {**os.environ, "GRACESHUT_WORKER_DIR": str(tmp_path / "group"), "TEST_GRACE": str(grace)}
    process = subprocess.Popen(
        [sys.executable, str(script), *children],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "ready"
    return process


def finish(process: subprocess.Popen[str]) -> tuple[int, str]:
    try:
        out, _ = process.communicate(timeout=30)
    finally:
        process.kill()
    return process.returncode, out


def ran_for(output: str) -> float:
    line = next(line for line in output.splitlines() if "the supervisor still ran" in line)
    return float(line.split("still ran ")[1].split("s after")[0])


def test_a_hanging_supervisor_is_ended_with_status_0_when_its_workers_are_gone(
    tmp_path: Path,
) -> None:
    """SIGTERM: the supervisor's own handler still runs; it is ended 1.75 s after, status 0."""
    process = supervise(tmp_path, EXITS_AT_ONCE, EXITS_AT_ONCE)
    time.sleep(0.2)  # both children have exited (zombies the supervisor never reaped)
    process.send_signal(signal.SIGTERM)
    status, output = finish(process)
    assert status == 0, output
    assert "own handler ran" in output, "chained in front of the supervisor's handler"
    assert "its workers gone: ending it with status 0" in output, output
    assert "waiting for them" not in output, output
    # grace 2 s - margin 1 s / 4, from the signal: never before that moment.
    assert ran_for(output) >= 1.75, output


def test_a_worker_still_running_is_waited_for_never_ended(tmp_path: Path) -> None:
    """A worker busy past the moment (a budget the supervisor does not know) ends first."""
    process = supervise(tmp_path, SLOW, EXITS_AT_ONCE)
    process.send_signal(signal.SIGTERM)
    status, output = finish(process)
    assert status == 0, output
    waiting = output.index("waiting for them to exit first")
    done = output.index("slow worker done")
    ended = output.index("its workers gone: ending it with status 0")
    assert waiting < done < ended, output


def test_the_countdown_starts_at_the_pods_first_trigger(tmp_path: Path) -> None:
    """A trigger recorded by the workers 4 s before SIGTERM: the moment comes 4 s sooner."""
    process = supervise(tmp_path, EXITS_AT_ONCE, grace=6.0)
    group = WorkerGroup(tmp_path / "group")
    group.directory.mkdir(mode=0o700)
    group.claim("prestop", time.time() - 4.0)
    signalled = time.monotonic()
    process.send_signal(signal.SIGTERM)
    status, output = finish(process)
    took = time.monotonic() - signalled
    assert status == 0, output
    assert ran_for(output) >= 5.75, output  # counted from the trigger
    # From the signal it would be 5.75 s; from the trigger 1.75 s (a loaded machine may
    # add to that, never take from it: the room is 4 s).
    assert took < 5.75, (took, output)


def test_a_trigger_that_used_the_budget_still_leaves_a_quarter_of_the_margin(
    tmp_path: Path,
) -> None:
    """Trigger 5 s ago with a 2 s grace period: the supervisor still gets margin / 4."""
    process = supervise(tmp_path, EXITS_AT_ONCE)
    group = WorkerGroup(tmp_path / "group")
    group.directory.mkdir(mode=0o700)
    group.claim("prestop", time.time() - 5.0)
    process.send_signal(signal.SIGTERM)
    status, output = finish(process)
    assert status == 0, output
    assert ran_for(output) >= 5.25, output


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_second_signal_does_not_arm_it_twice(tmp_path: Path, signum: int) -> None:
    """SIGTERM, then SIGTERM or SIGINT: one countdown, both handled by the supervisor."""
    process = supervise(tmp_path, EXITS_AT_ONCE)
    process.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    process.send_signal(signum)
    status, output = finish(process)
    assert status == 0, output
    assert output.count("own handler ran") == 2, output
    assert output.count("the supervisor still ran") == 1, output
    assert ran_for(output) >= 1.75, output  # from the first signal


def test_sigint_arms_it_too(tmp_path: Path) -> None:
    """Ctrl-C in a terminal is SIGINT: the same bounded exit."""
    process = supervise(tmp_path, EXITS_AT_ONCE)
    process.send_signal(signal.SIGINT)
    status, output = finish(process)
    assert status == 0, output
    assert "the supervisor still ran" in output, output
