"""ASGI servers (uvicorn, gunicorn, hypercorn, granian) running the e2e app in subprocesses."""

from __future__ import annotations

import collections
import contextlib
import fcntl
import os
import random
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from graceshut._process import _proc as proc

ROOT = Path(__file__).resolve().parents[1]

# One client for the tests' probes: httpx.get() builds a TLS context (reading the CA bundle)
# at every call, about 0.1 s of CPU on a loaded machine, enough to push a probe out of the
# window it was meant for. No keep-alive: each request is a new connection, as with
# httpx.get(), so that the requests of a multi-worker server spread over its workers.
HTTP = httpx.Client(limits=httpx.Limits(max_keepalive_connections=0))


def pod_credential(*, required: bool = True) -> dict[str, str]:
    """The header `graceshut prestop` sends from inside the pod: found the same way.

    With *required* false, no header when there is no pod secret (an app without graceshut).
    """
    from graceshut._process._secret import find_credential

    credential = find_credential()
    if not credential and not required:
        return {}
    assert credential, "no pod secret: no app has started in this test's pod"
    return {"Authorization": f"Bearer {credential}"}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now, and that nothing will take.

    Not one the kernel hands out: a port from its ephemeral range, closed again before
    the server binds it, can meanwhile become the local port of an outgoing connection
    (the load generators open thousands). These come from below that range, from a
    slice of it of each pytest-xdist process's own, and none twice in one process. A
    lock file holds each port for this process's lifetime, so that another test run on
    the same machine (its xdist processes have the same slices) never gets it too.
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    index = int(worker) if worker.isdigit() else 0
    low, high = _PORTS
    size = (high - low) // _SLICES
    start = low + (index % _SLICES) * size
    for _ in range(200):
        port = random.randrange(start, start + size)  # noqa: S311 - not a secret
        if port in _handed_out or not _reserve(port):
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port in {start}-{start + size}")


def _reserve(port: int) -> bool:
    """Hold *port* for this process until it exits; False if another process holds it."""
    _LOCKS.mkdir(mode=0o700, exist_ok=True)
    fd = os.open(_LOCKS / str(port), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return False
    _held.append(fd)  # released by the kernel when this process ends
    return True


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


#: Ports below the kernel's ephemeral range, cut into one slice per test process.
_PORTS = (12000, min(_ephemeral_low(), 32768))
_SLICES = 8
_handed_out: set[int] = set()
#: The lock files of the ports handed out, shared by every test run on the machine.
_LOCKS = Path(tempfile.gettempdir()) / f"graceshut-test-ports-{os.getuid()}"
_held: list[int] = []


class Server:
    """A server process running the e2e app, with its event log."""

    def __init__(self, argv: list[str], port: int, events: Path, env: dict[str, str]) -> None:
        self.port = port
        self.events = events
        self.url = f"http://127.0.0.1:{port}"
        self.log = events.with_suffix(".log")
        self._log_file = self.log.open("wb")
        self.process = subprocess.Popen(
            argv,
            cwd=ROOT,
            env={**os.environ, **env, "E2E_EVENTS": str(events), "PYTHONPATH": str(ROOT)},
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() reaps the workers too
        )
        self.wait_ready()

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.output()}")
            try:
                if HTTP.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"server not ready in {timeout}s:\n{self.output()}")

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait_exit(self, timeout: float = 30.0) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"server did not exit in {timeout}s:\n{self.output()}") from None

    def events_seen(self) -> collections.Counter[str]:
        if not self.events.exists():
            return collections.Counter()
        return collections.Counter(
            line.split()[0] for line in self.events.read_text().splitlines() if line
        )

    def output(self) -> str:
        self._log_file.flush()
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        # Under `graceshut run` the server has a session of its own: kill its groups too.
        for group in {self.process.pid, *_groups_under(self.process.pid)}:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
        self.process.wait()
        self._log_file.close()


def _groups_under(pid: int) -> set[int]:
    """The process groups of *pid*'s descendants, from /proc."""
    parents: dict[int, list[tuple[int, int]]] = collections.defaultdict(list)
    for process in proc.all_processes():
        parents[process.ppid].append((process.pid, process.pgrp))
    groups, todo = set(), [pid]
    while todo:
        for child, group in parents.pop(todo.pop(), []):
            groups.add(group)
            todo.append(child)
    return groups


def gunicorn(port: int, *, workers: int) -> list[str]:
    """gunicorn serving the e2e app with the uvicorn worker."""
    return [
        sys.executable, "-m", "gunicorn", "tests.e2e.app:app", "-k", "uvicorn_worker.UvicornWorker",
        "-w", str(workers), "-b", f"127.0.0.1:{port}",
    ]  # fmt: skip


def granian(port: int, *, workers: int = 1) -> list[str]:
    """granian serving the e2e app over ASGI (its default interface, RSGI, has no lifespan)."""
    return [
        sys.executable, "-m", "granian", "--interface", "asgi", "--host", "127.0.0.1",
        "--port", str(port), "--workers", str(workers), "tests.e2e.app:app",
    ]  # fmt: skip


def graceshut_run(command: list[str]) -> list[str]:
    """*command* as the child of ``graceshut run`` (which finds the route through $PORT)."""
    return [sys.executable, "-m", "graceshut.cli", "run", "--", *command]


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start a server kind running tests/e2e/app.py; all are killed at teardown."""
    servers: list[Server] = []

    def start(kind: str, env: dict[str, str] | None = None, port: int | None = None) -> Server:
        port = free_port() if port is None else port
        events = tmp_path / f"{kind}-{len(servers)}.events"
        python = sys.executable
        uvicorn = [python, "-m", "uvicorn", "tests.e2e.app:app", "--port", str(port)]
        hypercorn_cli = [
            python,
            "-m",
            "hypercorn",
            "tests.e2e.app:app",
            "--bind",
            f"127.0.0.1:{port}",
        ]
        argv = {
            "uvicorn": uvicorn,
            # The same routes without graceshut: what users run today.
            "uvicorn-plain": [
                python,
                "-m",
                "uvicorn",
                "tests.e2e.plain_app:app",
                "--port",
                str(port),
            ],
            "gunicorn": [*gunicorn(port, workers=1), "--graceful-timeout", "20"],
            # Four worker processes per instance, as most deployments run.
            "gunicorn-4": gunicorn(port, workers=4),
            "uvicorn-4": [
                python,
                "-m",
                "uvicorn",
                "tests.e2e.app:app",
                "--port",
                str(port),
                "--workers",
                "4",
            ],
            "hypercorn-asyncio": [python, "-m", "tests.e2e.hypercorn_main", str(port), "asyncio"],
            "hypercorn-trio": [python, "-m", "tests.e2e.hypercorn_main", str(port), "trio"],
            "hypercorn-cli": hypercorn_cli,
            "granian": granian(port),
            # Under `graceshut run`: SIGTERM calls the route before the server hears of it.
            "granian-run": graceshut_run(granian(port)),
            "granian-2-run": graceshut_run(granian(port, workers=2)),
            "hypercorn-cli-run": graceshut_run(hypercorn_cli),
            "gunicorn-2-run": graceshut_run(gunicorn(port, workers=2)),
            "uvicorn-run": graceshut_run(uvicorn),
            "uvicorn-plain-run": graceshut_run(
                [*uvicorn[:3], "tests.e2e.plain_app:app", *uvicorn[4:]]
            ),
            # A shell entrypoint that starts the server without exec.
            "uvicorn-sh-run": graceshut_run(["sh", "-c", f"echo starting; {shlex.join(uvicorn)}"]),
            # The app's token is not the one `graceshut run` has in its environment.
            "uvicorn-token-run": graceshut_run(["env", "GRACESHUT_TOKEN=the-apps", *uvicorn]),
        }[kind]
        settings = {
            "GRACESHUT_GRACE_PERIOD": "20",
            "GRACESHUT_SAFETY_MARGIN": "1",
            "GRACESHUT_PROPAGATION_DELAY": "1.5",
            **({"PORT": str(port)} if kind.endswith("-run") else {}),
            **(env or {}),
        }
        server = Server(argv, port, events, settings)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
