"""``graceshut simulate``: the kubelet's termination played against real apps under load."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from graceshut.cli import main
from graceshut.simulate._actions import Exec, HttpGet, Sleep
from graceshut.simulate._kubelet import stop_timeout
from graceshut.simulate._manifest import ManifestError, read_manifest
from graceshut.simulate._ready import loopback_only, pod_ip

from .asgi_servers import ROOT, free_port

DEPLOYMENT = ROOT / "examples" / "k8s" / "deployment.yaml"
TOKEN = "demo-shutdown-token"  # the literal in the example's preStop header
# Short enough to keep each run at a few seconds, with the Service's lag (0.5 s) well
# inside graceshut's propagation delay (1 s).
FAST = ["--endpoint-lag", "0.5", "--warmup", "1", "--rate", "100", "--no-progress", "--json"]


def simulate(*args: str, timeout: float = 60) -> tuple[int, dict[str, Any], str]:
    """Run ``graceshut simulate --json``; return its status, its report and its stderr."""
    result = subprocess.run(
        [sys.executable, "-m", "graceshut.cli", "simulate", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        check=False,
    )
    try:
        report = json.loads(result.stdout)
    except ValueError:
        pytest.fail(f"no JSON report (status {result.returncode}): {result.stderr}")
    return result.returncode, report, result.stderr


def uvicorn(app: str, port: int) -> list[str]:
    return ["--", sys.executable, "-m", "uvicorn", app, "--host", "0.0.0.0", "--port", str(port)]


def demo_env(tmp_path: Path, propagation_delay: str = "2") -> list[str]:
    # The delay leaves the load generator's keep-alive connections, each sending now and
    # then, time to get their "Connection: close" after the routers' 0.5 s: a loaded
    # machine starved one for more than the 0.5 s left by a delay of 1 s (an HTTP 503).
    return [
        "--env",
        f"DEMO_DATABASE={tmp_path / 'demo.sqlite3'}",
        "--env",
        f"GRACESHUT_PROPAGATION_DELAY={propagation_delay}",
        "--env",
        "GRACESHUT_GRACE_PERIOD=30",
    ]


@pytest.mark.e2e
def test_the_demo_app_stops_clean_under_load(tmp_path: Path) -> None:
    """preStop httpGet with the token, then SIGTERM: nothing fails, exit 0, and the report."""
    port = free_port()
    status, report, stderr = simulate(
        "--port",
        str(port),
        "--prestop-http",
        "/shutdown",
        "--prestop-header",
        f"Authorization: Bearer {TOKEN}",
        "--env",
        f"GRACESHUT_TOKEN={TOKEN}",
        *demo_env(tmp_path),
        *FAST,
        *uvicorn("examples.app:app", port),
    )
    assert status == 0, (report["problems"], stderr, report["app_output_tail"])
    assert report["clean"] is True
    requests = report["requests"]
    assert requests["failed"] == 0
    assert requests["ok"] >= 50, requests  # 100 a second asked; fewer on a loaded machine
    assert requests["closed_by_server"] > 0, "keep-alive clients were told to reconnect"
    assert requests["rerouted"] > 0, "then the Service sent them elsewhere"
    assert report["sigkill"] is False
    assert report["exit"]["status"] == 0
    assert report["prestop"]["status"] == 200
    app_report = report["app_report"]
    assert app_report["ok"] is True
    assert app_report["reason"] == "prestop"
    assert [h["phase"] for h in app_report["handlers"]] == [
        "announce",
        "flush",
        "release",
        "report",
    ]
    events = [e["event"] for e in report["timeline"]]
    assert (
        events.index("preStop hook returned") < events.index("SIGTERM") < events.index("app exited")
    )
    readiness = events.index("readiness probe fails")
    # While the hook still ran (its propagation delay), not once SIGTERM came.
    assert readiness < events.index("preStop hook returned"), "readiness failed with the hook"
    assert report["timeline"][readiness]["t"] >= 0


@pytest.mark.e2e
def test_an_app_without_graceshut_drops_requests() -> None:
    """The same termination against a plain Starlette app: refused requests.

    As PID 1 of its PID namespace, uvicorn's re-raised SIGTERM finds no handler and is
    dropped, so it exits 0 as it does in a container; outside one, 143.
    """
    port = free_port()
    status, report, _ = simulate(
        "--port",
        str(port),
        "--prestop-http",
        "/shutdown",
        *FAST,
        # The routers' lag after FAST's: uvicorn closes its port once SIGTERM comes, and on
        # a loaded machine the 404 hook and the signal alone can take 0.5 s.
        "--endpoint-lag",
        "2",
        *uvicorn("tests.e2e.plain_app:app", port),
    )
    assert status == 1
    assert report["clean"] is False
    requests = report["requests"]
    failures = requests["failures"]
    assert requests["failed"] > 0
    assert requests["failed"] == sum(failures.values())
    assert failures["refused"] + failures["reset"] > 0
    assert any("requests failed" in p for p in report["problems"])
    if report["settings"]["pid1"] == "PID namespace":
        assert report["exit"]["status"] == 0
        assert report["pid1"] == {
            "namespace": True,
            "program": Path(sys.executable).name,  # python or python3, as the venv has it
            "shell": False,
            "handles_stop_signal": True,
            "children": 0,
        }
    else:
        assert report["exit"] == {
            "status": 143,
            "signal": "SIGTERM",
            "description": "killed by SIGTERM (status 143)",
        }
        assert any("killed by SIGTERM (status 143)" in p for p in report["problems"])
    assert any("HTTP 404" in w for w in report["warnings"]), "the hook hit no route"
    assert report["app_report"] is None
    assert all(s["t"] >= 0 for s in requests["failure_samples"]), "all after the deletion"


@pytest.mark.e2e
def test_a_shutdown_longer_than_the_grace_period_gets_sigkill(tmp_path: Path) -> None:
    """An exec hook overruns a 1 s grace period: SIGTERM at 1 s, SIGKILL 2 s later."""
    port = free_port()
    status, report, _ = simulate(
        "--port",
        str(port),
        "--grace-period",
        "1",
        "--prestop-exec",
        "sleep 3",
        *demo_env(tmp_path, propagation_delay="5"),
        *FAST,
        *uvicorn("examples.app:app", port),
    )
    assert status == 1
    assert report["sigkill"] is True
    assert report["prestop"]["overran"] is True
    # SIGTERM at the grace period, not once the 3 s hook ended; SIGKILL 2 s later, not once
    # the app's 5 s delay ended. (Late, never early, on a loaded machine.)
    sigterm, sigkill = report["sigterm_at"], report["sigkill_at"]
    assert 1.0 - 0.05 <= sigterm < 3.0
    assert 2.0 - 0.05 <= sigkill - sigterm < 5.0, "2 s after SIGTERM at least"
    assert report["exit"]["status"] == 137
    assert report["exit"]["signal"] == "SIGKILL"
    problems = " | ".join(report["problems"])
    assert "SIGKILL was needed" in problems
    assert "still running when the grace period (1s) ran out" in problems
    assert any("GRACESHUT_GRACE_PERIOD=30 is not the grace period" in w for w in report["warnings"])


@pytest.mark.e2e
def test_the_example_deployment_drives_the_run(tmp_path: Path) -> None:
    """examples/k8s/deployment.yaml gives the grace period, the hook, its header and the probes."""
    port = free_port()
    status, report, stderr = simulate(
        "--manifest",
        str(DEPLOYMENT),
        "--container",
        "app",
        "--port",
        str(port),
        "--env",
        f"GRACESHUT_TOKEN={TOKEN}",
        *demo_env(tmp_path),
        *FAST,
        *uvicorn("examples.app:app", port),
    )
    assert status == 0, (report["problems"], stderr, report["app_output_tail"])
    settings = report["settings"]
    assert "Deployment/graceshut-demo, container app" in settings["manifest"]
    assert settings["grace_period"] == 30
    assert settings["prestop"].endswith(f":{port}/shutdown with Authorization")
    assert settings["readiness"].endswith(f":{port}/readyz")
    assert settings["liveness"].endswith(f":{port}/livez")
    assert report["app_report"]["ok"] is True
    assert report["requests"]["failed"] == 0
    assert not any("liveness" in w for w in report["warnings"]), "/livez stayed up"
    # The hook took the 2 s delay and a little (up to 4 s on a loaded machine): the
    # kubelet takes its whole seconds off the 30 s.
    assert report["sigkill_after"] in (26, 27, 28)


@pytest.mark.e2e
def test_an_exec_hook_from_a_json_manifest(tmp_path: Path) -> None:
    """A JSON Pod (no PyYAML needed) with `graceshut prestop` as exec hook, from loopback."""
    port = free_port()
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "demo"},
        "spec": {
            "terminationGracePeriodSeconds": 10,
            "containers": [
                {
                    "name": "app",
                    "ports": [{"name": "http", "containerPort": port}],
                    "env": [{"name": "GRACESHUT_GRACE_PERIOD", "value": "10"}],
                    "readinessProbe": {"tcpSocket": {"port": "http"}},
                    "lifecycle": {
                        "preStop": {
                            "exec": {
                                "command": [
                                    "graceshut",
                                    "prestop",
                                    f"http://127.0.0.1:{port}/shutdown",
                                ]
                            }
                        }
                    },
                }
            ],
        },
    }
    manifest = tmp_path / "pod.json"
    manifest.write_text(json.dumps(pod))
    status, report, stderr = simulate(
        "--manifest",
        str(manifest),
        "--env",
        f"DEMO_DATABASE={tmp_path / 'demo.sqlite3'}",
        "--env",
        "GRACESHUT_PROPAGATION_DELAY=1",
        "--replicas",
        "2",  # a bare Pod is one replica: no other pod would take the load
        *FAST,
        *uvicorn("examples.app:app", port),
    )
    assert status == 0, (report["problems"], stderr, report["app_output_tail"])
    assert report["prestop"]["exit_status"] == 0
    assert report["app_report"]["reason"] == "prestop", "read from the hook's stdout"
    assert report["settings"]["readiness"].startswith("tcpSocket")


@pytest.mark.e2e
def test_an_app_on_loopback_only_is_told_to_listen_on_the_pod_ip() -> None:
    """The kubelet reaches the pod IP, not 127.0.0.1: the run stops and says how to bind."""
    if pod_ip() is None:
        pytest.skip("this machine has no address besides loopback")
    port = free_port()
    command = ["--", sys.executable, "-m", "uvicorn", "tests.e2e.plain_app:app"]
    status, report, _ = simulate("--port", str(port), *FAST, *command, "--port", str(port))
    assert status == 1
    assert "listens on 127.0.0.1 only" in report["problems"][0]
    assert report["requests"]["sent"] == 0, "no load on an app that is not ready"


def test_an_app_that_bound_every_address_since_the_refusal_is_not_told_otherwise() -> None:
    """A slow start: refused on the pod IP, then bound on 0.0.0.0: not "loopback only"."""
    # Linux routes all of 127.0.0.0/8 to lo: 127.0.0.2 stands for the pod IP, which an
    # app bound to 127.0.0.1 refuses and one bound to 0.0.0.0 accepts.
    address = "127.0.0.2"
    port = free_port()
    with socket.create_server(("127.0.0.1", port)):
        assert loopback_only(address, port)
    with socket.create_server(("0.0.0.0", port)):  # as uvicorn --host 0.0.0.0
        assert not loopback_only(address, port)
    assert not loopback_only(address, port), "nothing listens: not a loopback-only app"


@pytest.mark.parametrize(
    ("grace", "hook", "expected"),
    [
        (30, None, 30),  # no hook: the whole grace period
        (30, 10.9, 20),  # whole seconds only: 30 - 10
        (30, 29.5, 2),  # never less than 2 s
        (30, 45.0, 2),  # the hook overran: 2 s after SIGTERM, the container's minimum
        (1, None, 2),  # even a tiny grace period leaves 2 s after SIGTERM
    ],
)
def test_sigkill_comes_when_the_kubelet_says(
    grace: float, hook: float | None, expected: float
) -> None:
    """SIGTERM to SIGKILL: grace period minus the hook's whole seconds, at least 2 s."""
    assert stop_timeout(grace, hook) == expected


def test_a_manifest_gives_hook_probes_ports_and_env(tmp_path: Path) -> None:
    """A JSON List with a Service and a CronJob: the container's settings are found."""
    container = {
        "name": "worker",
        "command": ["python", "-m", "worker"],
        "args": ["--port", "9000"],
        "ports": [{"name": "web", "containerPort": 9000}],
        "env": [
            {"name": "A", "value": "1"},
            {"name": "SECRET", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
        ],
        "envFrom": [{"configMapRef": {"name": "settings"}}],
        "readinessProbe": {"httpGet": {"path": "/ready", "port": "web"}, "timeoutSeconds": 2},
        "livenessProbe": {"exec": {"command": ["true"]}},
        "lifecycle": {"preStop": {"sleep": {"seconds": 5}}},
    }
    manifest = {
        "kind": "List",
        "items": [
            {"kind": "Service", "metadata": {"name": "svc"}, "spec": {}},
            {
                "kind": "CronJob",
                "metadata": {"name": "nightly"},
                "spec": {
                    "jobTemplate": {"spec": {"template": {"spec": {"containers": [container]}}}}
                },
            },
        ],
    }
    path = tmp_path / "list.json"
    path.write_text(json.dumps(manifest))
    spec = read_manifest(path, None)
    assert spec.source.endswith("CronJob/nightly, container worker")
    assert spec.grace_period == 30, "the Kubernetes default"
    assert spec.prestop == Sleep(5.0)
    assert spec.readiness is not None
    assert spec.readiness.action == HttpGet(path="/ready", port="web")
    assert spec.readiness.timeout == 2
    assert spec.liveness is not None
    assert spec.liveness.action == Exec(("true",))
    assert spec.env == {"A": "1"}
    assert spec.env_from_elsewhere == ("SECRET",)
    assert spec.env_sources == ("configMapRef settings",)
    assert spec.port_names == {"web": 9000}
    assert spec.command == ("python", "-m", "worker", "--port", "9000")


def test_the_example_deployment_reads_as_written() -> None:
    """The example's Deployment: 30 s, httpGet /shutdown with the token header, probes."""
    spec = read_manifest(DEPLOYMENT, "app")
    assert spec.grace_period == 30
    assert spec.prestop == HttpGet(
        path="/shutdown", port="http", headers=(("Authorization", f"Bearer {TOKEN}"),)
    )
    assert spec.readiness is not None
    assert spec.readiness.action == HttpGet(path="/readyz", port="http")
    assert spec.liveness is not None
    assert spec.liveness.action == HttpGet(path="/livez", port="http")
    assert spec.env_from_elsewhere == ("GRACESHUT_TOKEN",)
    with pytest.raises(ManifestError, match="no container named 'web'"):
        read_manifest(DEPLOYMENT, "web")
    with pytest.raises(ManifestError, match="no Pod or workload"):
        read_manifest(ROOT / "examples" / "k8s" / "pdb.yaml", None)


@pytest.mark.parametrize(
    ("pod", "message"),
    [
        ({"kind": "Pod", "spec": {"containers": [{"name": "a"}, {"name": "b"}]}}, "--container"),
        (
            {
                "kind": "Pod",
                "spec": {"containers": [{"name": "a", "readinessProbe": {"udp": {}}}]},
            },
            "plays httpGet, exec, tcpSocket or grpc; the manifest has udp",
        ),
        (
            {
                "kind": "Pod",
                "spec": {"terminationGracePeriodSeconds": "30", "containers": [{"name": "a"}]},
            },
            "terminationGracePeriodSeconds: '30' is not a number",
        ),
    ],
)
def test_a_manifest_that_cannot_be_played_is_refused(
    tmp_path: Path, pod: dict[str, Any], message: str
) -> None:
    """Ambiguous, unsupported or malformed manifests: a ManifestError that says what."""
    path = tmp_path / "pod.json"
    path.write_text(json.dumps(pod))
    with pytest.raises(ManifestError, match=message):
        read_manifest(path, None)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--container", "app", "--", "app"], "--container needs --manifest"),
        (["--prestop-header", "A: b", "--", "app"], "--prestop-header needs --prestop-http"),
        (["--rate", "-1", "--", "app"], "argument --rate: '-1' must be 0 or more"),
        (["--path", "health", "--", "app"], "argument --path: 'health' must start with /"),
        (["--env", "NOVALUE", "--", "app"], "argument --env: 'NOVALUE' is not NAME=VALUE"),
        (["--prestop-http", "/s", "--prestop-sleep", "1", "--", "app"], "not allowed with"),
        ([], "the command that starts the app is missing"),
        (["--manifest", "/nonexistent.json", "--", "app"], "cannot read /nonexistent.json"),
        (["--", "/nonexistent/app"], "cannot start /nonexistent/app"),
    ],
)
def test_bad_options_exit_2_naming_the_option(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Usage errors: exit status 2 and a message that names what is wrong."""
    try:
        status = main(["simulate", "--no-progress", *args])
    except SystemExit as exc:  # argparse's own checks
        status = int(str(exc.code))
    assert status == 2
    assert message in capsys.readouterr().err


def test_a_yaml_manifest_without_pyyaml_says_what_to_install() -> None:
    """Without PyYAML, a YAML manifest is a usage error that names the extra."""
    code = (
        "import sys; sys.modules['yaml'] = None; from graceshut.cli import main; "
        f"sys.exit(main(['simulate', '--manifest', {str(DEPLOYMENT)!r}, '--', 'app']))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 2
    assert "pip install 'graceshut[simulate]'" in result.stderr
    assert "kubectl get deployment NAME -o json" in result.stderr


def test_a_probe_on_an_undeclared_port_name_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A probe naming a port the container does not declare: exit 2 before anything starts."""
    pod = {
        "kind": "Pod",
        "spec": {"containers": [{"name": "a", "readinessProbe": {"tcpSocket": {"port": "web"}}}]},
    }
    path = tmp_path / "pod.json"
    path.write_text(json.dumps(pod))
    status = main(["simulate", "--no-progress", "--manifest", str(path), "--", "app"])
    assert status == 2
    assert "no container port is named 'web'" in capsys.readouterr().err
