"""From the command line's options and the manifest to a `Plan`.

What to start, where the pod is, what the kubelet runs, what load to put on it.
Explicit options win over the manifest, which wins over the defaults.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import tempfile
from pathlib import Path

from . import _pid1
from ._actions import Action, Exec, Grpc, HttpGet, Sleep, Target, TcpSocket
from ._kubelet import Probe
from ._load import LoadSpec
from ._manifest import ContainerSpec, ManifestError, read_manifest
from ._ready import pod_ip
from ._run import Plan, child_path

DEFAULT_PORT = 8000
DEFAULT_GRACE_PERIOD = 30
DEFAULT_REPLICAS = 2
"""Without a manifest: another pod takes the new connections once this one is deleted."""


class UsageError(ValueError):
    """Options that cannot work together; the message names them."""


def build_plan(args: argparse.Namespace) -> Plan:
    """Resolve the options and the manifest into a `Plan`.

    Raises:
        UsageError: Options that do not fit together.
        ManifestError: The manifest cannot be used.
    """
    if args.container is not None and args.manifest is None:
        raise UsageError("--container needs --manifest")
    if args.prestop_header and args.prestop_http is None:
        raise UsageError("--prestop-header needs --prestop-http")
    spec = read_manifest(args.manifest, args.container) if args.manifest is not None else None
    command = _command(args, spec)
    warnings: list[str] = []
    host = args.pod_ip or pod_ip()
    if host is None:
        host = "127.0.0.1"
        warnings.append(
            "no network address found: the kubelet's part is played on 127.0.0.1 "
            "(an app bound to loopback only is not caught)"
        )
    container_port = _main_port(spec) if spec is not None else None
    port = args.port or container_port or DEFAULT_PORT
    hook_port = container_port or port
    ports = {container_port: port} if container_port is not None else {}
    target = Target(host, ports, spec.port_names if spec is not None else {})
    env = _environment(args, spec, warnings)
    grace = args.grace_period
    if grace is None:
        grace = spec.grace_period if spec is not None else DEFAULT_GRACE_PERIOD
    override, cause = _override(args, grace)
    prestop = _prestop(args, spec, hook_port)
    _check_sleep(prestop, grace, args)
    readiness = _readiness(args, spec, hook_port, warnings)
    liveness = spec.liveness if spec is not None else None
    for action in (prestop, readiness.action, liveness.action if liveness else None):
        if isinstance(action, (HttpGet, TcpSocket)):
            try:
                target.port(action.port)
            except ValueError as exc:
                raise ManifestError(f"{spec.source if spec else 'options'}: {exc}") from None
    _check_grace_setting(env, grace, warnings)
    pid_namespace, pid1_note = _pid_namespace(args.pid_namespace)
    stop_signal = _stop_signal(
        args.stop_signal or (spec.stop_signal if spec else None),
        "--stop-signal" if args.stop_signal else "the manifest's stopSignal",
    )
    replicas = args.replicas or (spec.replicas if spec is not None else None) or DEFAULT_REPLICAS
    volumes: tuple[tuple[str, str], ...] = ()
    scratch = None
    if spec is not None and spec.volumes:  # last: nothing may fail once it exists
        scratch = Path(tempfile.mkdtemp(prefix="graceshut-simulate-"))
        volumes = _map_volumes(spec, scratch, env, warnings)
        command = tuple(_remap(part, volumes) for part in command)
    load = LoadSpec(
        host=host,
        port=port,
        paths=tuple(args.paths or ["/"]),
        rate=args.rate,
        concurrency=args.concurrency,
        keep_alive=not args.no_keep_alive,
        timeout=args.timeout,
        grpc_unary=tuple(getattr(args, "grpc_unary", None) or ()),
        grpc_stream=tuple(getattr(args, "grpc_stream", None) or ()),
    )
    return Plan(
        command=command,
        env=env,
        target=target,
        load=load,
        grace_period=grace,
        grace_override=override,
        override_cause=cause,
        api_deletion=getattr(args, "node_shutdown", None) is None,
        prestop=prestop,
        readiness=readiness,
        liveness=liveness,
        startup=spec.startup if spec is not None else None,
        stop_signal=stop_signal,
        pid_namespace=pid_namespace,
        pid1_note=pid1_note,
        replicas=replicas,
        publish_not_ready=args.publish_not_ready_addresses or bool(spec and spec.publish_not_ready),
        volumes=volumes,
        scratch=scratch,
        warmup=args.warmup,
        endpoint_lag=args.endpoint_lag,
        ready_timeout=args.ready_timeout,
        app_log=args.app_log,
        source=spec.source if spec is not None else None,
        warnings=tuple(warnings),
    )


def _override(args: argparse.Namespace, grace: float) -> tuple[float | None, str | None]:
    """The grace period the kubelet is given instead of the manifest's, and by whom.

    Graceful node shutdown, as the kubelet's ``nodeshutdown`` manager computes it: a
    non-critical pod's group gets ``shutdownGracePeriod - shutdownGracePeriodCriticalPods``
    and the pod its own ``terminationGracePeriodSeconds`` when that is not longer.
    """
    given = getattr(args, "grace_period_override", None)
    if given is not None:
        return float(given), (
            f"deleted with --grace-period={given} (terminationGracePeriodSeconds: {grace:g}s)"
        )
    node = getattr(args, "node_shutdown", None)
    if node is None:
        return None, None
    total, critical = node
    group = total - critical
    if grace <= group:
        return float(grace), (
            f"node shutdown ({total}s, {critical}s for critical pods): the pod's own "
            f"{grace:g}s is not longer than the {group}s of its group"
        )
    return float(group), (
        f"node shutdown: shutdownGracePeriod {total}s - shutdownGracePeriodCriticalPods "
        f"{critical}s = {group}s for non-critical pods (terminationGracePeriodSeconds: {grace:g}s)"
    )


def _command(args: argparse.Namespace, spec: ContainerSpec | None) -> tuple[str, ...]:
    command = tuple(args.app_command[1:] if args.app_command[:1] == ["--"] else args.app_command)
    if not command and spec is not None:
        command = spec.command
    if not command:
        raise UsageError(
            "the command that starts the app is missing: graceshut simulate "
            "[options] -- COMMAND... (or a manifest whose container has a command)"
        )
    return command


def _main_port(spec: ContainerSpec) -> int | None:
    """The container's port that the load, and ``--port``, are about.

    The first declared ``containerPort``; without any, the port of the readiness probe
    or of the preStop hook, when given as a number.
    """
    if spec.ports:
        return spec.ports[0]
    for probe in (spec.readiness, spec.liveness):
        action = probe.action if probe is not None else None
        if isinstance(action, (HttpGet, TcpSocket, Grpc)) and isinstance(action.port, int):
            return action.port
    if isinstance(spec.prestop, HttpGet) and isinstance(spec.prestop.port, int):
        return spec.prestop.port
    return None


def _environment(
    args: argparse.Namespace, spec: ContainerSpec | None, warnings: list[str]
) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = child_path(os.environ)
    given = dict(args.env)
    if spec is not None:
        env.update(spec.env)
        missing = [name for name in spec.env_from_elsewhere if name not in given]
        if missing:
            warnings.append(
                f"set with valueFrom in the manifest, not known here: {', '.join(missing)} "
                "(give them with --env NAME=VALUE)"
            )
        if spec.env_sources:
            warnings.append(
                f"envFrom is not read here ({', '.join(spec.env_sources)}): give what the "
                "app needs from it with --env NAME=VALUE"
            )
    env.update(given)
    return env


def _prestop(args: argparse.Namespace, spec: ContainerSpec | None, port: int) -> Action | None:
    if args.prestop_http is not None:
        return HttpGet(path=args.prestop_http, port=port, headers=tuple(args.prestop_header))
    if args.prestop_exec is not None:
        try:
            command = tuple(shlex.split(args.prestop_exec))
        except ValueError as exc:
            raise UsageError(f"--prestop-exec: {exc}") from None
        if not command:
            raise UsageError("--prestop-exec is empty")
        return Exec(command)
    if args.prestop_sleep is not None:
        return Sleep(args.prestop_sleep)
    if args.no_prestop or spec is None:
        return None
    return spec.prestop


def _readiness(
    args: argparse.Namespace, spec: ContainerSpec | None, port: int, warnings: list[str]
) -> Probe:
    if args.ready_path is not None:
        return Probe(HttpGet(path=args.ready_path, port=port))
    if spec is None:
        if getattr(args, "grpc_unary", None) or getattr(args, "grpc_stream", None):
            return Probe(Grpc(port=port))  # the server as a whole: the empty service name
        return Probe(HttpGet(path="/readyz", port=port))
    if spec.readiness is not None:
        return spec.readiness
    warnings.append(
        "the container has no readinessProbe: Kubernetes sends it traffic as soon as it "
        "starts, and load balancers that probe it cannot see it leave; waiting for its port"
    )
    return Probe(TcpSocket(port=port))


def _check_grace_setting(env: dict[str, str], grace: float, warnings: list[str]) -> None:
    raw = env.get("GRACESHUT_GRACE_PERIOD")
    try:
        value = float(raw) if raw is not None else None
    except ValueError:
        return  # graceshut itself refuses to start with it, and says why
    if value is not None and value != grace:
        warnings.append(
            f"the app's GRACESHUT_GRACE_PERIOD={raw} is not the grace period ({grace:g}s): "
            "graceshut plans its deadline on its own value; set both from one place"
        )


def _check_sleep(prestop: Action | None, grace: float, args: argparse.Namespace) -> None:
    if isinstance(prestop, Sleep) and prestop.seconds > grace:
        where = "--prestop-sleep" if args.prestop_sleep is not None else "the manifest's sleep"
        raise UsageError(
            f"{where}: {prestop.seconds:g}s is longer than the grace period ({grace:g}s): "
            "the API server refuses a sleep action longer than terminationGracePeriodSeconds"
        )


def _pid_namespace(mode: str) -> tuple[bool, str | None]:
    """Whether to run the app as PID 1 of its own PID namespace; else why not."""
    if mode == "off":
        return False, "turned off with --pid-namespace off"
    why = _pid1.available()
    if why is None:
        return True, None
    if mode == "on":
        raise UsageError(f"--pid-namespace on: this machine allows no PID namespace: {why}")
    return False, why


def _stop_signal(name: str | None, source: str) -> int:
    if name is None:
        return signal.SIGTERM
    text = name.strip().upper()
    try:
        return int(
            signal.Signals(int(text))
            if text.isdigit()
            else signal.Signals[text if text.startswith("SIG") else f"SIG{text}"]
        )
    except (KeyError, ValueError):
        raise UsageError(f"{source} {name!r} is not a signal name (SIGTERM, SIGQUIT...)") from None


def _map_volumes(
    spec: ContainerSpec, scratch: Path, env: dict[str, str], warnings: list[str]
) -> tuple[tuple[str, str], ...]:
    """A fresh directory for each of the container's mounts, as an emptyDir starts empty.

    The values of the environment (and the command) that name a path under a mount
    are rewritten to the directory that stands for it.
    """
    volumes: list[tuple[str, str]] = []
    for index, (name, kind, mount) in enumerate(spec.volumes):
        local = scratch / f"{index}-{name}"
        local.mkdir()
        volumes.append((mount, str(local)))
        if kind != "emptyDir":
            warnings.append(
                f"volume {name} ({kind}) is mounted at {mount}: an empty directory stands "
                "for it here"
            )
    mapped = tuple(volumes)
    for key, value in env.items():
        env[key] = _remap(value, mapped)
    return mapped


def _remap(value: str, volumes: tuple[tuple[str, str], ...]) -> str:
    for mount, local in volumes:
        base = mount.rstrip("/") or "/"
        if value == base or value.startswith(base.rstrip("/") + "/"):
            return local + value[len(base) :]
    return value
