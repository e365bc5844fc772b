"""Several worker processes in one pod: a trigger in any of them drains them all.

gunicorn, ``uvicorn --workers`` and hypercorn run the app in several processes of one
supervisor, and the kubelet's preStop call or a readiness probe lands on whichever the
kernel picks. The workers of one supervisor share a directory (under the temp dir,
named after the supervisor's PID and start time, so a recycled PID never finds an old
one):

- ``<pid>.sock``: each worker's Unix datagram socket, its registration;
- ``trigger``: created exclusively by the first worker to start a shutdown (the leader,
  which also runs the once-per-pod handlers); it holds the reason and the start time,
  so that every worker keeps to the same deadline;
- ``<pid>.report.json``: each worker's report, for the shutdown route to gather;
- ``<pid>.stopping``: a worker stopping on its own signal (its supervisor stopping the
  pod, or recycling this one worker), so a stopping worker can tell whether siblings
  go on serving the shared listening socket.

A datagram tells the siblings at once; the ``trigger`` file covers a probe that lands in
the microseconds before the datagram is read, and a worker (re)started after the
trigger. The last worker to leave removes the directory.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import multiprocessing
import os
import shutil
import socket
import stat
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import anyio

from .._core._config import ConfigError
from . import _proc as proc

logger = logging.getLogger("graceshut")

ENV_WORKER_DIR = "GRACESHUT_WORKER_DIR"
_TRIGGER = "trigger"


def configured_directory(environ: Mapping[str, str]) -> Path | Literal[False] | None:
    """``GRACESHUT_WORKER_DIR``: its directory, False when it is ``off``, None when unset.

    Raises:
        ConfigError: A relative path: each worker would resolve it against its own
            working directory, and workers started elsewhere would never meet.
    """
    raw = environ.get(ENV_WORKER_DIR)
    if raw is None:
        return None
    if raw.strip().lower() in ("", "off", "0", "false"):
        return False
    if not Path(raw).is_absolute():
        raise ConfigError(
            f"{ENV_WORKER_DIR}={raw!r} must be an absolute path (or off to serve alone)"
        )
    return Path(raw)


class WorkerGroup:
    """This process's membership in its supervisor's group of workers."""

    def __init__(self, directory: Path, pid: int | None = None) -> None:
        self.directory = directory
        self.pid = os.getpid() if pid is None else pid
        self._socket: socket.socket | None = None
        self._reports_changed: anyio.Event | None = None

    @classmethod
    def detect(cls) -> WorkerGroup | None:
        """The group this process belongs to, or None when it serves alone.

        ``GRACESHUT_WORKER_DIR`` names the directory explicitly (``off`` disables it);
        otherwise a process started by ``multiprocessing`` (uvicorn's and hypercorn's
        workers) or forked by a gunicorn or uWSGI master belongs to its parent's group.
        """
        explicit = configured_directory(os.environ)
        if explicit is not None:
            return None if explicit is False else cls(explicit)
        supervised = (
            multiprocessing.parent_process() is not None
            or "gunicorn.arbiter" in sys.modules
            or "uwsgi" in sys.modules  # only importable inside a uWSGI process
        )
        if not supervised:
            return None
        return cls.of_supervisor(os.getppid())

    @classmethod
    def of_supervisor(cls, supervisor: int) -> WorkerGroup | None:
        """The group of the workers *supervisor* started (None when ``off``).

        Raises:
            ConfigError: ``GRACESHUT_WORKER_DIR`` is not an absolute path.
        """
        explicit = configured_directory(os.environ)
        if explicit is not None:
            return None if explicit is False else cls(explicit)
        name = f"graceshut-{supervisor}-{_start_time(supervisor)}"
        return cls(Path(tempfile.gettempdir()) / name)

    # -- membership -------------------------------------------------------------------

    def join(self) -> None:
        """Register this worker: create the directory and bind its socket.

        Raises:
            OSError: The directory cannot be made, or it exists but is not a private
                directory of this user (another local user could have planted it).
        """
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = self.directory.lstat()
        if (
            not stat.S_ISDIR(info.st_mode)
            or info.st_uid != os.geteuid()
            or stat.S_IMODE(info.st_mode) & 0o077
        ):
            raise PermissionError(f"{self.directory} is not a private directory of this user")
        path = self._socket_path(self.pid)
        for stale in (path, self._stopping_path(self.pid)):  # a crashed process had our PID
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.setblocking(False)  # noqa: FBT003 - the stdlib's signature
        sock.bind(str(path))
        self._socket = sock
        # Also on exits that skip the lifespan's end (a SystemExit from a signal).
        atexit.register(self.leave)
        _remove_stale_groups(self.directory)
        logger.debug("joined worker group %s", self.directory, extra={"pid": self.pid})

    def leave(self) -> None:
        """Unregister; the last live worker removes the whole directory. Idempotent."""
        atexit.unregister(self.leave)
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        for path in (self._socket_path(self.pid), self._stopping_path(self.pid)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        if not self.siblings():
            for entry in list(self.directory.glob("*")):
                with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                    entry.unlink()
            with contextlib.suppress(OSError):
                self.directory.rmdir()

    def siblings(self) -> list[int]:
        """PIDs of the other live workers; sockets of dead ones are removed."""
        pids = []
        for path in self.directory.glob("*.sock"):
            try:
                pid = int(path.stem)
            except ValueError:
                continue
            if pid == self.pid:
                continue
            if _alive(pid):
                pids.append(pid)
            else:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        return sorted(pids)

    # -- the trigger --------------------------------------------------------------------

    def claim(self, reason: str, started_at: float) -> tuple[bool, str, float]:
        """Record the pod's first trigger, unless a sibling did it first.

        Returns whether this worker is the leader, and the pod's reason and start time.
        """
        record = json.dumps({"reason": reason, "started_at": started_at, "pid": self.pid})
        # Written in full before it appears under its name: a sibling never reads it half.
        temporary = self.directory / f"{self.pid}.trigger.tmp"
        temporary.write_text(record)
        try:
            os.link(temporary, self.directory / _TRIGGER)
        except FileExistsError:
            existing = self.trigger()
            if existing is not None:
                return False, existing[0], existing[1]
            return False, reason, started_at
        finally:
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()
        return True, reason, started_at

    def trigger(self) -> tuple[str, float] | None:
        """The pod's trigger (reason, start time), if a worker started a shutdown."""
        try:
            data = json.loads((self.directory / _TRIGGER).read_text())
            return str(data["reason"]), float(data["started_at"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def triggered(self) -> bool:
        """Whether any worker started a shutdown (one ``stat``; for readiness probes)."""
        return (self.directory / _TRIGGER).exists()

    def mark_stopping(self) -> None:
        """Record that this worker is stopping on its own, not with the whole pod."""
        with contextlib.suppress(OSError):
            self._stopping_path(self.pid).touch()

    def others_serving(self) -> bool:
        """Whether a live sibling serves on and is not stopping: the pod goes on without us.

        False once the pod's shutdown was triggered, and when every sibling got its own
        signal too (a supervisor stopping the pod signals all its workers at once).
        """
        if self.triggered():
            return False
        return any(not self._stopping_path(pid).exists() for pid in self.siblings())

    def broadcast(self, kind: str, **fields: Any) -> None:
        """Tell every sibling at once; never blocks (a full queue drops the message)."""
        if self._socket is None:
            return
        message = json.dumps({"kind": kind, "pid": self.pid, **fields}).encode()
        for pid in self.siblings():
            with contextlib.suppress(OSError):
                self._socket.sendto(message, str(self._socket_path(pid)))

    async def listen(self, on_trigger: Callable[[str, float], None]) -> None:
        """Act on siblings' messages until cancelled."""
        sock = self._socket
        if sock is None:
            return
        while True:
            await anyio.wait_readable(sock)
            try:
                data = sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                return
            try:
                message = json.loads(data)
                kind = message["kind"]
                if kind == "trigger":
                    reason, started_at = str(message["reason"]), float(message["started_at"])
            except (ValueError, KeyError, TypeError):
                logger.debug("ignored a malformed message in %s", self.directory)
                continue
            if kind == "trigger":
                on_trigger(reason, started_at)
            elif kind == "report" and self._reports_changed is not None:
                self._reports_changed.set()

    # -- reports ---------------------------------------------------------------------

    def publish_report(self, report: dict[str, Any]) -> None:
        """Write this worker's report for the shutdown route, and say so."""
        path = self.directory / f"{self.pid}.report.json"
        temporary = path.with_suffix(".tmp")
        try:
            temporary.write_text(json.dumps(report))
            temporary.replace(path)
        except OSError:
            logger.warning("could not publish this worker's report in %s", self.directory)
            return
        self.broadcast("report")

    async def gather_reports(self, deadline: float) -> list[dict[str, Any]]:
        """Every live worker's report, waiting for them until *deadline* (monotonic)."""
        while True:
            pids = [self.pid, *self.siblings()]
            reports = {pid: self._read_report(pid) for pid in pids}
            missing = [pid for pid, r in reports.items() if r is None]
            remaining = deadline - time.monotonic()
            if not missing or remaining <= 0:
                break
            self._reports_changed = anyio.Event()
            # Wakes on a sibling's datagram; the timeout covers one that crashed.
            with anyio.move_on_after(min(remaining, 0.25)):
                await self._reports_changed.wait()
        found = [r for r in reports.values() if r is not None]
        found += [
            {"pid": p, "ok": False, "error": "no report before the deadline"} for p in missing
        ]
        return sorted(found, key=lambda r: int(r.get("pid", 0)))

    def _read_report(self, pid: int) -> dict[str, Any] | None:
        try:
            data = json.loads((self.directory / f"{pid}.report.json").read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def _socket_path(self, pid: int) -> Path:
        return self.directory / f"{pid}.sock"

    def _stopping_path(self, pid: int) -> Path:
        return self.directory / f"{pid}.stopping"


def _remove_stale_groups(current: Path) -> None:
    """Remove directories of supervisors that are gone (killed before their workers left)."""
    for directory in current.parent.glob("graceshut-*-*"):
        if directory == current:
            continue
        _, pid, started = directory.name.split("-", 2)
        try:
            owner = directory.lstat().st_uid
            alive = _alive(int(pid)) and _start_time(int(pid)) == started
        except (OSError, ValueError):
            continue
        if owner == os.geteuid() and not alive:
            shutil.rmtree(directory, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks (Linux), so recycled PIDs differ."""
    found = proc.stat(pid)
    return found.start_time if found is not None else "0"
