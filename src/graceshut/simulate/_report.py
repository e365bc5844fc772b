"""The verdict of a run, as JSON and as text.

A run is clean when no request failed, no SIGKILL was needed, the app exited with
status 0, the preStop hook worked (no transport error, exec status 0, no overrun) and
the app's own shutdown report, when it gave one, lists no failure.
"""

from __future__ import annotations

import json
import shlex
from typing import Any

from . import _explain
from ._kubelet import Termination, describe_exit, signal_label, signal_name
from ._load import KINDS, STATUS, LoadStats
from ._run import Outcome, Plan

SCHEMA = 1


def problems(outcome: Outcome) -> list[str]:
    """Why the run is not clean; empty when it is."""
    found: list[str] = []
    if outcome.error is not None:
        found.append(outcome.error)
    failed = int(outcome.requests.get("failed", 0))
    if failed:
        found.append(f"{failed} requests failed ({_breakdown(outcome.requests)})")
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
            found.append(
                f"SIGKILL was needed: the app was still running {done.stop_timeout:g}s "
                f"after {signal_label(done.stop_signal)}"
            )
            cause = _explain.pid1_problem(done)
            if cause is not None:
                found.append(cause)
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
    found += _explain.service_warnings(outcome)
    found += _explain.pid1_warnings(outcome)
    # The kubelet stops the liveness probe before the hook: only earlier failures count.
    found += [
        f"the liveness probe failed before the deletion: {what} (the kubelet restarts a "
        "container whose liveness probe keeps failing)"
        for _, what in outcome.liveness_failures
    ]
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
        "app_phases": _phases(outcome, report),
        "app_report": report,
        "app_output_tail": outcome.app_output,
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


def _exit(status: int | None) -> dict[str, Any]:
    if status is None:
        return {"status": None, "signal": None, "description": "not terminated by the kubelet"}
    # As the container runtime reports it (kubectl's exitCode): 128 + the signal.
    return {
        "status": 128 - status if status < 0 else status,
        "signal": signal_name(status),
        "description": describe_exit(status),
    }


def render_text(data: dict[str, Any]) -> str:
    """The text form, from the JSON form so that both always say the same."""
    lines = _settings_text(data["settings"])
    deleted = any(e["event"] == "pod deleted" for e in data["timeline"])
    origin = "the pod is deleted, the grace period starts" if deleted else "the run starts"
    lines += ["", f"timeline (t=0: {origin})"]
    for event in data["timeline"]:
        detail = f": {event['detail']}" if event["detail"] else ""
        lines.append(f"  {event['t']:+8.3f}s  {event['event']}{detail}")
    lines += _requests_text(data["requests"])
    lines += _app_report_text(data["app_report"])
    lines += ["", f"exit: {data['exit']['description']}"]
    lines += [f"warning: {warning}" for warning in data["warnings"]]
    if data["clean"]:
        lines += ["", "verdict: clean (no failed request, no SIGKILL, exit status 0)"]
        return "\n".join(lines)
    tail = data["app_output_tail"]
    if tail:
        lines += ["", "the app's last output:", *(f"  | {line}" for line in tail[-15:])]
    lines += ["", "verdict: NOT CLEAN", *(f"  - {p}" for p in data["problems"])]
    return "\n".join(lines)


def _settings_text(settings: dict[str, Any]) -> list[str]:
    load = settings["load"]
    rate = f"{load['rate']:g} req/s" if load["rate"] else "as many requests as they can"
    clients = "keep-alive clients" if load["keep_alive"] else "clients, a connection per request"
    on = ", ".join(load["paths"])
    if load.get("grpc_unary") or load.get("grpc_stream"):
        rate, clients = rate.replace("req/s", "calls/s"), "gRPC channels"
        on = ", ".join([*load["grpc_unary"], *(f"{m} (a stream)" for m in load["grpc_stream"])])
    lines = [f"graceshut simulate: {shlex.join(settings['command'])}"]
    if settings["manifest"]:
        lines.append(f"  manifest: {settings['manifest']}")
    pod = (
        f"  pod {settings['pod']}, grace period {settings['grace_period']:g}s, new connections "
        f"until {settings['endpoint_lag']:g}s after the deletion"
    )
    replicas = settings["replicas"]
    service = f"  Service: {replicas} replica{'' if replicas == 1 else 's'}"
    if settings["publish_not_ready_addresses"]:
        service += ", publishNotReadyAddresses"
    lines += [
        pod,
        service,
        f"  PID 1: {settings['pid1']}; stop signal {settings['stop_signal']}",
        f"  preStop: {settings['prestop'] or 'none'}",
        f"  readiness: {settings['readiness']}",
    ]
    for probe in ("liveness", "startup"):
        if settings[probe]:
            lines.append(f"  {probe}: {settings[probe]}")
    for mount, local in settings["volumes"].items():
        lines.append(f"  volume {mount}: {local}")
    lines.append(
        f"  load: {rate} from {load['concurrency']} {clients} on {on}, "
        f"{settings['warmup']:g}s before the deletion and until the end"
    )
    return lines


def _requests_text(requests: dict[str, Any]) -> list[str]:
    if not requests:
        return []
    line = f"requests: {requests['sent']} sent, {requests['ok']} ok, {requests['failed']} failed"
    if requests["failed"]:
        line += f" ({_breakdown(requests)}; the first at {requests['first_failure']:+.3f}s)"
    lines = ["", line]
    if requests["rerouted"]:
        lines.append(
            f"  {requests['rerouted']} more went to other pods once the endpoints were updated"
        )
    latency = requests["latency_ms"]
    if latency["p50"] is not None:
        lines.append(
            f"  latency p50 {latency['p50']} ms, p99 {latency['p99']} ms, "
            f"max {latency['max']} ms; {requests['connections']} connections opened"
        )
    groups: dict[tuple[str, str, str], list[float]] = {}
    for sample in requests["failure_samples"]:
        key = (sample["kind"], sample["detail"], sample["path"])
        groups.setdefault(key, []).append(sample["t"])
    for (kind, detail, path), times in groups.items():
        when = f"{times[0]:+.3f}s" + (f" to {times[-1]:+.3f}s" if len(times) > 1 else "")
        lines.append(f"  {len(times)} x {kind}: {detail} on {path}, {when}")
    if requests["failed"] > len(requests["failure_samples"]):
        lines.append(f"  (the first {len(requests['failure_samples'])} failures are listed)")
    return lines


def _app_report_text(report: dict[str, Any] | None) -> list[str]:
    if report is None:
        return []
    handlers = ", ".join(f"{h.get('name')} {h.get('outcome')}" for h in report["handlers"])
    summary = (
        f"app report: reason {report.get('reason')}, ok {report.get('ok')}, "
        f"{report.get('duration', 0):.3f}s, {report.get('in_flight_at_start')} in flight "
        f"at start, {report.get('in_flight_abandoned')} abandoned"
    )
    return ["", summary, f"  handlers: {handlers or 'none'}"]


def _breakdown(requests: dict[str, Any]) -> str:
    failures = requests.get("failures", {})
    parts = [f"{failures[k]} {k}" for k in KINDS if failures.get(k) and k != STATUS]
    statuses = {s: n for s, n in requests.get("statuses", {}).items() if int(s) >= 500}  # noqa: PLR2004
    parts += [f"{n} HTTP {s}" for s, n in statuses.items()]
    return ", ".join(parts)
