"""The kubelet: probe the container, and terminate it as Kubernetes does.

The kubelet's ``killContainer``, step by step:

1. the grace period (whole seconds; 0 is 1 to the kubelet, which "always supplies a
   grace period of 1" unless the deletion is forced) starts; the liveness and startup
   probes stop (readiness goes on), and the preStop hook runs, when there is one; the
   kubelet waits for it at most the grace period;
2. the stop signal (SIGTERM, or the image's ``STOPSIGNAL``) goes to the container's
   main process (PID 1) when the hook returns, or when the grace period ran out with
   the hook still running; PID 1 gets it only if it has a handler for it;
3. the container runtime sends SIGKILL to everything in the container
   ``grace period - whole seconds the hook took`` after the stop signal, and never
   sooner than 2 s after it: that is the container's minimum time after the signal,
   not an extension of the hook, which gets none.
"""

from __future__ import annotations

import dataclasses
import math
import signal
import threading
import time
from collections.abc import Callable, Mapping

from . import _actions
from ._actions import Action, Target
from ._container import Container
from ._pid1 import SignalView, read_signal_view
from ._timeline import Timeline

#: The kubelet's ``minimumGracePeriodInSeconds``: SIGKILL never comes sooner after SIGTERM.
MINIMUM_GRACE_PERIOD = 2.0


def stop_timeout(grace_period: float, hook_seconds: float | None) -> float:
    """Seconds from SIGTERM to SIGKILL, as the kubelet computes them.

    Args:
        grace_period: ``terminationGracePeriodSeconds``.
        hook_seconds: How long the preStop hook ran (None: no hook); a hook that
            overran counts as the whole grace period.
    """
    remaining = grace_period
    if hook_seconds is not None:
        remaining -= math.floor(min(hook_seconds, grace_period))
    return max(MINIMUM_GRACE_PERIOD, remaining)


def describe_exit(status: int) -> str:
    """``status 0``, ``status 1``, or ``killed by SIGKILL (status 137)`` for a return code."""
    name = signal_name(status)
    if name is not None:
        return f"killed by {name} (status {128 - status})"
    return f"status {status}"


def signal_name(status: int) -> str | None:
    """The signal that ended a process (a negative return code), else None."""
    if status >= 0:
        return None
    try:
        return signal.Signals(-status).name
    except ValueError:
        return f"signal {-status}"


@dataclasses.dataclass
class Termination:
    """What the kubelet did and saw, times on the monotonic clock."""

    deleted_at: float
    grace_period: float
    """The grace period the kubelet used: whole seconds, at least 1."""
    stop_signal: int = signal.SIGTERM
    hook: str | None = None
    hook_result: _actions.Result | None = None
    hook_overran: bool = False
    sigterm_at: float | None = None
    stop_timeout: float | None = None
    sigkill_at: float | None = None
    exit_status: int | None = None
    pid1: SignalView | None = None
    """How the main process stood towards the stop signal when it was sent."""
    pid_namespace: bool = False
    """Whether the main process was PID 1 of a PID namespace of its own."""


def effective_grace_period(grace_period: float) -> int:
    """The grace period the kubelet uses: 0 (a deletion not forced) is 1 s."""
    return max(1, math.floor(grace_period))


def terminate(
    container: Container,
    *,
    hook: Action | None,
    grace_period: float,
    target: Target,
    env: Mapping[str, str],
    timeline: Timeline,
    on_deleted: Callable[[float], object] | None = None,
    before_hook: Callable[[], object] | None = None,
    stop_signal: int = signal.SIGTERM,
    cause: str | None = None,
) -> Termination:
    """Play the kubelet's part from the pod's deletion to the container's end.

    *on_deleted* is called with the moment of deletion (the Service starts dropping the
    pod from its endpoints then, at the same time as the hook starts); *before_hook*
    when the kubelet stops the liveness and startup probes, just before the hook.
    *cause* says who gave a grace period other than the manifest's.
    """
    deleted = time.monotonic()
    timeline.origin = deleted
    grace = effective_grace_period(grace_period)
    timeline.add("pod deleted", _describe_grace(grace_period, grace, cause), at=deleted)
    if on_deleted is not None:
        on_deleted(deleted)
    done = Termination(
        deleted_at=deleted,
        grace_period=grace,
        stop_signal=stop_signal,
        pid_namespace=container.pid1 is not None,
    )
    if before_hook is not None:
        before_hook()
    hook_seconds: float | None = None
    runner: _HookRunner | None = None
    if hook is not None:
        done.hook = hook.describe(target)
        timeline.add("preStop hook starts", done.hook)
        runner = _HookRunner(hook, target, env, timeout=grace)
        if runner.finished.wait(grace):
            result = runner.result
            assert result is not None  # noqa: S101 - set before finished
            done.hook_result, hook_seconds = result, result.duration
            what = "preStop hook returned" if result.ok else "preStop hook failed"
            timeline.add(what, f"{result.summary()} after {result.duration:.2f}s")
        else:
            done.hook_overran, hook_seconds = True, grace
            timeline.add(
                "preStop hook still running when the grace period ran out",
                f"{signal_label(stop_signal)} now; SIGKILL {MINIMUM_GRACE_PERIOD:g}s later "
                "(the container's minimum after the stop signal)",
            )
    done.stop_timeout = stop_timeout(grace, hook_seconds)
    if container.running():
        done.pid1 = read_signal_view(container.pid, stop_signal)
        container.send(stop_signal)
        done.sigterm_at = time.monotonic()
        timeline.add(
            signal_label(stop_signal),
            f"to {_describe_main(container, done.pid1)}; SIGKILL in {done.stop_timeout:g}s",
        )
        done.exit_status = container.wait(done.stop_timeout)
        if done.exit_status is None:
            container.kill()
            done.sigkill_at = time.monotonic()
            timeline.add("SIGKILL", "the grace period is over")
            done.exit_status = container.wait(30)
    else:
        timeline.add(f"no {signal_label(stop_signal)}", "the app had already exited")
        done.exit_status = container.exit_status
    if runner is not None:
        runner.cancel.set()  # an exec hook still running dies with the container
        runner.finished.wait(5)
        if done.hook_result is None:
            done.hook_result = runner.result
    return done


def _describe_grace(asked: float, grace: int, cause: str | None) -> str:
    what = f"grace period {grace}s from now"
    if grace != asked:
        what += f" (the kubelet makes {asked:g}s {grace}s: it never uses 0)"
    return what if cause is None else f"{what}: {cause}"


def signal_label(signum: int) -> str:
    """``SIGTERM``, ``SIGQUIT``..."""
    return signal.Signals(signum).name


def _describe_main(container: Container, view: SignalView | None) -> str:
    name = f" ({view.name})" if view is not None else ""
    if container.pid1 is not None:
        return f"PID 1{name} of the container (PID {container.pid} here)"
    return f"PID {container.pid}{name}"


class _HookRunner:
    def __init__(
        self, hook: Action, target: Target, env: Mapping[str, str], timeout: float
    ) -> None:
        self.result: _actions.Result | None = None
        self.finished = threading.Event()
        self.cancel = threading.Event()
        args = (hook, target, env, timeout)
        threading.Thread(target=self._run, args=args, name="prestop", daemon=True).start()

    def _run(self, hook: Action, target: Target, env: Mapping[str, str], timeout: float) -> None:
        try:
            self.result = _actions.run(hook, target, env, timeout, cancel=self.cancel)
        finally:
            self.finished.set()


@dataclasses.dataclass(frozen=True)
class Probe:
    """A probe from the manifest (or the command line): what to run, and its timeout."""

    action: Action
    timeout: float = 1.0
    period: float = 10.0

    def check(self, target: Target, env: Mapping[str, str]) -> _actions.Result:
        """Run the probe once."""
        return _actions.run(self.action, target, env, self.timeout, probe=True)


class ProbeWatcher:
    """Polls a probe often and puts each change of its answer on the timeline.

    ``changes`` keeps every change (moment, passing), for the Service's view of the pod.

    The kubelet probes every ``periodSeconds``; polling faster only makes the moment of
    the change precise, it does not change what the app is asked.
    """

    def __init__(
        self,
        name: str,
        probe: Probe,
        target: Target,
        env: Mapping[str, str],
        timeline: Timeline,
        *,
        interval: float = 0.1,
    ) -> None:
        self.name = name
        self.failures: list[tuple[float, str]] = []
        self.changes: list[tuple[float, bool]] = []
        self._probe, self._target, self._env = probe, target, env
        self._timeline = timeline
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"{name}-watch", daemon=True)

    def start(self) -> None:
        """Start polling."""
        self._thread.start()

    def stop(self, *, wait: bool = True) -> None:
        """Stop polling (without *wait*, a probe under way ends unseen)."""
        self._stop.set()
        if wait:
            self._thread.join(self._probe.timeout + 1)

    def passing_at(self, at: float) -> bool:
        """Whether the probe passed at *at* (it passed when the run got ready)."""
        passing = True
        for moment, state in list(self.changes):
            if moment > at:
                break
            passing = state
        return passing

    def _run(self) -> None:
        passing = True
        while not self._stop.wait(self._interval):
            result = self._probe.check(self._target, self._env)
            if self._stop.is_set():
                return
            if result.ok != passing:
                passing = result.ok
                self.changes.append((time.monotonic(), passing))
                if passing:
                    self._timeline.add(f"{self.name} probe passes again", result.summary())
                else:
                    at = self._timeline.add(f"{self.name} probe fails", result.summary()).at
                    self.failures.append((at, result.summary()))
