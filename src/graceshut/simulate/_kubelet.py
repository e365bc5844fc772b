"""The kubelet: probe the container, and terminate it as Kubernetes does.

The kubelet's ``killContainer``, step by step:

1. the grace period starts, and the preStop hook runs (when there is one and the grace
   period is not 0); the kubelet waits for it at most the grace period;
2. SIGTERM goes to the container's main process (PID 1) when the hook returns, or when
   the grace period ran out with the hook still running;
3. the container runtime sends SIGKILL to everything in the container after
   ``grace period - whole seconds the hook took``, and never sooner than 2 s after
   SIGTERM: that floor is the extension an overrunning hook gets.
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
    hook: str | None = None
    hook_result: _actions.Result | None = None
    hook_overran: bool = False
    sigterm_at: float | None = None
    stop_timeout: float | None = None
    sigkill_at: float | None = None
    exit_status: int | None = None


def terminate(
    container: Container,
    *,
    hook: Action | None,
    grace_period: float,
    target: Target,
    env: Mapping[str, str],
    timeline: Timeline,
    on_deleted: Callable[[float], object] | None = None,
) -> Termination:
    """Play the kubelet's part from the pod's deletion to the container's end.

    *on_deleted* is called with the moment of deletion (the Service starts dropping the
    pod from its endpoints then, at the same time as the hook starts).
    """
    deleted = time.monotonic()
    timeline.origin = deleted
    timeline.add("pod deleted", f"grace period {grace_period:g}s from now", at=deleted)
    if on_deleted is not None:
        on_deleted(deleted)
    done = Termination(deleted_at=deleted, grace_period=grace_period)
    hook_seconds: float | None = None
    runner: _HookRunner | None = None
    if hook is not None and grace_period > 0:
        done.hook = hook.describe(target)
        timeline.add("preStop hook starts", done.hook)
        runner = _HookRunner(hook, target, env, timeout=grace_period)
        if runner.finished.wait(grace_period):
            result = runner.result
            assert result is not None  # noqa: S101 - set before finished
            done.hook_result, hook_seconds = result, result.duration
            what = "preStop hook returned" if result.ok else "preStop hook failed"
            timeline.add(what, f"{result.summary()} after {result.duration:.2f}s")
        else:
            done.hook_overran, hook_seconds = True, grace_period
            timeline.add(
                "preStop hook still running when the grace period ran out",
                f"SIGTERM now; SIGKILL {MINIMUM_GRACE_PERIOD:g}s later (the extension)",
            )
    elif hook is not None:
        timeline.add("preStop hook skipped", "the grace period is 0")
    done.stop_timeout = stop_timeout(grace_period, hook_seconds)
    if container.running():
        container.send(signal.SIGTERM)
        done.sigterm_at = time.monotonic()
        timeline.add("SIGTERM", f"to PID {container.pid}; SIGKILL in {done.stop_timeout:g}s")
        done.exit_status = container.wait(done.stop_timeout)
        if done.exit_status is None:
            container.kill()
            done.sigkill_at = time.monotonic()
            timeline.add("SIGKILL", "the grace period is over")
            done.exit_status = container.wait(30)
    else:
        timeline.add("no SIGTERM", "the app had already exited")
        done.exit_status = container.exit_status
    if runner is not None:
        runner.cancel.set()  # an exec hook still running dies with the container
        runner.finished.wait(5)
        if done.hook_result is None:
            done.hook_result = runner.result
    return done


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
        self._probe, self._target, self._env = probe, target, env
        self._timeline = timeline
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"{name}-watch", daemon=True)

    def start(self) -> None:
        """Start polling."""
        self._thread.start()

    def stop(self) -> None:
        """Stop polling."""
        self._stop.set()
        self._thread.join(self._probe.timeout + 1)

    def _run(self) -> None:
        passing = True
        while not self._stop.wait(self._interval):
            result = self._probe.check(self._target, self._env)
            if self._stop.is_set():
                return
            if result.ok != passing:
                passing = result.ok
                if passing:
                    self._timeline.add(f"{self.name} probe passes again", result.summary())
                else:
                    at = self._timeline.add(f"{self.name} probe fails", result.summary()).at
                    self.failures.append((at, result.summary()))
