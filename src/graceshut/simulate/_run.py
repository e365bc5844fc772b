"""One simulated termination: start, wait for readiness, load, terminate, collect."""

from __future__ import annotations

import dataclasses
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

from .._core._budget import ENV_PROGRESS_FILE
from ._actions import Action, Exec, Target
from ._apiserver import ApiServer, TlsError
from ._container import Container, Output
from ._kubelet import Probe, ProbeWatcher, Termination, describe_exit, terminate
from ._load import Failure, LoadGenerator, LoadSpec
from ._ready import wait_ready
from ._service import Endpoints
from ._steps import read_progress
from ._timeline import Timeline


@dataclasses.dataclass(frozen=True)
class Plan:
    """Everything a run needs, resolved from the options and the manifest."""

    command: tuple[str, ...]
    env: Mapping[str, str]
    target: Target
    load: LoadSpec
    grace_period: float
    """``terminationGracePeriodSeconds``: the manifest's (or ``--grace-period``)."""
    prestop: Action | None
    readiness: Probe
    liveness: Probe | None = None
    startup: Probe | None = None
    stop_signal: int = signal.SIGTERM
    """SIGTERM, or the image's ``STOPSIGNAL`` / the container's ``lifecycle.stopSignal``."""
    pid_namespace: bool = False
    """Run the app as PID 1 of a PID namespace of its own."""
    pid1_note: str | None = None
    """Why PID 1 is not modelled, when it is not."""
    replicas: int = 2
    publish_not_ready: bool = False
    volumes: tuple[tuple[str, str], ...] = ()
    """The manifest's mount paths and the local directories that stand for them."""
    scratch: Path | None = None
    """The temporary directory that holds those, removed after the run."""
    warmup: float = 2.0
    endpoint_lag: float = 2.0
    ready_timeout: float = 60.0
    app_log: Path | None = None
    source: str | None = None
    """The manifest and container the settings come from, if any."""
    warnings: tuple[str, ...] = ()
    grace_override: float | None = None
    """The grace period the deletion gives instead (``--grace-period-override``,
    ``--node-shutdown``), or None."""
    override_cause: str | None = None
    """Who gives the shorter grace period, in words."""
    api_deletion: bool = True
    """The deletion goes through the API server (the pod object gets its
    ``deletionTimestamp``), not the kubelet's own kill (node shutdown)."""

    @property
    def kill_grace(self) -> float:
        """The grace period the kubelet uses for this termination."""
        return self.grace_period if self.grace_override is None else self.grace_override


@dataclasses.dataclass
class Outcome:
    """What a run saw; `graceshut.simulate._report` turns it into a verdict."""

    plan: Plan
    timeline: Timeline
    requests: dict[str, Any] = dataclasses.field(default_factory=dict)
    samples: list[Failure] = dataclasses.field(default_factory=list)
    termination: Termination | None = None
    exit_status: int | None = None
    error: str | None = None
    liveness_failures: list[tuple[float, str]] = dataclasses.field(default_factory=list)
    app_output: list[str] = dataclasses.field(default_factory=list)
    endpoints: Endpoints | None = None
    load_series: dict[int, Any] = dataclasses.field(default_factory=dict)
    """`LoadStats.series`: outcomes per tenth of a second."""
    deleted_wall: float | None = None
    """`time.time` at the deletion, to place the app's own phases on the timeline."""
    notes: list[str] = dataclasses.field(default_factory=list)
    """Warnings of the run itself (a file that could not be written), for the report."""
    app_progress: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    """The app's notes on its steps as they began and ended (``GRACESHUT_PROGRESS_FILE``)."""
    api: str | None = None
    """How the pod object was served to the app, or why it was not."""


class Progress:
    """A status line on a terminal, redrawn a few times a second."""

    def __init__(self, stream: IO[str]) -> None:
        self.stage = "starting the app"
        self.load: LoadGenerator | None = None
        self.timeline: Timeline | None = None
        self._stream = stream
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._draw, name="progress", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop drawing and clear the line."""
        self._stop.set()
        self._thread.join(1)
        self._stream.write("\r\x1b[K")
        self._stream.flush()

    def _draw(self) -> None:
        while not self._stop.wait(0.2):
            line = f"graceshut simulate: {self.stage}"
            timeline = self.timeline
            if timeline is not None and timeline.origin is not None:
                now = time.monotonic()
                last = [e.what for e in timeline.events if e.at <= now][-1:]
                line += f" ({', '.join(last)})  t={timeline.relative(now):+.1f}s"
            if self.load is not None:
                stats = self.load.stats.snapshot()
                line += (
                    f"  sent {stats['sent']}  ok {stats['ok']}  failed {stats['failed']}"
                    f"  rerouted {stats['rerouted']}"
                )
            width = shutil.get_terminal_size().columns - 1  # a wrapped line cannot be redrawn
            self._stream.write(f"\r\x1b[K{line[:width]}")
            self._stream.flush()


def simulate(plan: Plan, progress: Progress | None = None) -> Outcome:
    """Run the whole simulation once.

    Raises:
        OSError: The command cannot be started (not found, not executable).
    """
    run = _Run(plan, progress)
    try:
        run.play()
    finally:
        run.close()
    return run.outcome


class _Run:
    def __init__(self, plan: Plan, progress: Progress | None) -> None:
        self.scratch = Path(tempfile.mkdtemp(prefix="graceshut-simulate-run-"))
        self.progress_file = self.scratch / "progress.jsonl"
        self.api: ApiServer | None = None
        served = "not served"
        try:
            self.api = ApiServer(grace_period=plan.grace_period)
            served = f"served on 127.0.0.1:{self.api.port} as pod {self.api.name}"
        except (TlsError, OSError) as exc:
            served = f"not served: {exc}"
        env = {**plan.env, ENV_PROGRESS_FILE: str(self.progress_file)}
        if self.api is not None:
            env.update(self.api.environment())
        self.plan = plan = dataclasses.replace(plan, env=env)
        self.progress = progress
        self.timeline = timeline = Timeline()
        self.outcome = Outcome(plan, timeline, api=served)
        if progress is not None:
            progress.timeline = timeline

        def exited(status: int, at: float) -> None:
            timeline.add("app exited", describe_exit(status), at=at)

        self.container = Container.start(
            plan.command,
            plan.env,
            output=subprocess.PIPE,
            on_exit=exited,
            pid_namespace=plan.pid_namespace,
        )
        assert self.container.process.stdout is not None  # noqa: S101 - asked for a pipe
        self.output = Output(self.container.process.stdout, plan.app_log)
        pid = self.container.pid
        where = (
            f"PID 1 of its PID namespace (PID {pid} here)" if self.container.pid1 else f"PID {pid}"
        )
        timeline.add("app started", f"{where}: {shlex.join(plan.command)}")
        self.load: LoadGenerator | None = None
        self.watchers: list[ProbeWatcher] = []

    def play(self) -> None:
        plan, timeline, outcome, container = self.plan, self.timeline, self.outcome, self.container
        self._stage("waiting for readiness")
        outcome.error = wait_ready(plan, container, timeline)
        if outcome.error is not None:
            return
        readiness = ProbeWatcher(
            "readiness",
            plan.readiness,
            plan.target,
            plan.env,
            timeline,
            interval=_interval(plan.readiness),
        )
        endpoints = Endpoints(
            plan.endpoint_lag,
            timeline,
            replicas=plan.replicas,
            publish_not_ready=plan.publish_not_ready,
            serving=readiness.passing_at,
        )
        outcome.endpoints = endpoints
        self.load = _load_generator(plan.load, endpoints.route)
        self.load.start()
        if self.progress is not None:
            self.progress.load = self.load
        timeline.add("load starts", _describe_load(plan.load))
        self.watchers.append(readiness)
        # The kubelet runs no startup probe once it passed (readiness waited for it here).
        if plan.liveness is not None:
            watcher = ProbeWatcher(
                "liveness",
                plan.liveness,
                plan.target,
                plan.env,
                timeline,
                interval=_interval(plan.liveness),
            )
            self.watchers.append(watcher)
        for watcher in self.watchers:
            watcher.start()
        self._stage("load, before the termination")
        if container.wait(plan.warmup) is not None:
            outcome.error = "the app exited under load, before the termination"
            return
        self._stage("terminating")
        outcome.termination = terminate(
            container,
            hook=plan.prestop,
            grace_period=plan.kill_grace,
            target=plan.target,
            env=plan.env,
            timeline=timeline,
            on_deleted=self._deleted,
            before_hook=self._stop_liveness,
            stop_signal=plan.stop_signal,
            cause=plan.override_cause,
        )
        outcome.exit_status = outcome.termination.exit_status
        # Until the Service has dropped the pod, new connections still come: count them.
        if endpoints.removed_at is not None:
            time.sleep(max(0.0, endpoints.removed_at - time.monotonic()))
        timeline.add("load stops")

    def close(self) -> None:
        outcome = self.outcome
        for watcher in self.watchers:
            watcher.stop()
        if outcome.termination is None and not self.container.running():
            outcome.exit_status = self.container.exit_status  # it ended on its own
        if self.container.running():  # the run was cut short: do not leave the app behind
            self.container.kill()
            self.container.wait(10)
        if self.load is not None:
            self.load.stop()
            outcome.requests = self.load.stats.snapshot()
            outcome.samples = list(self.load.stats.samples)
            outcome.load_series = dict(self.load.stats.series)
        outcome.liveness_failures = [
            f for w in self.watchers if w.name == "liveness" for f in w.failures
        ]
        outcome.app_output = self.output.join(2)
        if self.output.error is not None:
            outcome.notes.append(self.output.error)
        outcome.app_progress = read_progress(self.progress_file)
        if self.api is not None:
            self.api.close()
        shutil.rmtree(self.scratch, ignore_errors=True)

    def _deleted(self, at: float) -> None:
        self.outcome.deleted_wall = wall = time.time() - (time.monotonic() - at)
        if self.api is not None and self.plan.api_deletion:
            # kubectl and the API server make 0 (without --force) 1 s, as the kubelet does.
            stamp = self.api.delete(max(1.0, self.plan.kill_grace), at=wall)
            self.timeline.add("deletionTimestamp set", f"{stamp} on the pod object", at=at)
        if self.outcome.endpoints is not None:
            self.outcome.endpoints.deleted(at)

    def _stop_liveness(self) -> None:
        """The kubelet stops the liveness and startup probes before it runs the hook."""
        stopped = [w for w in self.watchers if w.name == "liveness"]
        for watcher in stopped:
            watcher.stop(wait=False)
        if stopped:
            self.timeline.add("liveness probe stopped", "readiness goes on")

    def _stage(self, stage: str) -> None:
        if self.progress is not None:
            self.progress.stage = stage


def _interval(probe: Probe) -> float:
    # An exec probe starts a process each time: not ten times a second.
    return 0.5 if isinstance(probe.action, Exec) else 0.1


def _load_generator(spec: LoadSpec, route: Callable[[], str]) -> LoadGenerator:
    if not (spec.grpc_unary or spec.grpc_stream):
        return LoadGenerator(spec, route=route)
    from ._grpc import GrpcLoad  # noqa: PLC0415 - needs graceshut[grpc]

    return GrpcLoad(spec, route=route)


def _describe_load(spec: LoadSpec) -> str:
    if spec.grpc_unary or spec.grpc_stream:
        rate = f"{spec.rate:g} calls/s" if spec.rate > 0 else "as fast as possible"
        parts = [f"{rate} from {spec.concurrency} gRPC channels on {', '.join(spec.grpc_unary)}"]
        parts = parts if spec.grpc_unary else []
        parts += [f"a stream on {method}" for method in spec.grpc_stream]
        return "; ".join(parts)
    rate = f"{spec.rate:g} req/s" if spec.rate > 0 else "as fast as possible"
    kind = "keep-alive clients" if spec.keep_alive else "clients (no keep-alive)"
    return f"{rate} from {spec.concurrency} {kind} on {', '.join(spec.paths)}"


def child_path(environ: Mapping[str, str]) -> str:
    """PATH for the app and exec hooks: this Python's scripts first.

    As in an image where the app, its server and graceshut are installed together.
    """
    scripts = str(Path(sys.executable).parent)
    rest = environ.get("PATH", "")
    return scripts if not rest else f"{scripts}{os.pathsep}{rest}"
