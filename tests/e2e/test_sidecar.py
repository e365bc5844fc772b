"""A plain nginx sidecar in front of the app, and the admin listener, under real servers.

nginx's default ``proxy_pass http://127.0.0.1:PORT;`` relays every outside request from
127.0.0.1 with no forwarding header: exactly what an exec preStop hook inside the pod
looks like by address. Only the pod secret tells them apart.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from ..asgi_servers import HTTP, Server, free_port

pytestmark = pytest.mark.e2e

NGINX_CONFIG = """\
worker_processes 1;
daemon off;
pid {root}/nginx.pid;
error_log {root}/error.log;
events {{ worker_connections 64; }}
http {{
    access_log {root}/access.log;
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://127.0.0.1:{upstream};
        }}
    }}
}}
"""


@contextlib.contextmanager
def nginx_sidecar(root: Path, upstream: int) -> Iterator[str]:
    """nginx in the foreground with its own prefix, config, pid and logs under *root*."""
    binary = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    if binary is None:
        pytest.fail("nginx is not installed: run scripts/system-deps (apt-get install nginx)")
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = root / "nginx.conf"
    config.write_text(NGINX_CONFIG.format(root=root, port=port, upstream=upstream))
    log = (root / "nginx.out").open("wb")
    argv = [binary, "-p", str(root), "-c", str(config), "-e", str(root / "error.log")]
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            if process.poll() is not None:
                pytest.fail(f"nginx exited: {(root / 'error.log').read_text(errors='replace')}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                pytest.fail("nginx did not relay /readyz in 20 s")
            time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]
TARGETS = [
    "/shutdown",
    "/shutdown?wait=0",
    "/shutdown?wait=1",
    "/shutdown?wait=0&wait=0",
    "/shutdown?wait=false",
    "/shutdown?token=x",
    "/shutdown/",
    "//shutdown",
    "/./shutdown",
    "/%73hutdown?wait=0",
]


def prestop(url: str) -> subprocess.CompletedProcess[str]:
    """The exec hook: ``graceshut prestop URL``, run as the kubelet runs it in the pod."""
    return subprocess.run(
        [sys.executable, "-m", "graceshut.cli", "prestop", url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_nothing_relayed_by_an_nginx_sidecar_stops_the_pod(
    start_server: Callable[..., Server], tmp_path: Path
) -> None:
    """Every method and query to /shutdown through nginx is refused; the exec hook drains."""
    server = start_server("uvicorn", {"GRACESHUT_PROPAGATION_DELAY": "0.5"})
    with nginx_sidecar(tmp_path / "nginx", server.port) as outside:
        statuses = {}
        for method in METHODS:
            for target in TARGETS:
                response = httpx.request(method, f"{outside}{target}", timeout=30)
                statuses[method, target] = response.status_code
                assert response.status_code in (400, 401, 403, 404, 405), (method, target)
        forged = httpx.get(
            f"{outside}/shutdown?wait=0", headers={"Authorization": "Bearer guess"}, timeout=30
        )
        assert forged.status_code == 403
        assert httpx.get(f"{outside}/readyz", timeout=10).status_code == 200
        assert not server.events_seen()
        assert statuses["GET", "/shutdown?wait=0"] == 401

        hook = prestop(f"{server.url}/shutdown")
        assert hook.returncode == 0, hook.stderr
        assert '"reason": "prestop"' in hook.stdout
        assert httpx.get(f"{outside}/readyz", timeout=10).status_code == 503
    assert server.events_seen()["drain"] == 1


def test_the_loopback_opt_in_is_unsafe_behind_nginx(
    start_server: Callable[..., Server], tmp_path: Path
) -> None:
    """What the docs warn about: with GRACESHUT_TRUST_LOOPBACK=1 an outside GET stops the pod."""
    server = start_server("uvicorn", {"GRACESHUT_TRUST_LOOPBACK": "1"})
    with nginx_sidecar(tmp_path / "nginx", server.port) as outside:
        assert httpx.get(f"{outside}/shutdown?wait=0", timeout=10).status_code == 202
        assert httpx.get(f"{outside}/readyz", timeout=10).status_code == 503


@dataclass
class AdminWatch:
    """Polls the admin listener and the app's own port until stopped."""

    admin: str
    app: str
    samples: list[tuple[float, int | None, str, str]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            ready: int | None = None
            metrics = ""
            with contextlib.suppress(httpx.TransportError):
                # Metrics first: a sample whose metrics show a step of the sequence was
                # taken after that step began, readiness included (it never turns back).
                scraped = HTTP.get(f"{self.admin}/metrics", timeout=2).text
                ready = HTTP.get(f"{self.admin}/readyz", timeout=2).status_code
                metrics = scraped
            app = "up"
            try:
                # Short: a closed port whose socket a parent process still holds (hypercorn's
                # command line) accepts connections and never answers them.
                HTTP.get(f"{self.app}/livez", timeout=0.3)
            except httpx.ConnectError:
                app = "refused"
            except httpx.TransportError:
                app = "silent"  # that closed port, or an app too starved to answer in time
            self.samples.append((time.monotonic(), ready, metrics, app))
            time.sleep(0.1)

    def in_drain(self) -> list[tuple[float, int | None, str, str]]:
        drain = re.compile(r'graceshut_phase\{phase="drain"\} 1\.0')
        return [s for s in self.samples if drain.search(s[2])]


@contextlib.contextmanager
def watching(admin: str, app: str) -> Iterator[AdminWatch]:
    watch = AdminWatch(admin, app)
    thread = threading.Thread(target=watch.run, daemon=True)
    thread.start()
    try:
        yield watch
    finally:
        watch.stop.set()
        thread.join(10)


def wait_for(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(url, timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise AssertionError(f"{url} did not answer in {timeout} s")


ADMIN_ENV = {
    "E2E_METRICS": "1",
    # Every worker's drain lasts 3 s: samples of it on a loaded machine too.
    "E2E_SLOW": "drain=3",
    "E2E_LIFESPAN_SLOW": "2",  # the app's own lifespan shutdown, after its port closed
    "GRACESHUT_PROPAGATION_DELAY": "0.5",
}


@pytest.mark.parametrize("kind", ["uvicorn", "hypercorn-cli"])
def test_admin_listener_answers_through_the_drain(
    kind: str, start_server: Callable[..., Server]
) -> None:
    """SIGTERM: probes and metrics answer in the drain and after the server closed its port.

    hypercorn's command line closes its port at SIGTERM, before graceshut's sequence runs.
    """
    admin_port = free_port()
    admin = f"http://127.0.0.1:{admin_port}"
    server = start_server(kind, {**ADMIN_ENV, "GRACESHUT_ADMIN_ADDRESS": f"127.0.0.1:{admin_port}"})
    wait_for(f"{admin}/readyz")
    with watching(admin, server.url) as watch:
        time.sleep(0.3)
        signalled = time.monotonic()
        server.signal(signal.SIGTERM)
        status = server.wait_exit()
    assert status == 0 or kind == "hypercorn-cli", server.output()
    drained = watch.in_drain()
    assert drained, "no scrape answered during the drain"
    seen = [(round(at - signalled, 2), ready, app) for at, ready, _, app in watch.samples]
    assert all(ready == 503 for _, ready, _, _ in drained), (seen, server.output())
    assert "graceshut_shutting_down 1.0" in drained[0][2]
    after_close = [
        s for s in watch.samples if s[0] > signalled and s[3] != "up" and s[1] is not None
    ]
    assert after_close, "the admin listener did not outlive the app's own port"
    # hypercorn's command line closes its port at SIGTERM and starts graceshut's sequence
    # only at the lifespan shutdown, a moment later: readiness turns 503 at the trigger.
    triggered = [s for s in after_close if "graceshut_shutting_down 1.0" in s[2]]
    assert triggered, (seen, server.output())
    assert all(ready == 503 for _, ready, _, _ in triggered), (seen, server.output())
    if kind == "uvicorn":  # the trigger comes with SIGTERM, before the port closes
        refused = [s for s in after_close if s[3] == "refused"]
        assert refused, seen
        assert all("graceshut_shutting_down 1.0" in s[2] for s in refused), seen


def test_admin_listener_serves_a_pod_of_four_gunicorn_workers(
    start_server: Callable[..., Server],
) -> None:
    """One admin port for four UvicornWorkers: its /shutdown drains all; probes answer."""
    admin_port = free_port()
    admin = f"http://127.0.0.1:{admin_port}"
    server = start_server(
        "gunicorn-4", {**ADMIN_ENV, "GRACESHUT_ADMIN_ADDRESS": f"127.0.0.1:{admin_port}"}
    )
    wait_for(f"{admin}/readyz")
    with watching(admin, server.url) as watch, concurrent.futures.ThreadPoolExecutor(1) as pool:
        hook = pool.submit(prestop, f"{admin}/shutdown").result(timeout=60)
        assert hook.returncode == 0, hook.stderr
        time.sleep(0.3)
    assert '"reason": "prestop"' in hook.stdout
    assert hook.stdout.count('"pid"') >= 4  # every worker's report, gathered pod-wide
    drained = watch.in_drain()
    assert drained, "no scrape answered during the drain"
    assert all(ready == 503 for _, ready, _, _ in drained)
    assert server.events_seen()["drain"] == 4
    assert server.output().count("admin listener on") == 1
    server.signal(signal.SIGTERM)
    server.wait_exit()
