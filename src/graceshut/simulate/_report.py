"""The verdict of a run, as JSON and as text.

A run is clean when no request failed, no SIGKILL was needed, the app exited with
status 0, the preStop hook worked (no transport error, exec status 0, no overrun) and
the app's own shutdown report, when it gave one, lists no failure.
"""

from __future__ import annotations

import json
from typing import Any

from . import _explain
from ._kubelet import Termination, describe_exit, signal_label, signal_name
from ._load import LoadStats
from ._run import Outcome, Plan
from ._steps import app_steps, describe_cut, short_budget
from ._text import breakdown

SCHEMA = 1


def problems(outcome: Outcome) -> list[str]:
    """Why the run is not clean; empty when it is."""
    found: list[str] = []
    if outcome.error is not None:
        found.append(outcome.error)
    failed = int(outcome.requests.get("failed", 0))
    if failed:
        found.append(f"{failed} requests failed ({breakdown(outcome.requests)})")
    done = outcome.termination
    if done is not None:
        if done.hook_overran:
            found.append(
                f"the preStop hook was still running when the grace period "
                f"({done.grace_period:g}s) ran out"
            )
        elif done.hook_result is not None and not done.hook_result.ok:
            found.append(f"the preStop hook failed: {done.hook_result.summary()}")
        if done.sigkill_at is not None:
            found += _killed(outcome, done)
    if outcome.error is None and outcome.exit_status is not None and outcome.exit_status != 0:
        status = outcome.exit_status
        verb = "was" if status < 0 else "exited with"
        found.append(f"the app {verb} {describe_exit(status)}")
    report = app_report(outcome)
    if report is not None and report.get("ok") is False:
        failed_handlers = [
            f"{h.get('name')} ({h.get('outcome')})"
            for h in report.get("handlers", [])
            if isinstance(h, dict) and h.get("outcome") != "ok"
        ]
        abandoned = report.get("in_flight_abandoned", 0)
        detail = ", ".join(failed_handlers) or f"{abandoned} in-flight requests abandoned"
        found.append(f"the app's shutdown report lists failures: {detail}")
    return found


def _killed(outcome: Outcome, done: Termination) -> list[str]:
    """What the SIGKILL says: the app outlived its time, why, and what it cut off."""
    sig = signal_label(done.stop_signal)
    found = [f"SIGKILL was needed: the app was still running {done.stop_timeout:g}s after {sig}"]
    cause = _explain.pid1_problem(done)
    if cause is not None:
        found.append(cause)
    steps = app_steps(outcome.app_progress, outcome.deleted_wall)
    if steps is not None and steps["cut_off"]:
        found.append(describe_cut(steps, "the SIGKILL") + short_budget(outcome.plan, steps))
    return found


def warnings(outcome: Outcome) -> list[str]:
    """What deserves a look without failing the run."""
    found = list(outcome.plan.warnings)
    done = outcome.termination
    result = done.hook_result if done is not None else None
    if result is not None and result.status is not None and result.status >= 400:  # noqa: PLR2004
        body = result.body[:300].decode(errors="replace")
        found.append(
            f"the preStop hook got HTTP {result.status} (the kubelet ignores the status, "
            f"but the app did not take it as its cue to shut down): {body}"
        )
    found += _explain.hook_warnings(done)
    if outcome.api is not None and outcome.api.startswith("not served"):
        found.append(
            f'the pod object was {outcome.api}: an app with deadline_source="api" keeps '
            "its configured deadline here"
        )
    found += _explain.service_warnings(outcome)
    found += _explain.pid1_warnings(outcome)
    # The kubelet stops the liveness probe before the hook: only earlier failures count.
    found += [
        f"the liveness probe failed before the deletion: {what} (the kubelet restarts a "
        "container whose liveness probe keeps failing)"
        for _, what in outcome.liveness_failures
    ]
    found += outcome.notes
    return found


def app_report(outcome: Outcome) -> dict[str, Any] | None:
    """The report graceshut's shutdown route returned to the preStop hook, if any."""
    done = outcome.termination
    result = done.hook_result if done is not None else None
    if result is None:
        return None
    raw = result.body or result.output.encode()
    try:
        payload = json.loads(raw)
    except ValueError:
        return None
    if isinstance(payload, dict) and "handlers" in payload and "ok" in payload:
        return payload
    return None


def settings(plan: Plan) -> dict[str, Any]:
    """What was played: the command, the pod, the kubelet's settings, the load."""
    target, load = plan.target, plan.load
    return {
        "command": list(plan.command),
        "manifest": plan.source,
        "pod": f"{target.host}:{load.port}",
        "grace_period": plan.grace_period,
        "grace_period_override": plan.grace_override,
        "override_cause": plan.override_cause,
        "prestop": plan.prestop.describe(target) if plan.prestop is not None else None,
        "readiness": plan.readiness.action.describe(target),
        "liveness": plan.liveness.action.describe(target) if plan.liveness else None,
        "startup": plan.startup.action.describe(target) if plan.startup else None,
        "stop_signal": signal_label(plan.stop_signal),
        "pid1": "PID namespace" if plan.pid_namespace else f"not modelled: {plan.pid1_note}",
        "replicas": plan.replicas,
        "publish_not_ready_addresses": plan.publish_not_ready,
        "volumes": dict(plan.volumes),
        "endpoint_lag": plan.endpoint_lag,
        "warmup": plan.warmup,
        "load": {
            "rate": load.rate,
            "concurrency": load.concurrency,
            "paths": list(load.paths),
            "keep_alive": load.keep_alive,
            "timeout": load.timeout,
            "grpc_unary": list(load.grpc_unary),
            "grpc_stream": list(load.grpc_stream),
        },
    }


def to_dict(outcome: Outcome) -> dict[str, Any]:
    """The JSON form (``--json``)."""
    found = problems(outcome)
    timeline = outcome.timeline

    def t(at: float | None) -> float | None:
        return None if at is None else round(timeline.relative(at), 3)

    done = outcome.termination
    prestop: dict[str, Any] | None = None
    if done is not None and done.hook is not None:
        result = done.hook_result
        prestop = {
            "action": done.hook,
            "ok": bool(result and result.ok) and not done.hook_overran,
            "overran": done.hook_overran,
            "duration": round(result.duration, 3) if result else None,
            "status": result.status if result else None,
            "exit_status": result.exit_status if result else None,
            "error": result.error if result else None,
            "redirects": list(result.redirects) if result else [],
            "fell_back_to_http": bool(result and result.fell_back_to_http),
        }
    requests = dict(outcome.requests or LoadStats().snapshot())
    requests["failure_samples"] = [
        {"t": t(f.at), "kind": f.kind, "detail": f.detail, "path": f.path} for f in outcome.samples
    ]
    requests["first_failure"] = t(outcome.samples[0].at) if outcome.samples else None
    requests["last_failure"] = t(outcome.samples[-1].at) if outcome.samples else None
    status = outcome.exit_status
    endpoints = outcome.endpoints
    report = app_report(outcome)
    return {
        "schema": SCHEMA,
        "clean": not found,
        "error": outcome.error,
        "problems": found,
        "warnings": warnings(outcome),
        "settings": settings(outcome.plan),
        "timeline": [{"t": t(e.at), "event": e.what, "detail": e.detail} for e in timeline.events],
        "requests": requests,
        "prestop": prestop,
        "grace_period": done.grace_period if done else None,
        "stop_signal": signal_label(done.stop_signal) if done else None,
        "sigterm_at": t(done.sigterm_at) if done else None,
        "sigkill_after": done.stop_timeout if done else None,
        "sigkill": bool(done and done.sigkill_at is not None),
        "sigkill_at": t(done.sigkill_at) if done else None,
        "exit": _exit(status),
        "pid1": _pid1(done),
        "service": {
            "replicas": outcome.plan.replicas,
            "publish_not_ready_addresses": outcome.plan.publish_not_ready,
            "endpoint_update_at": t(endpoints.removed_at) if endpoints else None,
            "new_connections_after_update": endpoints.kept if endpoints else 0,
            "rejected_no_endpoint": endpoints.rejected if endpoints else 0,
        },
        "series": _series(outcome),
        "app_phases": _phases(outcome, report)
        or _cut_phases(outcome, t(done.sigkill_at) if done else None),
        "app_report": report,
        "app_output_tail": outcome.app_output,
        "app_steps": app_steps(outcome.app_progress, outcome.deleted_wall),
        "api_server": outcome.api,
    }


def _pid1(done: Termination | None) -> dict[str, Any] | None:
    view = done.pid1 if done is not None else None
    if done is None or view is None:
        return None
    return {
        "namespace": done.pid_namespace,
        "program": view.name,
        "shell": view.is_shell,
        "handles_stop_signal": view.handles,
        "children": len(view.children),
    }


def _series(outcome: Outcome) -> list[dict[str, Any]]:
    """Outcomes per tenth of a second, ``t`` from the deletion (the picture's bars)."""
    load = outcome.load_series
    timeline = outcome.timeline
    return [
        {"t": round(timeline.relative(tick / 10), 1), **dict(counts)}
        for tick, counts in sorted(load.items())
    ]


def _phases(outcome: Outcome, report: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The app's own phases (from its shutdown report), ``t`` from the deletion."""
    if report is None or outcome.deleted_wall is None:
        return []
    started = report.get("started_at")
    if not isinstance(started, (int, float)):
        return []
    offset = started - outcome.deleted_wall
    return [
        {
            "name": phase.get("name"),
            "t": round(offset + float(phase.get("started", 0)), 3),
            "duration": round(float(phase.get("duration", 0)), 3),
        }
        for phase in report.get("phases", [])
        if isinstance(phase, dict)
    ]


def _cut_phases(outcome: Outcome, killed: float | None) -> list[dict[str, Any]]:
    """Without the app's report (it was killed): its steps from its notes, to the kill."""
    steps = app_steps(outcome.app_progress, outcome.deleted_wall)
    if steps is None:
        return []
    phases = []
    for step in steps["steps"]:
        duration = step["duration"]
        if duration is None and killed is not None and step["t"] is not None:
            duration = round(max(0.0, killed - step["t"]), 3)
        if step["t"] is not None and duration is not None:
            phases.append({"name": step["name"], "t": step["t"], "duration": duration})
    return phases


def _exit(status: int | None) -> dict[str, Any]:
    if status is None:
        return {"status": None, "signal": None, "description": "not terminated by the kubelet"}
    # As the container runtime reports it (kubectl's exitCode): 128 + the signal.
    return {
        "status": 128 - status if status < 0 else status,
        "signal": signal_name(status),
        "description": describe_exit(status),
    }
