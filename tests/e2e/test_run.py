"""``graceshut run`` as the entrypoint: real servers as its child, real signals, real HTTP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from graceshut._process import _proc as proc
from graceshut.cli._run import call_shutdown_route

from ..asgi_servers import ROOT, Server, free_port
from .test_servers import ONE_EACH, PHASES, TIMELINE, assert_timeline, get, play_termination

pytestmark = pytest.mark.e2e

StartServer = Callable[..., Server]
GRACESHUT = [sys.executable, "-m", "graceshut.cli"]


@pytest.mark.parametrize("kind", ["granian-run", "hypercorn-cli-run", "uvicorn-run"])
def test_sigterm_alone_runs_the_whole_timeline(start_server: StartServer, kind: str) -> None:
    """SIGTERM to `graceshut run`: 503 readiness, served through the delay, drained, exit 0."""
    server = start_server(kind, TIMELINE)
    seen = play_termination(server, lambda: server.signal(signal.SIGTERM))
    assert_timeline(seen)
    assert server.wait_exit() == 0, server.output()
    assert server.events_seen() == ONE_EACH, server.output()


def test_gunicorn_workers_under_graceshut_run(start_server: StartServer) -> None:
    """gunicorn -w 2 under `graceshut run`, SIGTERM alone: the timeline in every worker, exit 0."""
    server = start_server("gunicorn-2-run", TIMELINE)
    seen = play_termination(server, lambda: server.signal(signal.SIGTERM), workers=2)
    assert_timeline(seen)
    assert server.wait_exit() == 0, server.output()
    events = server.events_seen()
    assert events == {**dict.fromkeys(PHASES, 2), "pod-announce": 1}, server.output()


def test_granian_workers_and_websockets_under_graceshut_run(start_server: StartServer) -> None:
    """granian --workers 2: a WebSocket lives through the delay, every worker runs each phase."""
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    server = start_server("granian-2-run", {"GRACESHUT_PROPAGATION_DELAY": "1.0"})
    with connect(f"ws://127.0.0.1:{server.port}/ws") as ws:
        ws.send("before")
        assert ws.recv(timeout=5) == "before"
        sent = time.monotonic()
        server.signal(signal.SIGTERM)
        time.sleep(0.3)
        assert get(server, "/readyz").status_code == 503
        ws.send("during propagation")
        assert ws.recv(timeout=5) == "during propagation"
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
        assert time.monotonic() - sent >= 0.9
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1001
    assert server.wait_exit() == 0, server.output()
    seen = server.events_seen()
    # The handler saw its socket end (granian reports the close to the app as 1005).
    assert sum(n for event, n in seen.items() if event.startswith("websocket-closed")) == 1, seen
    for phase in PHASES:
        assert seen[phase] == 2, (phase, seen, server.output())
    assert seen["pod-announce"] == 1, seen


def prestop(server: Server) -> int:
    """The exec preStop hook's call (`graceshut prestop`'s client, in this process)."""
    return call_shutdown_route(f"{server.url}/shutdown")


def test_prestop_route_under_granian_alone(start_server: StartServer) -> None:
    """granian's own command line: the preStop route runs the timeline, then SIGTERM exits 0."""
    server = start_server("granian", TIMELINE)
    seen = play_termination(server, lambda: prestop(server))
    assert_timeline(seen)
    assert seen["trigger"] == 0, server.output()
    server.signal(signal.SIGTERM)
    assert server.wait_exit(10) == 0, server.output()
    assert server.events_seen() == ONE_EACH, server.output()


def test_prestop_then_sigterm_join_one_run_under_graceshut_run(start_server: StartServer) -> None:
    """An exec preStop hook, then SIGTERM to `graceshut run`: one run, each handler once, 0."""
    server = start_server("granian-run")
    assert prestop(server) == 0, server.output()
    server.signal(signal.SIGTERM)
    assert server.wait_exit(10) == 0, server.output()
    assert server.events_seen() == ONE_EACH, server.output()


def test_app_without_graceshut_gets_sigterm_at_once(start_server: StartServer) -> None:
    """No shutdown route in the app: `graceshut run` says so and hands SIGTERM on at once."""
    server = start_server("uvicorn-plain-run")
    sent = time.monotonic()
    server.signal(signal.SIGTERM)
    status = server.wait_exit(10)
    # Its own SIGTERM handling only: not held to the 20 s grace period (the lines below say
    # that the sequence was not waited for).
    assert time.monotonic() - sent < 10
    output = server.output()
    assert "did not run the shutdown sequence" in output, output
    assert "handing SIGTERM to the server at once" in output
    assert status == 128 + signal.SIGTERM, output  # plain uvicorn dies of the signal


def test_refused_credentials_hand_sigterm_on_at_once(start_server: StartServer) -> None:
    """The route refuses the token `graceshut run` sends: a clear line, SIGTERM at once."""
    server = start_server("uvicorn-token-run", {"GRACESHUT_TOKEN": "not-the-apps"})
    server.signal(signal.SIGTERM)
    status = server.wait_exit(10)
    output = server.output()
    assert "refused" in output, output
    assert "handing SIGTERM to the server at once" in output
    assert status in (0, 1), output  # uvicorn ran graceshut's own SIGTERM sequence
    assert server.events_seen()["announce"] == 1


def run(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # type: ignore[call-overload,no-any-return]
        [*GRACESHUT, "run", *command],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd=ROOT,
        **kwargs,
    )


def test_bad_commands_get_a_clear_message_and_the_shells_status() -> None:
    """No command: usage (2); unknown command: 127; a server dying at start: its status."""
    none = run([])
    assert none.returncode == 2
    assert "no COMMAND given" in none.stderr
    missing = run(["--", "no-such-server-xyz"])
    assert missing.returncode == 127
    assert "'no-such-server-xyz': command not found" in missing.stderr
    dying = run(["--", sys.executable, "-c", "raise SystemExit(3)"])
    assert dying.returncode == 3
    assert "exited with status 3" in dying.stderr
    bad_port = run(["--", "true"], env={**os.environ, "PORT": "http"})
    assert bad_port.returncode == 2
    assert "PORT='http' is not a port number" in bad_port.stderr


def start(command: list[str], tmp_path: Path, **env: str) -> subprocess.Popen[str]:
    """`graceshut run` with a route nobody answers (the shell scripts have no app)."""
    return subprocess.Popen(
        [*GRACESHUT, "run", "--url", f"http://127.0.0.1:{free_port()}/shutdown", "--", *command],
        cwd=tmp_path,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for(path: Path, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def test_a_shell_script_gets_sigterm_and_the_other_signals(tmp_path: Path) -> None:
    """A shell-script entrypoint gets SIGUSR1 and SIGTERM through `graceshut run`."""
    script = tmp_path / "entrypoint.sh"
    script.write_text(
        "trap 'echo usr1 >> got' USR1\n"
        "trap 'echo term >> got; exit 0' TERM\n"
        "touch started\n"
        "while true; do sleep 0.05; done\n"
    )
    init = start(["sh", str(script)], tmp_path)
    wait_for(tmp_path / "started")
    init.send_signal(signal.SIGUSR1)
    wait_for(tmp_path / "got")
    init.send_signal(signal.SIGTERM)
    output, _ = init.communicate(timeout=10)
    assert init.returncode == 0, output
    assert (tmp_path / "got").read_text().split() == ["usr1", "term"]
    assert "did not run the shutdown sequence" in output


def test_a_server_under_a_shell_without_exec_drains_and_nothing_is_left(
    start_server: StartServer,
) -> None:
    """`sh -c 'echo; uvicorn ...'` (no exec): the shell dies, uvicorn still drains, exit 0."""
    server = start_server("uvicorn-sh-run")
    seen = play_termination(server, lambda: server.signal(signal.SIGTERM))
    assert_timeline(seen)
    assert server.wait_exit() == 0, server.output()
    assert server.events_seen() == ONE_EACH, server.output()
    uvicorn_pid = int(server.events.read_text().split()[1])
    with pytest.raises(ProcessLookupError):
        os.kill(uvicorn_pid, 0)


def test_the_server_dies_with_graceshut_run(tmp_path: Path) -> None:
    """`graceshut run` SIGKILLed (a kubelet's end of grace outside a container): no orphan."""
    script = tmp_path / "entrypoint.sh"
    script.write_text("echo $$ > pid\nwhile true; do sleep 0.05; done\n")
    init = start(["sh", str(script)], tmp_path)
    wait_for(tmp_path / "pid")
    time.sleep(0.1)
    server = int((tmp_path / "pid").read_text())
    init.kill()
    init.communicate(timeout=10)
    deadline = time.monotonic() + 5
    while Path(f"/proc/{server}").exists() and "Z" not in state(server):
        assert time.monotonic() < deadline, "the server outlived graceshut run"
        time.sleep(0.02)


def state(pid: int) -> str:
    found = proc.stat(pid)
    return "gone" if found is None else found.state


def test_orphans_are_reaped_and_a_second_sigint_forces(tmp_path: Path) -> None:
    """An orphan re-parented to `graceshut run` is reaped; a second SIGINT kills the server."""
    code = (
        "import os, signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        # A grandchild whose parent exits at once: an orphan that exits a second later.
        "subprocess.Popen(['sh', '-c', '(sleep 1 &)'])\n"
        "open('started', 'w').close()\n"
        "time.sleep(60)\n"
    )
    init = start([sys.executable, "-c", code], tmp_path)
    wait_for(tmp_path / "started")
    time.sleep(0.5)
    assert len(children(init.pid)) == 2, "the orphan came to graceshut run, as to PID 1"
    time.sleep(1.5)
    assert [state for _, state in children(init.pid)] == ["S"], "the orphan was reaped"
    init.send_signal(signal.SIGINT)
    time.sleep(0.3)
    assert init.poll() is None, "one SIGINT is passed on, and this server ignores it"
    init.send_signal(signal.SIGINT)
    output, _ = init.communicate(timeout=10)
    assert init.returncode == 130, output
    assert "second SIGINT" in output
    assert children(init.pid) == []


def children(pid: int) -> list[tuple[int, str]]:
    """(pid, state) of the processes whose parent is *pid*, from /proc."""
    return [(p.pid, p.state) for p in proc.all_processes() if p.ppid == pid]
