"""A throwaway PostgreSQL server for the contrib tests, started from ``initdb`` and ``postgres``.

The server lives in a temporary directory for the whole session, listens on 127.0.0.1 on
a free port, trusts local connections, and runs with ``fsync=off``. ``initdb`` refuses to
run as root, so as root both commands run as the ``postgres`` user. Each test that asks
for `pg_database` gets a database of its own. `PostgresServer.stopped` takes the server
down for a while, for tests of a database that went away.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from ..asgi_servers import free_port

__all__ = ["PostgresServer", "pg_database", "postgres", "running_postgres"]

_START_TIMEOUT = 30.0
_STOP_TIMEOUT = 30.0

FAST = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
"""Settings for tests: durability is not what they check."""


class PostgresServer:
    """One ``postgres`` process over a data directory made by ``initdb``."""

    def __init__(self, root: Path, bindir: Path, settings: dict[str, str] | None = None) -> None:
        self.root = root
        self.settings = FAST if settings is None else settings
        self.bindir = bindir
        self.data = root / "data"
        self.sockets = root / "sockets"
        self.log = root / "postgres.log"
        self.host = "127.0.0.1"
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None

    def initdb(self) -> None:
        """Create the data directory (once)."""
        self.sockets.mkdir()
        _give_to_postgres(self.root)
        _give_to_postgres(self.sockets)
        result = subprocess.run(
            [
                *_as_postgres(),
                str(self.bindir / "initdb"),
                "--pgdata",
                str(self.data),
                "--username=postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            pytest.fail(
                f"initdb failed with status {result.returncode}:\n{result.stdout}\n{result.stderr}",
                pytrace=False,
            )

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(
                [
                    *_ends_with_us(),
                    *_as_postgres(),
                    str(self.bindir / "postgres"),
                    "-D",
                    str(self.data),
                    "-h",
                    self.host,
                    "-p",
                    str(self.port),
                    "-k",
                    str(self.sockets),
                    *(f"--{name}={value}" for name, value in self.settings.items()),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + _START_TIMEOUT
        while True:
            try:
                with psycopg.connect(self.dsn("postgres"), connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    self._fail_start()
                time.sleep(0.05)

    def stop(self) -> None:
        """Fast shutdown: clients are disconnected, the server exits."""
        process, self._process = self._process, None
        if process is None:
            return
        pid = self._postmaster_pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGINT)
        try:
            process.wait(_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            process.kill()
            process.wait()

    @contextlib.contextmanager
    def stopped(self) -> Iterator[None]:
        """Keep the server down inside the block; it is up again after it."""
        self.stop()
        try:
            yield
        finally:
            self.start()

    def dsn(self, database: str) -> str:
        """A libpq connection string for *database*."""
        return f"host={self.host} port={self.port} user=postgres dbname={database}"

    def url(self, database: str) -> str:
        """An SQLAlchemy URL for *database* with psycopg 3 (sync and async engines)."""
        return f"postgresql+psycopg://postgres@{self.host}:{self.port}/{database}"

    def create_database(self) -> str:
        """Create an empty database and return its name."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        """Drop *name*, disconnecting whoever is still connected to it."""
        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def _postmaster_pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def _fail_start(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
        self._process = None
        log = self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""
        pytest.fail(
            f"PostgreSQL did not start on {self.host}:{self.port} within {_START_TIMEOUT:g}s; "
            f"its log ({self.log}) ends with:\n{log}",
            pytrace=False,
        )


@contextlib.contextmanager
def running_postgres(settings: dict[str, str] | None = None) -> Iterator[PostgresServer]:
    """A new server in a temporary directory, removed after the block."""
    bindir = _find_bindir()
    root = Path(tempfile.mkdtemp(prefix="graceshut-pg-"))
    server = PostgresServer(root, bindir, settings)
    try:
        server.initdb()
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server for the whole session; fails (never skips) if it cannot start."""
    with running_postgres() as server:
        yield server


@pytest.fixture
def pg_database(postgres: PostgresServer) -> Iterator[str]:
    """A fresh, empty database for one test, dropped afterwards."""
    name = postgres.create_database()
    yield name
    postgres.drop_database(name)


def _find_bindir() -> Path:
    found = shutil.which("initdb")
    candidates = [Path(found).resolve().parent] if found else []
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for bindir in candidates:
        if (bindir / "initdb").exists() and (bindir / "postgres").exists():
            return bindir
    pytest.fail(
        "these tests need a PostgreSQL server: initdb and postgres were found neither on "
        "the PATH nor in /usr/lib/postgresql/*/bin (Debian: apt-get install postgresql)",
        pytrace=False,
    )


def _as_postgres() -> list[str]:
    """The command prefix that runs a server command as an unprivileged user."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        pytest.fail(
            "running as root, and initdb refuses root: a 'postgres' user is needed "
            "(the postgresql package creates it)",
            pytrace=False,
        )
    runuser = shutil.which("runuser")
    if runuser is None:
        pytest.fail("running as root without runuser to drop to the postgres user", pytrace=False)
    return [runuser, "-u", "postgres", "--"]


def _ends_with_us() -> list[str]:
    """A command prefix that sends the server SIGTERM when the test process dies.

    Without it a run killed before its finalizers (a CI timeout, SIGKILL) would leave the
    server running for good. ``setpriv`` (util-linux) sets the parent-death signal and
    execs the rest; as root that is runuser, which passes SIGTERM on to postgres, which
    takes it as a smart shutdown.
    """
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM", "--"] if setpriv else []


def _give_to_postgres(path: Path) -> None:
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(path, user.pw_uid, user.pw_gid)
