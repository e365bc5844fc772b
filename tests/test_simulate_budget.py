"""``graceshut simulate`` plays the short budgets: a shorter deletion, a node shutdown."""

from __future__ import annotations

import argparse
import json
import ssl
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from graceshut.cli import main
from graceshut.simulate import _run
from graceshut.simulate._apiserver import ApiServer, TlsError
from graceshut.simulate._plan import _override
from graceshut.simulate._steps import app_steps

from .asgi_servers import free_port
from .test_simulate import simulate

# The app plans for 60 s with a 5 s propagation delay; a tracked job holds its drain.
APP_ENV = ["--env", "GRACESHUT_GRACE_PERIOD=60", "--env", "GRACESHUT_PROPAGATION_DELAY=5"]
FAST = ["--endpoint-lag", "1", "--warmup", "1", "--rate", "50", "--no-progress", "--json"]


def budget_app(port: int, flushed: Path, *extra: str) -> list[str]:
    return [
        "--port", str(port), "--grace-period", "60", *APP_ENV,
        "--env", f"FLUSH_FILE={flushed}", *extra, *FAST,
        "--", sys.executable, "-m", "uvicorn", "tests.e2e.budget_app:app",
        "--host", "0.0.0.0", "--port", str(port),
    ]  # fmt: skip


@pytest.mark.e2e
def test_a_15s_deletion_cuts_the_flush_of_an_app_planned_for_60s(tmp_path: Path) -> None:
    """--grace-period-override 15: the SIGKILL lands in the drain, the flush never runs."""
    flushed = tmp_path / "flushed"
    status, report, stderr = simulate(
        *budget_app(free_port(), flushed, "--grace-period-override", "15"), timeout=90
    )
    assert status == 1, stderr
    assert report["sigkill"] is True
    steps = report["app_steps"]
    assert steps["running"] == "drain"
    assert steps["cut_off"] == ["drain", "flush", "release", "report"]
    assert steps["deadline_source"] == "config"
    assert steps["budget"] == 59
    (cut,) = [p for p in report["problems"] if "never finished" in p]
    assert cut.startswith("the SIGKILL came during the app's drain step: drain, flush,")
    assert 'deadline_source="api"' in cut
    assert not flushed.exists()
    # Without the app's report, its steps come from its notes, the drain cut at the kill.
    phases = report["app_phases"]
    assert [p["name"] for p in phases] == ["announce", "propagation", "drain"]
    assert phases[-1]["t"] + phases[-1]["duration"] == pytest.approx(report["sigkill_at"], abs=0.01)
    pod_deleted = report["timeline"][[e["event"] for e in report["timeline"]].index("pod deleted")]
    said = "deleted with --grace-period=15 (terminationGracePeriodSeconds: 60s)"
    assert said in pod_deleted["detail"]


@pytest.mark.e2e
def test_with_the_deadline_from_the_api_the_flush_runs_in_time(tmp_path: Path) -> None:
    """The same deletion, deadline_source=api: the delay and drain shrink, the run is clean."""
    flushed = tmp_path / "flushed"
    status, report, stderr = simulate(
        *budget_app(
            free_port(), flushed, "--grace-period-override", "15",
            "--env", "GRACESHUT_DEADLINE_SOURCE=api",
        ),
        timeout=90,
    )  # fmt: skip
    assert status == 0, (report["problems"], stderr, report["app_output_tail"])
    assert report["sigkill"] is False
    steps = report["app_steps"]
    assert steps["done"] is True
    assert steps["cut_off"] == []
    assert steps["finished"] == ["announce", "propagation", "drain", "flush", "release", "report"]
    assert steps["deadline_source"] == "api"
    assert 12 <= steps["budget"] <= 14
    assert flushed.read_text().startswith("flushed with ")
    assert any(e["event"] == "deletionTimestamp set" for e in report["timeline"])


@pytest.mark.e2e
def test_a_node_shutdown_sets_no_deletion_timestamp(tmp_path: Path) -> None:
    """--node-shutdown 12,4: 8 s and no deletionTimestamp, so even the API cannot tell the app."""
    flushed = tmp_path / "flushed"
    status, report, _ = simulate(
        *budget_app(
            free_port(), flushed, "--node-shutdown", "12,4",
            "--env", "GRACESHUT_DEADLINE_SOURCE=api",
        ),
        timeout=90,
    )  # fmt: skip
    assert status == 1
    assert report["settings"]["grace_period_override"] == 8
    assert "12s - shutdownGracePeriodCriticalPods 4s = 8s" in report["settings"]["override_cause"]
    assert not any(e["event"] == "deletionTimestamp set" for e in report["timeline"])
    steps = report["app_steps"]
    assert steps["deadline_source"] == "config"
    assert "flush" in steps["cut_off"]
    assert report["api_server"].startswith("served on 127.0.0.1:")


@pytest.mark.parametrize(
    ("node", "grace", "expected"),
    [((30, 10), 60, 20.0), ((30, 10), 15, 15.0), ((30, 0), 60, 30.0), ((30, 30), 60, 0.0)],
)
def test_the_node_shutdown_override_is_the_kubelets(
    node: tuple[int, int], grace: float, expected: float
) -> None:
    """GRACE - CRITICAL for a non-critical pod, its own grace period when that is shorter."""
    args = argparse.Namespace(grace_period_override=None, node_shutdown=node)
    override, cause = _override(args, grace)
    assert override == expected
    assert cause is not None
    assert cause.startswith("node shutdown")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--node-shutdown", "10,20"], "is longer than shutdownGracePeriod"),
        (["--node-shutdown", "0"], "turns graceful node shutdown off"),
        (["--node-shutdown", "ten"], "'ten' is not a number"),
        (["--grace-period-override", "1.5"], "not a whole number of seconds"),
        (["--grace-period-override", "5", "--node-shutdown", "30"], "not allowed with"),
    ],
)
def test_bad_short_budget_options_exit_2(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Usage errors of the new options: exit status 2 and a message naming the option."""
    with pytest.raises(SystemExit) as exc:
        main(["simulate", "--no-progress", *args, "--", "app"])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_the_pod_object_is_served_only_with_the_token() -> None:
    """The simulated API server answers the pod to its token, 401 without, 404 elsewhere."""
    with ApiServer(grace_period=45) as server:
        env = server.environment()
        base = f"https://127.0.0.1:{env['KUBERNETES_SERVICE_PORT']}"
        context = ssl.create_default_context(cafile=str(server.service_account / "ca.crt"))

        def get(path: str, token: str | None) -> tuple[int, Any]:
            request = urllib.request.Request(base + path)  # noqa: S310 - https, fixed host
            if token is not None:
                request.add_header("Authorization", f"Bearer {token}")
            try:
                with urllib.request.urlopen(request, context=context, timeout=5) as answer:  # noqa: S310
                    return answer.status, json.load(answer)
            except urllib.error.HTTPError as exc:
                return exc.code, json.load(exc)

        path = f"/api/v1/namespaces/default/pods/{server.name}"
        status, pod = get(path, server.token)
        assert status == 200
        assert pod["spec"]["terminationGracePeriodSeconds"] == 45
        assert "deletionTimestamp" not in pod["metadata"]
        server.delete(15, at=1_800_000_000.7)
        _, pod = get(path, server.token)
        assert pod["metadata"]["deletionTimestamp"] == "2027-01-15T08:00:15Z"
        assert pod["metadata"]["deletionGracePeriodSeconds"] == 15
        assert get(path, "wrong")[0] == 401
        assert get("/api/v1/namespaces/default/pods/other", server.token)[0] == 404


def test_steps_cut_by_a_kill_are_told_from_the_notes() -> None:
    """Notes up to the drain's start, no 'done': the drain ran, the rest never began."""
    notes = [
        {"event": "start", "budget": 59, "wall": 100.0},
        {"event": "begin", "step": "announce", "wall": 100.0},
        {"event": "end", "step": "announce", "wall": 100.1},
        {"event": "begin", "step": "propagation", "wall": 100.1},
        {"event": "end", "step": "propagation", "wall": 105.0},
        {"event": "begin", "step": "drain", "wall": 105.0},
    ]
    steps = app_steps(notes, deleted_wall=100.0)
    assert steps is not None
    assert steps["running"] == "drain"
    assert steps["cut_off"] == ["drain", "flush", "release", "report"]
    assert steps["steps"][1] == {"name": "propagation", "t": 0.1, "duration": 4.9}
    assert app_steps([], deleted_wall=None) is None


def test_without_openssl_the_run_goes_on_and_says_so(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """No certificate can be made: the pod object is not served, and a warning says so."""

    def no_tls(**_: object) -> ApiServer:
        raise TlsError("the openssl command is not installed")

    monkeypatch.setattr(_run, "ApiServer", no_tls)
    port = free_port()
    main([
        "simulate", "--no-progress", "--json", "--port", str(port), "--ready-path", "/",
        "--grace-period", "2", "--warmup", "0.5", "--endpoint-lag", "0.2",
        "--", sys.executable, "-m", "http.server", str(port), "--bind", "0.0.0.0",
        "--directory", str(tmp_path),
    ])  # fmt: skip
    report = json.loads(capsys.readouterr().out)
    assert report["api_server"] == "not served: the openssl command is not installed"
    assert any("an app with deadline_source" in w for w in report["warnings"])
    assert report["app_steps"] is None
