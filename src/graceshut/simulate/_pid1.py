"""Run the app as PID 1 of a PID namespace of its own, as a container runs it.

In a container the command is PID 1 of its PID namespace, and the kernel delivers a
signal to that process only when it has a handler for it (SIGKILL and SIGSTOP aside,
and from the parent namespace too: see pid_namespaces(7)). A shell that runs the app
without ``exec`` has no SIGTERM handler: the signal is dropped, the app never hears of
it, and the runtime SIGKILLs everything at the end of the grace period (status 137).

``python -m graceshut.simulate._pid1 FD -- COMMAND...`` plays the runtime's part: it
calls ``unshare(CLONE_NEWPID | CLONE_NEWNS)`` (with ``CLONE_NEWUSER`` too when not
root, where the kernel allows it), forks the command as PID 1 of the new namespace
with its own ``/proc``, writes that process's PID as seen from here on file
descriptor FD, waits for it and ends the way it ended (the same status, or killed by
the same signal), so that the simulator sees PID 1's exit. Only the PID and mount
namespaces are new: the network is the machine's, so the load and the kubelet's
probes reach the app as before. util-linux's ``unshare --fork`` does the same but
reports a child killed by SIGKILL as status 1 (2.38), which is why this exists.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import functools
import os
import signal
import subprocess
import sys
from pathlib import Path

_CLONE_NEWNS = 0x00020000
_CLONE_NEWUSER = 0x10000000
_CLONE_NEWPID = 0x20000000
_MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 2, 4, 8
_MS_REC, _MS_PRIVATE = 0x4000, 1 << 18
_PR_SET_PDEATHSIG = 1
_SHELLS = frozenset({"sh", "bash", "dash", "ash", "zsh", "ksh", "busybox"})


@functools.cache
def available() -> str | None:
    """None when this machine lets us make a PID namespace, else why not (once per process)."""
    if not sys.platform.startswith("linux"):
        return f"PID namespaces are a Linux feature (this is {sys.platform})"
    read, write = os.pipe()
    try:
        check = subprocess.run(  # noqa: S603 - our own launcher with `true`
            [sys.executable, "-m", __name__, str(write), "--", "true"],
            pass_fds=(write,),
            capture_output=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot run the launcher: {exc}"
    finally:
        os.close(write)
        os.close(read)
    if check.returncode != 0:
        why = check.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no reason"]
        return why[0]
    return None


def launcher(command: list[str], report_fd: int) -> list[str]:
    """The command line that starts *command* as PID 1 and reports its PID on *report_fd*."""
    return [sys.executable, "-m", __name__, str(report_fd), "--", *command]


@dataclasses.dataclass(frozen=True)
class SignalView:
    """What a process made of a signal, read from ``/proc/PID/status`` and ``comm``."""

    name: str
    """The program (``comm``): ``sh``, ``uvicorn``, ``python3``..."""
    handles: bool
    """A handler is installed for the signal (``SigCgt``)."""
    ignores: bool
    """The signal is ignored (``SigIgn``)."""
    children: tuple[int, ...]

    @property
    def is_shell(self) -> bool:
        """Whether the process is a shell (an entrypoint script, ``sh -c``)."""
        return self.name in _SHELLS


def read_signal_view(pid: int, signum: int) -> SignalView | None:
    """How process *pid* stands towards *signum*, or None once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        name = Path(f"/proc/{pid}/comm").read_text().strip()
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return None
    masks = {
        key: int(value.strip(), 16)
        for key, _, value in (line.partition(":") for line in status.splitlines())
        if key in {"SigCgt", "SigIgn"}
    }
    bit = 1 << (signum - 1)
    return SignalView(
        name=name,
        handles=bool(masks.get("SigCgt", 0) & bit),
        ignores=bool(masks.get("SigIgn", 0) & bit),
        children=tuple(int(c) for c in children),
    )


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _unshare(libc: ctypes.CDLL) -> None:
    flags = _CLONE_NEWPID | _CLONE_NEWNS
    if os.geteuid() == 0:
        _check(libc.unshare(flags), "unshare(CLONE_NEWPID)")
        return
    # Not root: a user namespace of our own, where we are root, holds the other two.
    uid, gid = os.geteuid(), os.getegid()
    _check(libc.unshare(flags | _CLONE_NEWUSER), "unshare(CLONE_NEWUSER|CLONE_NEWPID)")
    Path("/proc/self/setgroups").write_text("deny")
    Path("/proc/self/uid_map").write_text(f"0 {uid} 1")
    Path("/proc/self/gid_map").write_text(f"0 {gid} 1")


def _become_pid1(libc: ctypes.CDLL, command: list[str]) -> None:
    """In the forked child: the container's PID 1 (this never returns)."""
    try:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # the launcher died: so do we
        # Our own /proc, so that the app sees its namespace (ps, /proc/1); best effort.
        if libc.mount(b"none", b"/", None, _MS_REC | _MS_PRIVATE, None) == 0:
            libc.mount(b"proc", b"/proc", b"proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC, None)
        for signum in (signal.SIGPIPE, signal.SIGINT, signal.SIGTERM, signal.SIGXFSZ):
            signal.signal(signum, signal.SIG_DFL)  # as a runtime starts it: nothing ignored
        os.execvp(command[0], command)  # noqa: S606 - the user's own command
    except OSError as exc:
        sys.stderr.write(f"graceshut simulate: cannot start {command[0]}: {exc}\n")
    os._exit(127)


def main(argv: list[str]) -> int:
    """The launcher: ``FD -- COMMAND...``."""
    report_fd, command = int(argv[0]), argv[2:]
    libc = _libc()
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # the simulator died: so do we
    try:
        _unshare(libc)
    except OSError as exc:
        sys.stderr.write(f"no PID namespace: {exc}\n")
        return 125
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)  # only PID 1's end may end the launcher
    pid = os.fork()
    if pid == 0:
        _become_pid1(libc, command)
    with contextlib.suppress(OSError), os.fdopen(report_fd, "w") as report:
        report.write(f"{pid}\n")
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        ended_by = os.WTERMSIG(status)
        if ended_by != signal.SIGKILL:
            signal.signal(ended_by, signal.SIG_DFL)
        os.kill(os.getpid(), ended_by)  # end as PID 1 ended
    return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
