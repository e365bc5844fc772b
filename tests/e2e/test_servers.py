"""Real servers in subprocesses, real signals, real HTTP: the termination as Kubernetes plays it."""

from __future__ import annotations

import concurrent.futures
import signal
import time
from collections.abc import Callable

import httpx
import pytest

from ..asgi_servers import HTTP, Server, pod_credential

pytestmark = pytest.mark.e2e

StartServer = Callable[..., Server]
PHASES = ["announce", "drain", "flush", "release", "report"]
ONE_EACH = dict.fromkeys([*PHASES, "pod-announce"], 1)
SIGNAL_SERVERS = ["uvicorn", "gunicorn", "hypercorn-asyncio", "hypercorn-trio"]


def get(server: Server, path: str, **kwargs: object) -> httpx.Response:
    return HTTP.get(f"{server.url}{path}", timeout=10, **kwargs)  # type: ignore[arg-type]


# The servers of play_termination() run with this propagation delay: long enough that the
# probes of it (each a new connection to a Python server) land inside it on a loaded machine.
TIMELINE = {"GRACESHUT_PROPAGATION_DELAY": "3"}
SLOW = 6  # seconds: the request in flight outlasts the delay, so the drain waits for it


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not seen in {timeout}s"
        time.sleep(0.02)


def play_termination(
    server: Server, trigger: Callable[[], object], *, workers: int = 1
) -> dict[str, object]:
    """Trigger shutdown with a slow request in flight; probe each step of the timeline.

    Each probe waits for the step it probes (readiness failing, the drain beginning in every
    worker) rather than for a fixed time, which a loaded machine would overrun.
    """
    seen: dict[str, object] = {}
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        slow = pool.submit(get, server, f"/slow?seconds={SLOW}")
        time.sleep(0.5)  # for the slow request to arrive before the trigger
        trigger_result = pool.submit(trigger)

        def unready() -> bool:
            seen["readyz"] = get(server, "/readyz")
            return seen["readyz"].status_code == 503

        wait_for(unready, "readiness failing at the trigger")
        seen["livez"] = get(server, "/livez")
        seen["during_propagation"] = get(server, "/")
        # Each worker's drain handler writes its line as its drain begins.
        wait_for(lambda: server.events_seen()["drain"] == workers, "the drain")
        seen["during_drain"] = get(server, "/")
        seen["slow"] = slow.result(timeout=30)
        seen["trigger"] = trigger_result.result(timeout=30)
    return seen


def assert_timeline(seen: dict[str, object]) -> None:
    ready = seen["readyz"]
    assert isinstance(ready, httpx.Response)
    assert ready.status_code == 503
    live = seen["livez"]
    assert isinstance(live, httpx.Response)
    assert live.status_code == 200
    during = seen["during_propagation"]
    assert isinstance(during, httpx.Response)
    assert during.status_code == 200, "requests during the propagation delay are served"
    assert during.headers["connection"] == "close"
    refused = seen["during_drain"]
    assert isinstance(refused, httpx.Response)
    assert refused.status_code == 503
    assert refused.headers["connection"] == "close"
    assert int(refused.headers["retry-after"]) >= 1
    slow = seen["slow"]
    assert isinstance(slow, httpx.Response)
    assert slow.status_code == 200
    assert slow.text == "slow ok", "the in-flight request finished"


@pytest.mark.parametrize("kind", SIGNAL_SERVERS)
def test_sigterm_runs_the_whole_timeline_and_exits_0(start_server: StartServer, kind: str) -> None:
    """SIGTERM: ready fails, serving goes on, in-flight finishes, drain refuses, exit 0."""
    server = start_server(kind, TIMELINE)
    seen = play_termination(server, lambda: server.signal(signal.SIGTERM))
    assert_timeline(seen)
    assert server.wait_exit() == 0, server.output()
    expected = dict(ONE_EACH)
    if kind == "gunicorn":
        # A gunicorn worker's SIGTERM may be a recycle, not the pod's end: once-per-pod
        # handlers wait for a preStop call (docs/workers.md).
        del expected["pod-announce"]
    assert server.events_seen() == expected, server.output()


@pytest.mark.parametrize("kind", ["uvicorn", "hypercorn-asyncio"])
def test_failed_handler_makes_the_exit_status_1(start_server: StartServer, kind: str) -> None:
    """A handler that raises: every phase still runs and the process exits 1, not 0 or 143."""
    server = start_server(kind, {"E2E_FAIL": "flush"})
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 1, server.output()
    assert server.events_seen() == ONE_EACH
    assert "flush failed on purpose" in server.output()


@pytest.mark.parametrize("kind", ["uvicorn", "gunicorn", "hypercorn-cli"])
def test_prestop_route_drains_then_sigterm_exits_at_once(
    start_server: StartServer, kind: str
) -> None:
    """preStop httpGet: the route runs the sequence and reports; the SIGTERM after exits fast."""
    server = start_server(kind, TIMELINE)
    seen = play_termination(server, lambda: get(server, "/shutdown", headers=pod_credential()))
    assert_timeline(seen)
    report = seen["trigger"]
    assert isinstance(report, httpx.Response)
    assert report.status_code == 200
    body = report.json()
    assert body["reason"] == "prestop"
    assert body["ok"] is True
    assert body["in_flight_at_start"] == 1
    assert [h["phase"] for h in body["handlers"]] == ["announce", *PHASES]
    assert server.events_seen() == ONE_EACH
    again = get(server, "/shutdown", headers=pod_credential())
    assert again.json() == body, "a repeated preStop call joins, it does not run twice"
    sent = time.monotonic()
    server.signal(signal.SIGTERM)
    status = server.wait_exit()
    # Not held to the 20 s grace period: the sequence is over (it ran once, below).
    assert time.monotonic() - sent < 15, "after the preStop drain, SIGTERM ends the process"
    if kind != "hypercorn-cli":
        assert status == 0, server.output()
    assert server.events_seen() == ONE_EACH, "nothing ran twice"


def test_repeated_sigterm_joins_the_run(start_server: StartServer) -> None:
    """A second SIGTERM during the sequence neither restarts it nor kills the process."""
    server = start_server("uvicorn")
    server.signal(signal.SIGTERM)
    time.sleep(0.3)
    server.signal(signal.SIGTERM)
    assert get(server, "/").status_code == 200, "still serving in the propagation delay"
    assert server.wait_exit() == 0, server.output()
    assert server.events_seen() == ONE_EACH


@pytest.mark.parametrize("kind", ["uvicorn", "hypercorn-trio"])
def test_second_sigint_forces_an_immediate_exit(start_server: StartServer, kind: str) -> None:
    """Ctrl-C twice: the second one ends the process at once, as at a terminal."""
    server = start_server(kind, {"GRACESHUT_PROPAGATION_DELAY": "10"})
    server.signal(signal.SIGINT)
    time.sleep(0.3)
    assert get(server, "/readyz").status_code == 503
    sent = time.monotonic()
    server.signal(signal.SIGINT)
    assert server.wait_exit() == 130
    assert time.monotonic() - sent < 8, "at once, not at the end of the 10 s delay"
    assert "second SIGINT" in server.output()
    assert "flush" not in server.events_seen()


def test_single_sigint_is_graceful(start_server: StartServer) -> None:
    """One Ctrl-C runs the same sequence as SIGTERM and exits 0."""
    server = start_server("uvicorn", {"GRACESHUT_PROPAGATION_DELAY": "0.2"})
    server.signal(signal.SIGINT)
    assert server.wait_exit() == 0, server.output()
    assert server.events_seen() == ONE_EACH


def test_websockets_are_closed_with_1001_at_the_drain(start_server: StartServer) -> None:
    """An open WebSocket stays up through the propagation delay, then gets 1001 going away."""
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    server = start_server("uvicorn", {"GRACESHUT_PROPAGATION_DELAY": "1.0"})
    with connect(f"ws://127.0.0.1:{server.port}/ws") as ws:
        ws.send("before")
        assert ws.recv(timeout=5) == "before"
        sent = time.monotonic()
        server.signal(signal.SIGTERM)
        time.sleep(0.3)
        ws.send("during propagation")
        assert ws.recv(timeout=5) == "during propagation"
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
        assert time.monotonic() - sent >= 0.9
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1001
    assert server.wait_exit() == 0, server.output()
    assert server.events_seen()["websocket-closed-1001"] == 1


def raw_request(server: Server, data: bytes) -> bytes:
    """Send raw bytes and return whatever comes back before the server closes or 5 s pass."""
    import socket

    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except OSError:
            return b""
    return b"".join(chunks)


def test_hostile_requests_to_a_real_server_start_nothing(start_server: StartServer) -> None:
    """Over real HTTP: huge, malformed, wrong and truncated credentials never start a shutdown."""
    server = start_server("uvicorn", {"GRACESHUT_TOKEN": "s3cr3t-token"})
    shutdown = f"{server.url}/shutdown"

    def status(method: str, headers: dict[str, str]) -> int | str:
        try:
            return httpx.request(method, shutdown, headers=headers, timeout=10).status_code
        except httpx.TransportError:
            return "closed"

    statuses = [
        status("GET", {"Authorization": "Bearer " + "x" * 200_000}),
        status("GET", {"Authorization": "Bearer s3cr3t-toke"}),
        status("POST", {"Authorization": "Bearer s3cr3t-token-"}),
        status("DELETE", {"Authorization": "Bearer s3cr3t-token"}),
        status("GET", {"X-Padding": "y" * 60_000}),
    ]
    assert statuses[1:4] == [403, 403, 405]
    assert statuses[0] in (400, 403, 413, 431, "closed")
    assert statuses[4] in (400, 401, 413, 431, "closed")
    garbage = [
        b"GET /shutdown HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cr3t-tok",  # cut short
        b"GET /shutdown HTTP/1.1\r\n" + b"X: " + b"z" * 100_000 + b"\r\n\r\n",
        b"\x00\xff\x16\x03\x01 not http at all\r\n\r\n",
        b"GET /shutdown?wait=0 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\r\n\r\n",
    ]
    for data in garbage:
        answer = raw_request(server, data)
        assert b" 200 " not in answer.split(b"\r\n", 1)[0]
        assert b" 202 " not in answer.split(b"\r\n", 1)[0]
    assert get(server, "/readyz").status_code == 200, "nothing was started"
    assert server.events_seen() == {}
    ok = httpx.get(shutdown, headers={"Authorization": "Bearer s3cr3t-token"}, timeout=30)
    assert ok.status_code == 200
    assert ok.json()["ok"] is True


@pytest.mark.parametrize("kind", ["hypercorn-asyncio", "hypercorn-trio"])
def test_hypercorn_runner_exits_0_when_sigterm_follows_prestop_at_once(
    start_server: StartServer, kind: str
) -> None:
    """The kubelet's SIGTERM right after the preStop answer never turns a clean exit into 143."""
    for _ in range(3):
        server = start_server(kind, {"GRACESHUT_PROPAGATION_DELAY": "0"})
        assert get(server, "/shutdown", headers=pod_credential()).json()["ok"] is True
        server.signal(signal.SIGTERM)
        assert server.wait_exit() == 0, server.output()
