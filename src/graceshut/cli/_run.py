"""``graceshut run [--url URL] -- COMMAND...``: a graceshut-aware init for the entrypoint.

Some servers (granian, hypercorn's command line, gunicorn's own ASGI worker) stop
accepting connections the moment SIGTERM reaches them, before the app can keep serving
through the propagation delay. Run as the container's entrypoint, this command starts
the server as its child and, on SIGTERM, first calls the app's shutdown route with the
client of ``graceshut prestop`` (same authentication): the app runs its whole sequence
while it still serves, and only when the route answers is SIGTERM handed to the server.

It also does what PID 1 must: it reaps the zombies re-parented to it, forwards the
other signals, and leaves no process behind when the server exits. Only the standard
library: it runs in any image that has graceshut installed.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any

from .._process import _proc as proc
from . import _types as types
from ._prestop import EXIT_CLEAN, EXIT_HANDLERS_FAILED, add_prestop_command

EXIT_USAGE = 2
EXIT_CANNOT_EXECUTE = 126
EXIT_NOT_FOUND = 127
EXIT_FORCED = 128 + signal.SIGINT

# Signals passed on to the server as they come (SIGTERM is handled apart). SIGTTIN and
# SIGTTOU are gunicorn's "one worker more / less"; SIGHUP its reload.
FORWARDED = tuple(
    getattr(signal, name)
    for name in (
        "SIGHUP", "SIGINT", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGWINCH", "SIGTTIN", "SIGTTOU",
        "SIGALRM", "SIGCONT",
    )
    if hasattr(signal, name)
)  # fmt: skip
# A terminal sends these to a whole foreground process group: so do we, to the server's.
TO_THE_GROUP = (signal.SIGINT, signal.SIGQUIT)
# How long processes left behind by the server get after SIGTERM, before SIGKILL.
LEFTOVER_TIMEOUT = 10.0
_ROUTE_DONE = 0  # the byte the route call writes to the wake-up socket (no signal is 0)
_PR_SET_CHILD_SUBREAPER = 36
_PR_SET_PDEATHSIG = 1
_MAX_PORT = 65535


def add_run_command(commands: Any) -> None:
    """Register the ``run`` sub-command."""
    parser = commands.add_parser(
        "run",
        help="run the server as the container's init: SIGTERM calls the shutdown route first",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        usage="graceshut run [--url URL] -- COMMAND...",
        epilog="Exit status: the server's (0 after a clean sequence), 126 or 127 when the "
        "command cannot run, 130 when forced by a second SIGINT, 2 for bad options.",
    )
    parser.add_argument(
        "--url",
        type=types.url,
        help="the shutdown route (default: the admin listener's when GRACESHUT_ADMIN_ADDRESS is "
        "a port, else http://127.0.0.1:$PORT/shutdown, PORT 8000 if unset)",
    )
    parser.add_argument(
        "command", nargs=argparse.REMAINDER, metavar="COMMAND", help="the server's command line"
    )
    parser.set_defaults(run=run_command, parser=parser)


def run_command(args: argparse.Namespace) -> int:
    """Run the server until it exits; returns the status to exit with."""
    command = list(args.command)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        args.parser.error("no COMMAND given: graceshut run [--url URL] -- COMMAND...")
    try:
        url = args.url or default_url(os.environ)
    except ValueError as exc:
        args.parser.error(str(exc))
    return Init(command, url).run()


def default_url(environ: Any) -> str:
    """The admin listener's route, else ``http://127.0.0.1:$PORT/shutdown`` (PORT 8000).

    The admin listener's when ``GRACESHUT_ADMIN_ADDRESS`` is a port or ``HOST:PORT``:
    a Celery worker has no other HTTP port.
    """
    admin = _admin_url(environ)
    if admin is not None:
        return admin
    raw = environ.get("PORT") or "8000"
    if not raw.isdigit() or not 0 < int(raw) <= _MAX_PORT:
        msg = f"PORT={raw!r} is not a port number: set PORT or give --url"
        raise ValueError(msg)
    return f"http://127.0.0.1:{int(raw)}/shutdown"


def _admin_url(environ: Any) -> str | None:
    from .._http._admin import parse_admin_address  # noqa: PLC0415 - only when it is set

    address = parse_admin_address(None, environ)  # a bad value: ConfigError, a ValueError
    if address is None or isinstance(address, str):
        return None  # none, or a Unix socket: the app's port then
    host, port = address
    if host in ("0.0.0.0", "::"):  # noqa: S104 - every address: loopback is one of them
        host = "127.0.0.1" if host == "0.0.0.0" else "::1"  # noqa: S104
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/shutdown"


def call_shutdown_route(url: str) -> int:
    """Call the route exactly as ``graceshut prestop URL --quiet`` would; its exit status."""
    # Through the prestop command's own parser, so that every way it finds credentials
    # (options' defaults, environment, files) applies here unchanged.
    parser = argparse.ArgumentParser(prog="graceshut", add_help=False)
    add_prestop_command(parser.add_subparsers(dest="command"))
    prestop = parser.parse_args(["prestop", url, "--quiet"])
    status: int = prestop.run(prestop)
    return status


class Init:
    """The server as a child process; signals in, one exit status out."""

    def __init__(self, command: list[str], url: str) -> None:
        self.command = command
        self.url = url
        self.child: subprocess.Popen[bytes] | None = None
        self.status: int | None = None  # set once the server has exited (or was forced)
        self.route_status: int | None = None
        self.route_started = False
        self.handed_on = False  # SIGTERM given to the server
        self.interrupted = False
        self.forced = False
        self._wake_r, self._wake_w = socket.socketpair()

    def run(self) -> int:
        """Start the child, relay signals until it exits, clean up; the exit status."""
        _become_subreaper()
        previous = self._install()
        try:
            try:
                self.child = subprocess.Popen(  # noqa: S603 - the user's own command
                    self.command,
                    preexec_fn=_child_setup(os.getpid()),  # noqa: PLW1509 - no threads yet
                )
            except FileNotFoundError:
                _say(f"cannot run {self.command[0]!r}: command not found")
                return EXIT_NOT_FOUND
            except OSError as exc:
                _say(f"cannot run {self.command[0]!r}: {exc.strerror}")
                return EXIT_CANNOT_EXECUTE
            status = self._relay()
            self._stop_leftovers()
            return status
        finally:
            self._restore(previous)

    def _install(self) -> dict[int, Any]:
        for sock in (self._wake_r, self._wake_w):
            sock.setblocking(False)  # noqa: FBT003 - the socket API
        signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        previous = {}
        for signum in (signal.SIGTERM, signal.SIGCHLD, *FORWARDED):
            # The handler does nothing: the wake-up socket carries the signal's number.
            previous[signum] = signal.signal(signum, _noop)
        return previous

    def _restore(self, previous: dict[int, Any]) -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        signal.set_wakeup_fd(-1)
        self._wake_r.close()
        self._wake_w.close()

    def _relay(self) -> int:
        while True:
            self._reap()
            if self.status is not None:
                break
            select.select([self._wake_r], [], [], 0.5)
            with contextlib.suppress(BlockingIOError):
                for signum in self._wake_r.recv(256):
                    self._on(signum)
        return self._exit_status()

    def _on(self, signum: int) -> None:
        if signum == _ROUTE_DONE:
            self._route_answered()
        elif signum == signal.SIGTERM:
            if not self.route_started:
                self.route_started = True
                call = threading.Thread(target=self._call_route, name="route", daemon=True)
                call.start()
            elif self.handed_on:
                self._send(signal.SIGTERM)
            # else: the route call under way holds it; a repeated SIGTERM joins that run
        elif signum == signal.SIGINT and self.interrupted:
            _say("second SIGINT: killing the server")
            self.forced = True
            self._kill_all()
            self.status = EXIT_FORCED
        elif signum in FORWARDED:
            self.interrupted = self.interrupted or signum == signal.SIGINT
            self._send(signum, group=signum in TO_THE_GROUP)

    def _call_route(self) -> None:
        try:
            self.route_status = call_shutdown_route(self.url)
        except Exception as exc:  # the server must get SIGTERM whatever happens
            _say(f"calling {self.url} failed: {exc!r}")
            self.route_status = -1
        with contextlib.suppress(OSError):
            self._wake_w.send(bytes([_ROUTE_DONE]))

    def _route_answered(self) -> None:
        if self.route_status not in (EXIT_CLEAN, EXIT_HANDLERS_FAILED):
            _say(
                f"the shutdown route {self.url} did not run the shutdown sequence (see the line "
                "above; is graceshut installed in the app, on this port, with these "
                "credentials?): handing SIGTERM to the server at once"
            )
        self.handed_on = True
        self._send(signal.SIGTERM)

    def _send(self, signum: int, *, group: bool = False) -> None:
        if self.child is None or self.status is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(self.child.pid, signum)
            else:
                self.child.send_signal(signum)

    def _reap(self) -> None:
        """Collect every exited child: the server, and orphans re-parented to this process."""
        while True:
            try:
                pid, wait_status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if self.child is not None and pid == self.child.pid:
                self.child.returncode = os.waitstatus_to_exitcode(wait_status)
                self.status = self.child.returncode

    def _exit_status(self) -> int:
        assert self.child is not None  # noqa: S101 - set before the relay starts
        code = self.child.returncode
        if self.forced or code is None:
            return EXIT_FORCED
        if code == -signal.SIGTERM and self.handed_on and self.route_status == EXIT_CLEAN:
            # The sequence ran clean and the server (or a shell around it) ended on the
            # SIGTERM it was handed: a clean stop.
            return 0
        if not self.route_started:
            _say(f"{self.command[0]} exited with status {_shell_status(code)}")
        return _shell_status(code)

    def _stop_leftovers(self) -> None:
        """SIGTERM what the server left running (its group, orphans); SIGKILL after a while."""
        deadline = time.monotonic() + LEFTOVER_TIMEOUT
        signalled = False
        while leftovers := self._leftovers():
            if not signalled:
                self._signal_all(leftovers, signal.SIGTERM)
                signalled = True
            if time.monotonic() > deadline:
                _say(f"processes {sorted(leftovers)} still running: killing them")
                self._signal_all(leftovers, signal.SIGKILL)
                deadline = float("inf")
            select.select([self._wake_r], [], [], 0.1)
            with contextlib.suppress(BlockingIOError):
                if signal.SIGINT in self._wake_r.recv(256):  # Ctrl-C: do not wait
                    deadline = time.monotonic()
            self._reap_any()

    def _leftovers(self) -> set[int]:
        """Our remaining children, and the members of the server's process group."""
        self._reap_any()
        group = self.child.pid if self.child is not None else None
        found = set()
        for pid, ppid, pgrp in _processes():
            if ppid == os.getpid() or (group is not None and pgrp == group):
                found.add(pid)
        return found

    def _signal_all(self, pids: set[int], signum: int) -> None:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signum)

    def _kill_all(self) -> None:
        if self.child is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.child.pid, signal.SIGKILL)
        self._signal_all(self._leftovers(), signal.SIGKILL)

    def _reap_any(self) -> None:
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return


def _processes() -> list[tuple[int, int, int]]:
    """(pid, parent pid, process group) of every process, from /proc (Linux)."""
    # No /proc (macOS): [], and only what the kernel re-parents to us is reaped.
    return [(p.pid, p.ppid, p.pgrp) for p in proc.all_processes()]


def _child_setup(parent: int) -> Any:
    """What the child does between fork and exec."""
    libc = _libc()

    def setup() -> None:
        # Its own session and process group: what it leaves behind can be found, and a
        # terminal's Ctrl-C reaches it once, through us.
        os.setsid()
        if libc is not None:
            # Killed with us (outside a container nothing else would end it).
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if os.getppid() != parent:  # we died before that took effect
                os._exit(EXIT_FORCED)

    return setup


def _libc() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def _become_subreaper() -> None:
    """Outside a PID namespace (a test, a VM), orphans of the server come to us as to PID 1."""
    libc = _libc()
    if libc is not None:
        libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _shell_status(code: int) -> int:
    """A signal death as a shell reports it (128 + the signal's number)."""
    return 128 - code if code < 0 else code


def _noop(signum: int, frame: object) -> None:
    """The wake-up socket tells the main loop which signal came."""


def _say(message: str) -> None:
    print(f"graceshut run: {message}", file=sys.stderr, flush=True)
