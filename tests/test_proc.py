"""Reading /proc/<pid>/stat: real processes, one whose name holds spaces and parentheses."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from graceshut import _proc as proc

# A live child is running, sleeping, or in an uninterruptible wait (``D``) while the
# kernel reads its program in from disk; what the tests rule out is a shifted field.
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
        assert proc.stat(child.pid) == found
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
        assert Path(f"/proc/{child.pid}/comm").read_text().strip() == "a) b (c"
        found = proc.stat(child.pid)
        assert found is not None
        assert (found.ppid, found.pgrp) == (os.getpid(), os.getpgid(0))
        assert found.state in RUNNING_STATES
        assert found.start_time.isdigit()
    finally:
        child.kill()
        child.wait()


def test_a_zombie_reads_as_z() -> None:
    """An ended child nobody waited for yet is ``Z``, as the reaping code needs to tell."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # ended, not reaped
    found = proc.stat(child.pid)
    assert found is not None
    assert found.state == "Z"
    child.wait()
