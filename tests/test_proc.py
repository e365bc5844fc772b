"""Reading /proc/<pid>/stat: real processes, one whose name holds spaces and parentheses."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from graceshut._process import _proc as proc

# A live child is running, sleeping, or in an uninterruptible wait (``D``) while the
# kernel still reads its program in: what the tests rule out is a shifted field.
RUNNING_STATES = {"R", "S", "D"}


def test_a_child_is_read_with_its_parent_group_and_start() -> None:
    """A child's line names this process as its parent; its start time is stable."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        found = proc.stat(child.pid)
        assert found is not None
        assert (found.pid, found.ppid, found.pgrp) == (child.pid, os.getpid(), os.getpgid(0))
        assert found.state in RUNNING_STATES
        assert found.start_time.isdigit()
        again = proc.stat(child.pid)
        assert again is not None
        # The state may move on (``D`` while the exec reads the program in, then ``S``).
        assert dataclasses.replace(again, state=found.state) == found
        assert child.pid in {p.pid for p in proc.all_processes()}
    finally:
        child.kill()
        child.wait()
    assert proc.stat(child.pid) is None, "a reaped process is gone"


def test_a_command_name_with_spaces_and_parentheses_does_not_shift_the_fields(
    tmp_path: Path,
) -> None:
    """A program named ``a) b (c`` (the kernel's command name): the fields after it hold."""
    program = tmp_path / "a) b (c"
    program.symlink_to(shutil.which("sleep") or "/bin/sleep")
    child = subprocess.Popen([str(program), "30"])
    try:
        _wait_for_command_name(child.pid, "a) b (c")
        found = proc.stat(child.pid)
        assert found is not None
        assert (found.ppid, found.pgrp) == (os.getpid(), os.getpgid(0))
        assert found.state in RUNNING_STATES
        assert found.start_time.isdigit()
    finally:
        child.kill()
        child.wait()


def _wait_for_command_name(pid: int, name: str) -> None:
    """Wait until the kernel shows *name* for *pid*: the exec may still be under way."""
    comm = Path(f"/proc/{pid}/comm")
    deadline = time.monotonic() + 30
    while comm.read_text().strip() != name:
        assert time.monotonic() < deadline, f"{pid} never showed the command name {name!r}"
        time.sleep(0.01)


def test_a_zombie_reads_as_z() -> None:
    """An ended child nobody waited for yet is ``Z``, as the reaping code needs to tell."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # ended, not reaped
    found = proc.stat(child.pid)
    assert found is not None
    assert found.state == "Z"
    child.wait()
