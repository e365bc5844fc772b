"""``graceshut simulate`` does what the kubelet, the runtime and kube-proxy do, point by point.

PID 1 and its signals, whole-second grace periods (0 is 1), the liveness probe stopped
before the hook, redirects and the https fallback of httpGet hooks, the invalid
tcpSocket hook, the Service's fallback to a terminating pod, the manifest's volumes,
and the JUnit and picture outputs.
"""

from __future__ import annotations

import http.server
import json
import re
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from graceshut.cli import main
from graceshut.simulate import _actions, _pid1
from graceshut.simulate._actions import HttpGet, Target
from graceshut.simulate._manifest import ManifestError, read_manifest
from graceshut.simulate._service import ELSEWHERE, NOWHERE, POD, Endpoints
from graceshut.simulate._timeline import Timeline

from .asgi_servers import ROOT, free_port
from .test_simulate import FAST, TOKEN, demo_env, simulate, uvicorn

PLAIN = "tests.e2e.plain_app:app"
needs_pid_namespace = pytest.mark.skipif(
    _pid1.available() is not None, reason=f"no PID namespace here: {_pid1.available()}"
)


def write_manifest(tmp_path: Path, *documents: dict[str, Any]) -> str:
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({"kind": "List", "items": list(documents)}))
    return str(path)


def deployment(port: int, container: dict[str, Any], replicas: int = 2) -> dict[str, Any]:
    labels = {"app": "demo"}
    return {
        "kind": "Deployment",
        "metadata": {"name": "demo"},
        "spec": {
            "replicas": replicas,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "terminationGracePeriodSeconds": 10,
                    "containers": [
                        {"name": "app", "ports": [{"name": "http", "containerPort": port}]}
                        | container
                    ],
                },
            },
        },
    }


def events(report: dict[str, Any]) -> list[str]:
    return [e["event"] for e in report["timeline"]]


# 1. httpGet hooks follow same-host redirects (10 requests at most), with their headers.


@pytest.mark.e2e
def test_a_redirected_hook_drains_the_app_and_the_outputs_are_written(tmp_path: Path) -> None:
    """/moved answers 308 to /shutdown: followed with the token; JUnit, SVG and HTML written."""
    port = free_port()
    junit, svg, page = tmp_path / "r.xml", tmp_path / "t.svg", tmp_path / "t.html"
    status, report, stderr = simulate(
        "--port",
        str(port),
        "--prestop-http",
        "/moved",
        "--prestop-header",
        f"Authorization: Bearer {TOKEN}",
        "--env",
        f"GRACESHUT_TOKEN={TOKEN}",
        "--junit-xml",
        str(junit),
        "--svg",
        str(svg),
        "--html",
        str(page),
        *demo_env(tmp_path),
        *FAST,
        *uvicorn("tests.e2e.redirect_app:app", port),
    )
    assert status == 0, (report["problems"], stderr, report["app_output_tail"])
    prestop = report["prestop"]
    assert prestop["status"] == 200, "the redirect was followed, the token kept"
    assert prestop["redirects"] == [
        f"http://{report['settings']['pod'].split(':')[0]}:{port}/shutdown"
    ]
    assert report["app_report"]["reason"] == "prestop"
    assert any("redirected once" in w for w in report["warnings"])

    suite = ET.parse(junit).getroot().find("testsuite")  # noqa: S314 - our own file
    assert suite is not None
    cases = {case.get("name"): case for case in suite.iter("testcase")}
    names = set(cases)
    assert {"no failed request", "no SIGKILL", "exit status 0", "the preStop hook"} <= names
    handlers = {h["name"] for h in report["app_report"]["handlers"]}
    assert {
        n.split(" (")[0].removeprefix("handler ") for n in names if n.startswith("handler ")
    } == handlers
    assert suite.get("failures") == "0"
    assert not any(case.find("failure") is not None for case in cases.values())

    picture = ET.parse(svg).getroot()  # noqa: S314 - our own file
    texts = " ".join(t.text or "" for t in picture.iter("{http://www.w3.org/2000/svg}text"))
    for mark in ("deleted", "preStop", "endpoints updated", "SIGTERM", "exit", "drain"):
        assert mark in texts, mark
    bars = [
        r for r in picture.iter("{http://www.w3.org/2000/svg}rect") if r.get("fill") == "#3a9b4f"
    ]
    assert len(bars) > 10, "a bar of answered requests per tenth of a second"
    html = page.read_text()
    assert "<svg" in html
    assert "verdict: clean" in html


@pytest.fixture
def redirecting_server() -> Iterator[tuple[int, list[str]]]:
    """A server that redirects /loop to itself forever and /away to another host."""
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.path)
            self.send_response(302)
            away = "http://localhost.invalid/" if self.path == "/away" else "/loop"
            self.send_header("Location", away)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1], seen
    server.shutdown()
    server.server_close()


def test_redirects_stop_after_10_and_at_another_host(
    redirecting_server: tuple[int, list[str]],
) -> None:
    """Ten requests then a failure, as Go's client; a redirect to another host is the answer."""
    port, seen = redirecting_server
    target = Target("127.0.0.1")
    looped = _actions.run(HttpGet(path="/loop", port=port), target, {}, 5)
    assert not looped.ok
    assert looped.error == "stopped after 10 redirects"
    assert len(seen) == 10
    away = _actions.run(HttpGet(path="/away", port=port), target, {}, 5)
    assert away.ok, "a hook's answer is any HTTP answer"
    assert away.status == 302
    probe = _actions.run(HttpGet(path="/away", port=port), target, {}, 5, probe=True)
    assert probe.ok, "a probe counts a 3xx it does not follow as a success"


# 2. PID 1: only the signals it handles; the image's STOPSIGNAL.


@pytest.mark.e2e
@needs_pid_namespace
def test_a_shell_entrypoint_without_exec_is_sigkilled_as_pid_1(tmp_path: Path) -> None:
    """sh -c "uvicorn ...; echo done" as PID 1 drops SIGTERM: SIGKILL, 137, and the fix."""
    port = free_port()
    line = f"{sys.executable} -m uvicorn {PLAIN} --host 0.0.0.0 --port {port}; echo done"
    junit = tmp_path / "r.xml"
    status, report, _ = simulate(
        "--port", str(port), "--grace-period", "2", "--no-prestop", "--junit-xml", str(junit),
        *FAST, "--", "sh", "-c", line,
    )  # fmt: skip
    assert status == 1
    assert report["sigkill"] is True
    assert 2.0 - 0.05 <= report["sigkill_at"] < 2.0 + 2, "at the grace period (late at worst)"
    assert report["exit"]["status"] == 137
    assert report["pid1"] == {
        "namespace": True,
        "program": "sh",
        "shell": True,
        "handles_stop_signal": False,
        "children": 1,
    }
    problems = " | ".join(report["problems"])
    assert "PID 1 is a shell (sh) that runs the app without exec" in problems
    assert "Fix: run the app with exec" in problems
    assert not any("PROPAGATION_DELAY" in w for w in report["warnings"]), "not the cause"
    cases = ET.parse(junit).getroot().iter("testcase")  # noqa: S314 - our own file
    sigkill = next(c for c in cases if c.get("name") == "no SIGKILL")
    failure = sigkill.find("failure")
    assert failure is not None
    assert "PID 1 is a shell" in (failure.text or "")


@pytest.mark.e2e
@needs_pid_namespace
def test_the_stop_signal_replaces_sigterm(tmp_path: Path) -> None:
    """STOPSIGNAL SIGQUIT to uvicorn, which has no handler for it: dropped, then SIGKILL."""
    port = free_port()
    status, report, _ = simulate(
        "--port", str(port), "--grace-period", "1", "--no-prestop", "--stop-signal", "QUIT",
        *FAST, *uvicorn(PLAIN, port),
    )  # fmt: skip
    assert status == 1
    assert report["stop_signal"] == "SIGQUIT"
    assert "SIGQUIT" in events(report)
    assert "SIGTERM" not in events(report)
    assert report["sigkill"] is True
    assert report["exit"]["status"] == 137
    program = Path(sys.executable).name  # python or python3, as the venv has it
    assert any(f"PID 1 ({program}) has no SIGQUIT handler" in p for p in report["problems"])


@pytest.mark.e2e
def test_without_a_pid_namespace_the_report_says_pid_1_is_not_modelled() -> None:
    """--pid-namespace off: the shell dies of SIGTERM here, and the report says what PID 1 does."""
    port = free_port()
    line = f"{sys.executable} -m uvicorn {PLAIN} --host 0.0.0.0 --port {port}; echo done"
    status, report, _ = simulate(
        "--port", str(port), "--grace-period", "1", "--no-prestop", "--pid-namespace", "off",
        *FAST, "--", "sh", "-c", line,
    )  # fmt: skip
    assert status == 1
    assert report["settings"]["pid1"].startswith("not modelled: turned off")
    warnings = " | ".join(report["warnings"])
    assert "PID 1 is not modelled here" in warnings
    assert "a shell (sh) without exec with no SIGTERM handler" in warnings


# 3. Grace periods: whole seconds, and 0 is 1 s.


@pytest.mark.e2e
def test_a_grace_period_of_0_is_1s_with_the_hook(tmp_path: Path) -> None:
    """--grace-period 0: the hook runs for 1 s, then SIGTERM, SIGKILL 2 s later at the most."""
    port = free_port()
    status, report, _ = simulate(
        "--port", str(port), "--grace-period", "0", "--prestop-exec", "sleep 5",
        *FAST, *uvicorn(PLAIN, port),
    )  # fmt: skip
    assert status == 1, "the hook overran"
    assert report["grace_period"] == 1
    assert report["prestop"]["overran"] is True
    assert 1.0 - 0.05 <= report["sigterm_at"] < 5.0, "at 1 s, not once the 5 s hook ended"
    assert report["sigkill_after"] == 2
    deleted = next(e for e in report["timeline"] if e["event"] == "pod deleted")
    assert "never uses 0" in deleted["detail"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--grace-period", "2.5"], "'2.5' is not a whole number of seconds"),
        (["--prestop-sleep", "0.5"], "'0.5' is not a whole number of seconds"),
        (["--grace-period", "2", "--prestop-sleep", "3"], "longer than the grace period (2s)"),
        (["--stop-signal", "SIGNOPE"], "--stop-signal 'SIGNOPE' is not a signal name"),
    ],
)
def test_fractions_and_impossible_hooks_are_refused(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """What the API server or kubectl refuses is refused here, with the reason."""
    try:
        status = main(["simulate", "--no-progress", *args, "--", "app"])
    except SystemExit as exc:
        status = int(str(exc.code))
    assert status == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("pod", "message"),
    [
        ({"terminationGracePeriodSeconds": 2.5}, "2.5 is not a whole number of seconds"),
        ({"lifecycle": {"preStop": {"sleep": {"seconds": 1.5}}}}, "sleep.seconds: 1.5 is not"),
    ],
)
def test_a_manifest_with_fractional_seconds_is_refused(
    tmp_path: Path, pod: dict[str, Any], message: str
) -> None:
    """terminationGracePeriodSeconds and sleep.seconds are integers in the API."""
    container: dict[str, Any] = {"name": "a"}
    spec: dict[str, Any] = {"containers": [container]}
    if "lifecycle" in pod:
        container["lifecycle"] = pod["lifecycle"]
    else:
        spec |= pod
    path = tmp_path / "pod.json"
    path.write_text(json.dumps({"kind": "Pod", "spec": spec}))
    with pytest.raises(ManifestError, match=re.escape(message)):
        read_manifest(path, None)


# 4. The liveness probe stops before the hook.


@pytest.mark.e2e
def test_the_liveness_probe_stops_before_the_hook(tmp_path: Path) -> None:
    """A liveness probe on /readyz (503 from the hook on) is stopped first: no warning."""
    port = free_port()
    probe = {"httpGet": {"path": "/readyz", "port": "http"}}
    hook = {"httpGet": {"path": "/shutdown", "port": "http", "httpHeaders": [
        {"name": "Authorization", "value": f"Bearer {TOKEN}"}]}}  # fmt: skip
    container = {"readinessProbe": probe, "livenessProbe": probe, "lifecycle": {"preStop": hook}}
    manifest = write_manifest(tmp_path, deployment(port, container))
    status, report, stderr = simulate(
        "--manifest", manifest, "--env", f"GRACESHUT_TOKEN={TOKEN}",
        *demo_env(tmp_path), "--env", "GRACESHUT_GRACE_PERIOD=10", *FAST,
        *uvicorn("examples.app:app", port),
    )  # fmt: skip
    assert status == 0, (report["problems"], stderr)
    names = events(report)
    assert names.index("liveness probe stopped") < names.index("preStop hook starts")
    assert "liveness probe fails" not in names
    assert "readiness probe fails" in names, "readiness goes on"
    assert not any("liveness" in w for w in report["warnings"])


# 5. The Service: replicas, publishNotReadyAddresses.


@pytest.mark.e2e
def test_one_replica_keeps_receiving_new_connections() -> None:
    """With no other pod, kube-proxy keeps sending new connections to the serving pod."""
    port = free_port()
    status, report, _ = simulate(
        "--port", str(port), "--replicas", "1", "--grace-period", "5",
        "--prestop-exec", "sleep 2", "--no-keep-alive", *FAST, *uvicorn(PLAIN, port),
    )  # fmt: skip
    requests, service = report["requests"], report["service"]
    assert service["replicas"] == 1
    assert requests["rerouted"] == 0, "no other pod to send them to"
    assert service["new_connections_after_update"] > 50, "1.5 s at 100 req/s"
    assert any(
        w.startswith("one replica: the Service had no other pod") for w in report["warnings"]
    )
    assert status in (0, 1)


def test_endpoints_route_as_kube_proxy_does() -> None:
    """Other pods take new connections; one replica falls back while serving; published stays."""
    serving = {"now": True}
    one = Endpoints(0.0, Timeline(), replicas=1, serving=lambda _: serving["now"])
    many = Endpoints(0.0, Timeline(), replicas=3)
    published = Endpoints(0.0, Timeline(), replicas=3, publish_not_ready=True)
    assert [e.route() for e in (one, many, published)] == [POD, POD, POD], "before deletion"
    for endpoints in (one, many, published):
        endpoints.deleted(time.monotonic())
    assert [e.route() for e in (one, many, published)] == [POD, ELSEWHERE, POD]
    serving["now"] = False
    assert one.route() == NOWHERE, "no serving endpoint: kube-proxy rejects"
    assert (one.kept, one.rejected) == (1, 1)


def test_replicas_and_publish_not_ready_addresses_come_from_the_manifest(tmp_path: Path) -> None:
    """replicas (1 when absent), publishNotReadyAddresses, lifecycle.stopSignal, volumeMounts."""
    service = {
        "kind": "Service",
        "metadata": {"name": "demo"},
        "spec": {"selector": {"app": "demo"}, "publishNotReadyAddresses": True},
    }
    other = {"kind": "Service", "spec": {"selector": {"app": "other"}}}
    container = {
        "lifecycle": {"stopSignal": "SIGQUIT"},
        "volumeMounts": [{"name": "cache", "mountPath": "/var/cache/app"}],
    }
    workload = deployment(8000, container, replicas=4)
    workload["spec"]["template"]["spec"]["volumes"] = [{"name": "cache", "emptyDir": {}}]
    manifest = Path(write_manifest(tmp_path, workload, service))
    spec = read_manifest(manifest, None)
    assert (spec.replicas, spec.publish_not_ready) == (4, True)
    assert spec.stop_signal == "SIGQUIT"
    assert spec.volumes == (("cache", "emptyDir", "/var/cache/app"),)
    bare = deployment(8000, {})
    del bare["spec"]["replicas"]
    manifest = Path(write_manifest(tmp_path, bare, other))
    spec = read_manifest(manifest, None)
    assert (spec.replicas, spec.publish_not_ready) == (1, False)


# 6. The sleep action, the https fallback, the tcpSocket hook.


@pytest.mark.e2e
def test_an_https_hook_answered_by_http_is_retried_without_authorization(tmp_path: Path) -> None:
    """scheme HTTPS against plain HTTP: sent again over HTTP without the token, so 401."""
    port = free_port()
    hook = {"httpGet": {"path": "/shutdown", "port": "http", "scheme": "HTTPS", "httpHeaders": [
        {"name": "Authorization", "value": f"Bearer {TOKEN}"}]}}  # fmt: skip
    container = {"readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}}}
    manifest = write_manifest(
        tmp_path, deployment(port, container | {"lifecycle": {"preStop": hook}})
    )
    _, report, _ = simulate(
        "--manifest", manifest, "--env", f"GRACESHUT_TOKEN={TOKEN}", *demo_env(tmp_path),
        *FAST, *uvicorn("examples.app:app", port),
    )  # fmt: skip
    prestop = report["prestop"]
    assert prestop["fell_back_to_http"] is True
    assert prestop["ok"] is True, "the kubelet ignores the status"
    assert prestop["status"] == 401, "graceshut refused the call without its token"
    assert any("LifecycleHTTPFallback" in w for w in report["warnings"])


@pytest.mark.e2e
def test_a_tcp_socket_prestop_fails_as_an_invalid_handler(tmp_path: Path) -> None:
    """lifecycle.preStop.tcpSocket: FailedPreStopHook, and SIGTERM at once."""
    port = free_port()
    hook = {"tcpSocket": {"port": "http"}}
    container = {"lifecycle": {"preStop": hook}}
    manifest = write_manifest(tmp_path, deployment(port, container))
    status, report, _ = simulate("--manifest", manifest, *FAST, *uvicorn(PLAIN, port))
    assert status == 1
    assert report["prestop"]["ok"] is False
    assert "invalid handler" in report["prestop"]["error"]
    # At once: no hook to wait for (a valid one would have held it for the grace period).
    assert report["sigterm_at"] < report["grace_period"], "SIGTERM at once"
    assert any("FailedPreStopHook" in p for p in report["problems"])


# The README's line, with the demo's own manifest and its volume.


@pytest.mark.e2e
def test_the_readme_manifest_line_runs() -> None:
    """The README's options as written: the manifest's /data volume is a temporary directory."""
    readme = (ROOT / "README.md").read_text()
    found = re.search(r"`(--manifest\s+examples/k8s/deployment\.yaml[^`]*)`", readme)
    assert found is not None, "the README's simulate line moved"
    options = found.group(1).split()
    port = free_port()
    status, report, stderr = simulate(
        *options, "--port", str(port), *FAST, *uvicorn("examples.app:app", port), timeout=90
    )
    assert status == 0, (report["problems"], stderr, report["app_output_tail"])
    local = report["settings"]["volumes"]["/data"]
    assert local != "/data"
    assert not Path(local).exists(), "removed after the run"
    assert report["app_report"]["ok"] is True
