"""The ``graceshut`` command refuses bad input at once, naming the option, and loses nothing.

Each test runs the real command in a subprocess, as a preStop hook or CI would.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from graceshut.simulate import _preflight

from .asgi_servers import ROOT, free_port

FAST = ["--endpoint-lag", "0.5", "--warmup", "1", "--rate", "50", "--no-progress", "--json"]


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m graceshut.cli ARGS`` from the repository root."""
    return subprocess.run(
        [sys.executable, "-m", "graceshut.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=env,
        check=False,
    )


def leaves(marker: Path) -> list[str]:
    """A command that would leave *marker* behind, if it were ever started."""
    return [sys.executable, "-c", f"open({str(marker)!r}, 'w').close()"]


def test_version_prints_the_installed_version() -> None:
    """``graceshut --version`` prints the version from the package metadata, exit 0."""
    result = cli("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"graceshut {importlib.metadata.version('graceshut')}"


def test_help_describes_apps_on_kubernetes() -> None:
    """``graceshut --help`` is about apps on Kubernetes (not ASGI only) and lists --version."""
    result = cli("--help")
    assert result.returncode == 0
    assert "for apps on Kubernetes" in result.stdout
    assert "ASGI" not in result.stdout
    assert "--version" in result.stdout


@pytest.mark.parametrize(
    "url",
    [
        "ftp://127.0.0.1/shutdown",
        "127.0.0.1:8000/shutdown",
        "/shutdown",
        "http:///shutdown",
        "http://127.0.0.1:99999/shutdown",
        "http://127.0.0.1:8000/shut down",
        "gopher://127.0.0.1:70/",
    ],
)
def test_prestop_refuses_what_is_not_an_http_url(url: str) -> None:
    """Only http:// and https:// URLs with a host: anything else is exit 2 naming the URL."""
    result = cli("prestop", url, "--timeout", "2")
    assert result.returncode == 2
    assert "graceshut prestop: error: argument url:" in result.stderr
    assert "unreachable" not in result.stderr, "nothing was tried"


def test_prestop_never_reads_a_file_url(tmp_path: Path) -> None:
    """A file:// URL is refused before it is opened: its content never reaches stderr."""
    secret = tmp_path / "secret.txt"
    secret.write_text("not-for-the-pod-events-4f1c\n")
    result = cli("prestop", secret.as_uri())
    assert result.returncode == 2
    assert f"argument url: {secret.as_uri()!r} is not an http:// or https:// URL" in result.stderr
    assert "not-for-the-pod-events" not in result.stderr + result.stdout


@pytest.mark.parametrize("timeout", ["-1", "0", "nan", "inf", "-inf", "soon"])
def test_prestop_refuses_a_timeout_that_is_not_positive(timeout: str) -> None:
    """--timeout must be a finite number of seconds above 0; the error names --timeout."""
    result = cli("prestop", "http://127.0.0.1:1/shutdown", "--timeout", timeout)
    assert result.returncode == 2
    assert "argument --timeout:" in result.stderr
    assert "out of range" not in result.stderr
    assert "in progress" not in result.stderr


@pytest.mark.parametrize("value", ["nan", "inf", "-3", "0"])
def test_prestop_refuses_a_bad_default_timeout_naming_the_variable(value: str) -> None:
    """Without --timeout, a bad GRACESHUT_GRACE_PERIOD is exit 2 naming the variable."""
    env = {**os.environ, "GRACESHUT_GRACE_PERIOD": value}
    result = cli("prestop", "http://127.0.0.1:1/shutdown", env=env)
    assert result.returncode == 2
    assert f"GRACESHUT_GRACE_PERIOD={value!r}" in result.stderr


def test_prestop_accepts_a_good_timeout_and_url() -> None:
    """A valid URL and timeout pass the checks and the call is tried (exit 3: nobody there)."""
    result = cli("prestop", f"http://127.0.0.1:{free_port()}/shutdown", "--timeout", "0.5")
    assert result.returncode == 3, result.stderr
    assert "unreachable" in result.stderr


@pytest.mark.parametrize("url", ["ftp://x", "file:///etc/hostname", "http://", "localhost:8000"])
def test_run_refuses_a_bad_url_before_it_starts_the_server(url: str, tmp_path: Path) -> None:
    """``graceshut run --url`` takes http(s) only, checked before the command runs."""
    marker = tmp_path / "started"
    result = cli("run", "--url", url, "--", *leaves(marker))
    assert result.returncode == 2
    assert "argument --url:" in result.stderr
    assert not marker.exists(), "the server was never started"


@pytest.mark.parametrize("option", ["--app-log", "--junit-xml", "--svg", "--html"])
def test_simulate_refuses_an_output_it_cannot_write_before_starting_the_app(
    option: str, tmp_path: Path
) -> None:
    """An output file in a missing directory, or a directory: exit 2, the app never started."""
    marker = tmp_path / "started"
    for path in (tmp_path / "missing" / "out.txt", tmp_path):
        result = cli("simulate", "--no-progress", option, str(path), "--", *leaves(marker))
        assert result.returncode == 2, result.stderr
        assert f"graceshut simulate: error: {option} {path}: cannot write there" in result.stderr
        assert not marker.exists(), "the app was never started"
    assert not (tmp_path / "missing").exists()


def test_simulate_checking_an_output_leaves_no_file_behind(tmp_path: Path) -> None:
    """The up-front check of --junit-xml creates nothing when the run is refused later."""
    report = tmp_path / "junit.xml"
    result = cli(
        "simulate", "--no-progress", "--junit-xml", str(report), "--app-log",
        str(tmp_path / "missing" / "app.log"), "--", *leaves(tmp_path / "started"),
    )  # fmt: skip
    assert result.returncode == 2
    assert not report.exists()


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("pod-1", "'pod-1' is not an IPv4 address"),
        ("10.0.0.300", "'10.0.0.300' is not an IPv4 address"),
        ("::1", "'::1' is not an IPv4 address"),
        ("0.0.0.0", "'0.0.0.0' is not an address a pod can have"),
        ("203.0.113.7", "'203.0.113.7' is not an address of this machine"),
    ],
)
def test_simulate_refuses_a_bad_pod_ip(address: str, message: str, tmp_path: Path) -> None:
    """--pod-ip must be an IPv4 address of this machine: an argparse error naming it."""
    marker = tmp_path / "started"
    result = cli("simulate", "--no-progress", "--pod-ip", address, "--", *leaves(marker))
    assert result.returncode == 2
    assert f"argument --pod-ip: {message}" in result.stderr
    assert not marker.exists()


class Listener:
    """A real second process listening on a TCP port."""

    def __init__(self, host: str, port: int, family: str = "AF_INET") -> None:
        code = (
            "import socket, sys, time\n"
            f"s = socket.socket(socket.{family})\n"
            f"s.bind(({host!r}, {port}))\n"
            "s.listen()\n"
            "print('listening', flush=True)\n"
            "time.sleep(120)\n"
        )
        self.process = subprocess.Popen(
            [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True
        )
        assert self.process.stdout is not None
        assert self.process.stdout.readline().strip() == "listening"
        self.pid = self.process.pid
        self.port = port

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(10)


@pytest.fixture
def listener() -> Iterator[Listener]:
    """Another process on 127.0.0.1:<a free port>, ended after the test."""
    taken = Listener("127.0.0.1", free_port())
    yield taken
    taken.stop()


def test_simulate_names_the_process_that_holds_the_port(listener: Listener) -> None:
    """Port taken on 127.0.0.1: exit 2 naming the holder's pid, not "bind it to 0.0.0.0"."""
    port = str(listener.port)
    result = cli(
        "simulate", "--port", port, *FAST,
        "--", sys.executable, "-m", "uvicorn", "tests.e2e.plain_app:app",
        "--host", "0.0.0.0", "--port", port,
    )  # fmt: skip
    assert result.returncode == 2, result.stdout
    assert f"port {port} is already in use by pid {listener.pid} ({sys.executable} -c" in (
        result.stderr
    )
    assert f"listening on 127.0.0.1:{port}" in result.stderr
    assert "bind it to 0.0.0.0" not in result.stderr + result.stdout


def test_port_taken_tells_the_apps_own_listener_from_another(listener: Listener) -> None:
    """The app's own socket (it or a child holds it) is not "taken"; another process's is."""
    port = listener.port
    assert f"by pid {listener.pid} " in str(_preflight.port_taken(port))
    assert _preflight.port_taken(port, app=listener.pid) is None
    parent = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert _preflight.port_taken(port, app=parent.pid) is not None, "not its child"
    finally:
        parent.kill()
        parent.wait(10)


def test_port_taken_counts_ipv6_wildcard_but_not_ipv6_loopback() -> None:
    """'::' (dual-stack) keeps an IPv4 app from the port; '::1' does not."""
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    port = free_port()
    loopback = Listener("::1", port, "AF_INET6")
    try:
        assert _preflight.port_taken(port) is None
    finally:
        loopback.stop()
    wildcard = Listener("::", port, "AF_INET6")
    try:
        assert f"listening on [::]:{port}" in str(_preflight.port_taken(port))
    finally:
        wildcard.stop()


@pytest.mark.e2e
def test_simulate_keeps_reading_and_keeps_the_verdict_when_its_files_fill_up(
    tmp_path: Path,
) -> None:
    """Outputs on /dev/full: the app's 300 KiB are read, the run is played, the verdict stands."""
    port = str(free_port())
    noisy = (
        "import runpy, sys\n"
        "sys.stdout.write(('x' * 99 + '\\n') * 3000)\n"  # far past a pipe's 64 KiB
        "sys.stdout.flush()\n"
        f"sys.argv = ['uvicorn', 'examples.app:app', '--host', '0.0.0.0', '--port', {port!r}]\n"
        "runpy.run_module('uvicorn', run_name='__main__')\n"
    )
    result = cli(
        "simulate", "--port", port, "--prestop-http", "/shutdown",
        "--prestop-header", "Authorization: Bearer full-disk-token",
        "--env", "GRACESHUT_TOKEN=full-disk-token",
        "--env", f"DEMO_DATABASE={tmp_path / 'demo.sqlite3'}",
        "--env", "GRACESHUT_PROPAGATION_DELAY=1", "--env", "GRACESHUT_GRACE_PERIOD=30",
        "--app-log", "/dev/full", "--junit-xml", "/dev/full", "--svg", "/dev/full",
        *FAST, "--", sys.executable, "-c", noisy,
    )  # fmt: skip
    report = json.loads(result.stdout)
    assert report["requests"]["sent"] > 0, "the app got ready: its output was read"
    assert any("could not be written to /dev/full" in w for w in report["warnings"])
    assert "graceshut simulate: warning: cannot write /dev/full" in result.stderr
    assert result.returncode == (0 if report["clean"] else 1), result.stderr
    assert report["clean"] is True, (report["problems"], report["app_output_tail"])
