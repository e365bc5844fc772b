"""The verdict as text, from its JSON form (`_report.to_dict`), so that both say the same."""

from __future__ import annotations

import shlex
from typing import Any

from ._load import KINDS, STATUS
from ._steps import steps_text


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
    lines += steps_text(data.get("app_steps"))
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
    if settings.get("grace_period_override") is not None:
        pod += f"; {settings['override_cause']}"
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
        line += f" ({breakdown(requests)}; the first at {requests['first_failure']:+.3f}s)"
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
    lines = ["", summary, f"  handlers: {handlers or 'none'}"]
    step = next((p for p in report.get("phases", []) if p.get("name") == "propagation"), None)
    if step is not None and report.get("propagation"):
        ended = step.get("started", 0) + step.get("duration", 0)
        lines.append(
            f"  propagation delay: ended ({report['propagation']}) {ended:.2f}s after the trigger"
        )
    return lines


def breakdown(requests: dict[str, Any]) -> str:
    failures = requests.get("failures", {})
    parts = [f"{failures[k]} {k}" for k in KINDS if failures.get(k) and k != STATUS]
    statuses = {s: n for s, n in requests.get("statuses", {}).items() if int(s) >= 500}  # noqa: PLR2004
    parts += [f"{n} HTTP {s}" for s, n in statuses.items()]
    return ", ".join(parts)
