"""``graceshut prestop`` against a real uvicorn server running the e2e app."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from .asgi_servers import Server, free_port

StartServer = Callable[..., Server]


def prestop(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "graceshut.cli", "prestop", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


@pytest.mark.e2e
def test_prestop_waits_for_the_report_and_exits_0(start_server: StartServer) -> None:
    """The client waits until the app drained and prints the report; exit status 0."""
    server = start_server("uvicorn", {"GRACESHUT_PROPAGATION_DELAY": "0.2"})
    result = prestop(f"{server.url}/shutdown")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert report["reason"] == "prestop"


@pytest.mark.e2e
def test_prestop_reports_failed_handlers_with_status_1(start_server: StartServer) -> None:
    """A handler failure shows in stderr (the FailedPreStopHook event) and exit status 1."""
    server = start_server("uvicorn", {"GRACESHUT_PROPAGATION_DELAY": "0.2", "E2E_FAIL": "release"})
    result = prestop(f"{server.url}/shutdown", "--quiet")
    assert result.returncode == 1
    assert result.stdout == ""
    assert "e2e-release (error: RuntimeError: release failed on purpose)" in result.stderr


@pytest.mark.e2e
def test_prestop_sends_the_token_from_a_file(start_server: StartServer, tmp_path: Path) -> None:
    """--token-file is read and sent as a bearer token; a wrong one is refused with 2."""
    server = start_server(
        "uvicorn", {"GRACESHUT_PROPAGATION_DELAY": "0.2", "GRACESHUT_TOKEN": "t0ken"}
    )
    wrong = tmp_path / "wrong"
    wrong.write_text("nope\n")
    refused = prestop(f"{server.url}/shutdown", "--token-file", str(wrong))
    assert refused.returncode == 2
    assert "HTTP 403" in refused.stderr
    assert "invalid token" in refused.stderr
    # No token anywhere and no pod secret: nothing is sent.
    nothing = {"PATH": "/usr/bin", "GRACESHUT_SECRET_DIR": str(tmp_path / "none")}
    missing = prestop(f"{server.url}/shutdown", env=nothing)
    assert missing.returncode == 2
    assert "HTTP 401" in missing.stderr
    right = tmp_path / "right"
    right.write_text("t0ken\n")
    accepted = prestop(f"{server.url}/shutdown?wait=0", "--token-file", str(right))
    assert accepted.returncode == 0, accepted.stderr


def test_prestop_unreachable_is_status_3() -> None:
    """Nothing listening: exit status 3 and the reason on stderr."""
    result = prestop(f"http://127.0.0.1:{free_port()}/shutdown", "--timeout", "2")
    assert result.returncode == 3
    assert "unreachable" in result.stderr


def test_prestop_bad_token_file_is_a_clear_error(tmp_path: Path) -> None:
    """An unreadable or empty token file is refused before any request."""
    result = prestop("http://127.0.0.1:9/shutdown", "--token-file", str(tmp_path / "absent"))
    assert result.returncode == 2
    assert "cannot read --token-file" in result.stderr
    empty = tmp_path / "empty"
    empty.write_text("  \n")
    result = prestop("http://127.0.0.1:9/shutdown", "--token-file", str(empty))
    assert "is empty" in result.stderr


@pytest.mark.e2e
def test_prestop_never_goes_through_a_proxy(start_server: StartServer) -> None:
    """HTTP_PROXY in the pod must not receive the call (it would carry the token away)."""
    import os

    server = start_server("uvicorn", {"GRACESHUT_PROPAGATION_DELAY": "0"})
    dead_proxy = f"http://127.0.0.1:{free_port()}"
    env = {**os.environ, "HTTP_PROXY": dead_proxy, "http_proxy": dead_proxy, "NO_PROXY": ""}
    result = prestop(f"{server.url}/shutdown", "--quiet", env=env)
    assert result.returncode == 0, result.stderr
