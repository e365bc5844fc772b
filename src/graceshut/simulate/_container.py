"""The app's processes, treated as a container: started, signalled, watched, killed."""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO


class Container:
    """A running app process, treated as a container.

    SIGTERM goes to the main process only, SIGKILL to its whole process group (when it
    has one of its own), as the runtime does with PID 1 and the rest. A thread waits
    for the exit so that its moment is known to the millisecond.
    """

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        *,
        own_group: bool,
        on_exit: Callable[[int, float], object] | None = None,
    ) -> None:
        self.process = process
        self.own_group = own_group
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
    ) -> Container:
        """Start *command* in a process group of its own, as a container's processes are."""
        process = subprocess.Popen(  # noqa: S603 - the user's own command
            list(command),
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT if output is not None else None,
            start_new_session=True,
        )
        return cls(process, own_group=True, on_exit=on_exit)

    @property
    def pid(self) -> int:
        """The main process."""
        return self.process.pid

    def running(self) -> bool:
        """True until the main process has exited."""
        return not self._exited.is_set()

    def send(self, signum: int) -> None:
        """Send *signum* to the main process, as the runtime sends SIGTERM to PID 1."""
        if self.running():
            with contextlib.suppress(ProcessLookupError):  # exited in between
                self.process.send_signal(signum)

    def kill(self) -> None:
        """SIGKILL everything in the container."""
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
    """Reads the app's output: keeps the last lines, and copies it all to a file if asked."""

    def __init__(self, stream: IO[bytes], copy: Path | None = None, lines: int = 40) -> None:
        self.tail: collections.deque[str] = collections.deque(maxlen=lines)
        self._stream = stream
        self._copy = copy
        self._thread = threading.Thread(target=self._read, name="app-output", daemon=True)
        self._thread.start()

    def join(self, timeout: float) -> list[str]:
        """Wait a little for the last lines; return the tail."""
        self._thread.join(timeout)
        return list(self.tail)

    def _read(self) -> None:
        sink = self._copy.open("wb") if self._copy is not None else None
        try:
            for line in self._stream:
                self.tail.append(line.decode(errors="replace").rstrip("\r\n"))
                if sink is not None:
                    sink.write(line)
                    sink.flush()
        finally:
            if sink is not None:
                sink.close()
