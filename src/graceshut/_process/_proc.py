"""Reading a process's line in Linux's ``/proc/<pid>/stat``: state, parent, group, start.

Used for the worker group's directory names (a recycled PID has another start time),
the container identity of the pod secret, and ``graceshut run``'s reaping of what a
server leaves behind. Off Linux there is no ``/proc``: every reader answers None or [].
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

_START_TIME = 19  # field 22 of proc(5), counted from the field after the command name


@dataclasses.dataclass(frozen=True)
class ProcStat:
    """What graceshut reads of one process."""

    pid: int
    state: str
    """``R``, ``S``, ``Z`` (a zombie: ended, not reaped yet)..."""
    ppid: int
    pgrp: int
    start_time: str
    """Clock ticks after boot: with the PID, it names a process uniquely."""


def stat(pid: int | str) -> ProcStat | None:
    """*pid*'s line, or None when the process is gone (or there is no ``/proc``)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # "pid (comm) state ppid pgrp ...": the command name may hold spaces and parentheses.
    fields = text.rsplit(")", 1)[-1].split()
    if len(fields) <= _START_TIME:
        return None
    return ProcStat(int(pid), fields[0], int(fields[1]), int(fields[2]), fields[_START_TIME])


def all_processes() -> list[ProcStat]:
    """Every process this one can see; [] without ``/proc``."""
    try:
        entries = [entry.name for entry in Path("/proc").iterdir() if entry.name.isdigit()]
    except OSError:
        return []
    return [found for name in entries if (found := stat(name)) is not None]
