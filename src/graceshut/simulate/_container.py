"""The app's processes, treated as a container: started, signalled, watched, killed.

Where the machine allows it the command runs as PID 1 of a PID namespace of its own
(`graceshut.simulate._pid1`), so that signals reach it as they do in a container.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

from . import _pid1


class Container:
    """A running app process, treated as a container.

    The stop signal goes to the main process only, SIGKILL to its whole process group
    (when it has one of its own), as the runtime does with PID 1 and the rest. A thread
    waits for the exit so that its moment is known to the millisecond.
    """

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        *,
        own_group: bool,
        on_exit: Callable[[int, float], object] | None = None,
        pid1: int | None = None,
    ) -> None:
        self.process = process
        self.own_group = own_group
        self.pid1 = pid1
        """PID 1 of the container's PID namespace, as seen from here (None: no namespace)."""
        self.exit_status: int | None = None
        self.exited_at: float | None = None
        self._exited = threading.Event()
        self._on_exit = on_exit
        threading.Thread(target=self._wait, name="container-wait", daemon=True).start()

    @classmethod
    def start(
        cls,
        command: Sequence[str],
        env: Mapping[str, str],
        *,
        cwd: Path | None = None,
        output: IO[bytes] | int | None = None,
        on_exit: Callable[[int, float], object] | None = None,
        pid_namespace: bool = False,
    ) -> Container:
        """Start *command* in a process group of its own, as a container's processes are.

        With *pid_namespace*, as PID 1 of a new PID namespace (see `_pid1.available`).
        """
        argv, fds = list(command), tuple[int, ...]()
        read = write = -1
        if pid_namespace:
            if shutil.which(argv[0], path=env.get("PATH")) is None:
                # Popen would say so itself; the launcher can only exit 127.
                raise FileNotFoundError(errno.ENOENT, "No such file or directory", argv[0])
            read, write = os.pipe()
            argv, fds = _pid1.launcher(argv, write), (write,)
        try:
            process = subprocess.Popen(  # noqa: S603 - the user's own command
                argv,
                env=dict(env),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT if output is not None else None,
                start_new_session=True,
                pass_fds=fds,
            )
        finally:
            if write >= 0:
                os.close(write)
        pid1 = None
        if read >= 0:
            with os.fdopen(read) as report:
                line = report.readline().strip()  # empty: the launcher failed
            pid1 = int(line) if line.isdigit() else None
        return cls(process, own_group=True, on_exit=on_exit, pid1=pid1)

    @property
    def pid(self) -> int:
        """The main process: PID 1 of the namespace, else the command's process."""
        return self.process.pid if self.pid1 is None else self.pid1

    def running(self) -> bool:
        """True until the main process has exited."""
        return not self._exited.is_set()

    def send(self, signum: int) -> None:
        """Send *signum* to the main process, as the runtime sends SIGTERM to PID 1."""
        if self.running():
            with contextlib.suppress(ProcessLookupError):  # exited in between
                os.kill(self.pid, signum)

    def kill(self) -> None:
        """SIGKILL everything in the container."""
        if self.pid1 is not None and self.running():
            # The kernel ends every process of the namespace with its PID 1.
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid1, signal.SIGKILL)
        if self.own_group:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)
        elif self.running():
            self.process.kill()

    def wait(self, timeout: float | None) -> int | None:
        """The exit status once exited, or None when *timeout* passed first."""
        self._exited.wait(timeout)
        return self.exit_status

    def _wait(self) -> None:
        status = self.process.wait()
        self.exited_at = time.monotonic()
        self.exit_status = status
        self._exited.set()
        if self._on_exit is not None:
            self._on_exit(status, self.exited_at)
        if self.own_group:
            # When PID 1 ends, the kernel ends the rest of the container: so do we.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)


class Output:
    """Reads the app's output: keeps the last lines, and copies it all to a file if asked.

    The reading never stops before the app's output ends, whatever happens to the copy:
    a reader that died would leave the app blocked on a full pipe (64 KiB). A copy that
    cannot be written is given up, and `error` says why.
    """

    def __init__(self, stream: IO[bytes], copy: Path | None = None, lines: int = 40) -> None:
        self.tail: collections.deque[str] = collections.deque(maxlen=lines)
        self.error: str | None = None
        """Why the copy to the file stopped, if it did."""
        self._stream = stream
        self._copy = copy
        self._thread = threading.Thread(target=self._read, name="app-output", daemon=True)
        self._thread.start()

    def join(self, timeout: float) -> list[str]:
        """Wait a little for the last lines; return the tail."""
        self._thread.join(timeout)
        return list(self.tail)

    def _read(self) -> None:
        sink = self._open()
        try:
            for line in self._stream:
                self.tail.append(line.decode(errors="replace").rstrip("\r\n"))
                if sink is not None:
                    try:
                        sink.write(line)
                        sink.flush()
                    except OSError as exc:
                        self._close(sink, exc)
                        sink = None
        finally:
            if sink is not None:
                self._close(sink)

    def _open(self) -> IO[bytes] | None:
        if self._copy is None:
            return None
        try:
            return self._copy.open("wb")
        except OSError as exc:
            self._failed(exc)
            return None

    def _close(self, sink: IO[bytes], failure: OSError | None = None) -> None:
        if failure is not None:
            self._failed(failure)
        try:
            sink.close()
        except OSError as late:  # the last flush
            if self.error is None:
                self._failed(late)

    def _failed(self, exc: OSError) -> None:
        self.error = (
            f"the app's output could not be written to {self._copy} "
            f"({exc.strerror or exc}); it was read to the end all the same"
        )
