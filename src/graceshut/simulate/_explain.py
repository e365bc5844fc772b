"""What the kubelet's and the Service's parts of a run mean: causes and fixes, in words.

`graceshut.simulate._report` lists these among the problems and warnings of a run.
"""

from __future__ import annotations

from ._kubelet import Termination, signal_label
from ._run import Outcome

_SHELL_FIX = (
    "run the app with exec (`exec uvicorn ...` as the script's last line), or give the "
    "command as a list without a shell; or put an init that forwards signals (tini, "
    "dumb-init) in front"
)


def pid1_problem(done: Termination) -> str | None:
    """Why the stop signal did nothing, when PID 1 had no handler for it; else None."""
    view = done.pid1
    if not done.pid_namespace or view is None or view.handles:
        return None
    sig = signal_label(done.stop_signal)
    if view.is_shell:
        return (
            f"PID 1 is a shell ({view.name}) that runs the app without exec: it has no "
            f"{sig} handler, so the kernel dropped the {sig} (PID 1 gets only the signals "
            "it handles), the app never heard of the shutdown and was SIGKILLed at the end "
            f"of the grace period. Fix: {_SHELL_FIX}"
        )
    return (
        f"PID 1 ({view.name}) has no {sig} handler, so the kernel dropped the {sig} (PID 1 "
        "gets only the signals it handles) and it was SIGKILLed at the end of the grace "
        f"period. Fix: handle {sig} in the app (uvicorn, gunicorn and hypercorn do), or "
        "put an init that forwards signals (tini, dumb-init) in front"
    )


def pid1_warnings(outcome: Outcome) -> list[str]:
    """PID 1 not modelled, and what a container would make of the process we signalled."""
    plan, done = outcome.plan, outcome.termination
    if plan.pid_namespace:
        return []
    not_modelled = (
        f"PID 1 is not modelled here ({plan.pid1_note}): the app's process gets the stop "
        "signal whatever handlers it has; in a container, as PID 1, it gets only the "
        "signals it handles"
    )
    found = [not_modelled]
    view = done.pid1 if done is not None else None
    if done is not None and view is not None and not view.handles:
        sig = signal_label(done.stop_signal)
        what = f"a shell ({view.name}) without exec" if view.is_shell else view.name
        found.append(
            f"the app's main process is {what} with no {sig} handler: in a container, as "
            f"PID 1, it would ignore {sig} and be SIGKILLed at the end of the grace period"
            + (f". Fix: {_SHELL_FIX}" if view.is_shell else "")
        )
    return found


def service_warnings(outcome: Outcome) -> list[str]:
    """What the Service did with new connections once the pod was deleted."""
    endpoints, origin = outcome.endpoints, outcome.timeline.origin
    if endpoints is None or origin is None:
        return []
    found: list[str] = []
    lag = endpoints.lag
    if endpoints.publish_not_ready:
        found.append(
            "publishNotReadyAddresses: the terminating pod stays a ready endpoint, so "
            f"kube-proxy kept sending it new connections ({endpoints.kept} after the "
            "endpoint update) until it was gone"
        )
    elif endpoints.replicas <= 1:
        rejected = (
            f", and rejected {endpoints.rejected} once it was not (no endpoint)"
            if endpoints.rejected
            else ""
        )
        found.append(
            "one replica: the Service had no other pod, so kube-proxy kept sending new "
            "connections to the terminating pod while it was serving (its readiness "
            f"passed): {endpoints.kept} after the endpoint update{rejected}. Every "
            "deletion of a single replica interrupts the Service: run 2 or more, with a "
            "PodDisruptionBudget"
        )
    early = [f for f in outcome.samples if 0 <= f.at - origin < lag]
    if early and not endpoints.falls_back:
        found.append(
            f"{len(early)} requests failed before the Service stopped sending new connections "
            f"({lag:g}s after the deletion): the app stopped taking them too early. "
            "graceshut keeps serving through GRACESHUT_PROPAGATION_DELAY: make it longer "
            "than this lag"
        )
    return found


def hook_warnings(done: Termination | None) -> list[str]:
    """The kubelet's quiet rewrites of an httpGet hook."""
    result = done.hook_result if done is not None else None
    if result is None:
        return []
    found: list[str] = []
    if result.fell_back_to_http:
        found.append(
            "the https preStop hook was answered by plain HTTP: the kubelet sent it again "
            "over HTTP without its Authorization header (event LifecycleHTTPFallback)"
        )
    if result.redirects:
        found.append(
            f"the preStop hook was redirected {_times(len(result.redirects))}, to "
            f"{result.redirects[-1]} (the kubelet follows them on the same host, 10 "
            "requests at most)"
        )
    return found


def _times(count: int) -> str:
    return "once" if count == 1 else f"{count} times"
