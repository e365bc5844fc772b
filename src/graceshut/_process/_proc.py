"""Reading Linux's ``/proc``: processes' ``stat`` lines, and who listens on a TCP port.

A ``stat`` line gives a process's state, parent, group and start time.

Used for the worker group's directory names (a recycled PID has another start time),
the container identity of the pod secret, ``graceshut run``'s reaping of what a
server leaves behind, and ``graceshut simulate``'s check that the app's port is free.
Off Linux there is no ``/proc``: every reader answers None or [].
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ._sockets import LISTEN, sockets

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


@dataclasses.dataclass(frozen=True)
class Listener:
    """A TCP socket listening on a port, and the process that holds it, when visible."""

    address: str
    """The local address, ``127.0.0.1``, ``0.0.0.0``, ``::``..."""
    port: int
    pid: int | None
    """None when no process of ours holds it (another user's: its ``fd`` are closed to us)."""
    command: str | None

    def describe(self) -> str:
        """``pid 123 (python -m http.server 8000)``, or what is known of it."""
        if self.pid is None:
            return "another process (not one this user can see)"
        return f"pid {self.pid} ({self.command})" if self.command else f"pid {self.pid}"


def listeners(port: int) -> list[Listener]:
    """Every TCP socket listening on *port* (any address, IPv4 and IPv6); [] off Linux.

    The sockets from the kernel's table (`_sockets`), their holders from the
    ``socket:[inode]`` links in ``/proc/*/fd``, as ``ss -ltnp`` does: no dependency
    for a check made once.
    """
    found = {s.inode: str(s.local) for s in sockets() if s.state == LISTEN and s.local_port == port}
    owners = _socket_owners(set(found)) if found else {}
    listening = []
    for inode, address in found.items():
        pid = owners.get(inode)
        command = command_line(pid) if pid is not None else None
        listening.append(Listener(address, port, pid, command))
    return listening


def command_line(pid: int) -> str | None:
    """*pid*'s command line, space-separated; None when it is gone or hidden."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return raw.rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace") or None


def _socket_owners(inodes: set[int]) -> dict[int, int]:
    owners: dict[int, int] = {}
    try:
        pids = [entry.name for entry in Path("/proc").iterdir() if entry.name.isdigit()]
    except OSError:
        return owners
    for pid in pids:
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:  # gone, or another user's
            continue
        for fd in fds:
            try:
                link = str(fd.readlink())
            except OSError:
                continue
            if link.startswith("socket:[") and int(link[8:-1]) in inodes:
                owners.setdefault(int(link[8:-1]), int(pid))
    return owners
