"""Read the termination settings of one container from a pod or workload manifest.

A manifest is a YAML file of one or more documents (PyYAML, the ``graceshut[simulate]``
extra) or JSON (``kubectl get deployment app -o json``: no extra needed). Any document
with a pod template counts (Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, Job,
CronJob, PodTemplate, or a List of them); the others (Service, PodDisruptionBudget...)
are skipped.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
from pathlib import Path
from typing import Any

from ._actions import Action, Exec, HttpGet, Sleep, TcpSocket
from ._kubelet import Probe

DEFAULT_GRACE_PERIOD = 30.0


class ManifestError(ValueError):
    """The manifest cannot be read, or does not say what the simulation needs."""


@dataclasses.dataclass(frozen=True)
class ContainerSpec:
    """What the kubelet knows about one container."""

    source: str
    """``FILE: Kind/name, container NAME``."""
    grace_period: float
    prestop: Action | None
    readiness: Probe | None
    liveness: Probe | None
    env: dict[str, str]
    env_from_elsewhere: tuple[str, ...]
    """Variables set with ``valueFrom`` (Secrets, the downward API): not known here."""
    env_sources: tuple[str, ...]
    """``envFrom`` ConfigMaps and Secrets: not known here either."""
    ports: tuple[int, ...]
    port_names: dict[str, int]
    command: tuple[str, ...]


def read_manifest(path: Path, container: str | None) -> ContainerSpec:
    """Read *path* and return the settings of *container* (may be None when only one).

    Raises:
        ManifestError: Unreadable, no workload, no such container, or an ambiguous choice.
    """
    documents = _documents(path)
    pods = [(label, spec) for doc in documents for label, spec in _pod_specs(doc)]
    if not pods:
        raise ManifestError(
            f"{path}: no Pod or workload (Deployment, StatefulSet, DaemonSet, Job...) found"
        )
    found = [
        (label, pod, c)
        for label, pod in pods
        for c in _list(pod.get("containers"), f"{label}: spec.containers")
        if container is None or (isinstance(c, dict) and c.get("name") == container)
    ]
    names = ", ".join(
        str(c.get("name"))
        for _, p in pods
        for c in p.get("containers") or ()
        if isinstance(c, dict)
    )
    if not found:
        raise ManifestError(f"{path}: no container named {container!r} (containers: {names})")
    if len(found) > 1:
        if container is None:
            raise ManifestError(
                f"{path}: several containers ({names}): choose one with --container"
            )
        where = ", ".join(label for label, _, _ in found)
        raise ManifestError(f"{path}: several workloads have a container {container!r}: {where}")
    label, pod, spec = found[0]
    if not isinstance(spec, dict):
        raise ManifestError(f"{path}: {label}: a container is not a mapping")
    return _container(f"{path}: {label}, container {spec.get('name')}", pod, spec)


def _documents(path: Path) -> list[Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ManifestError(f"cannot read {path}: {exc.strerror}") from None
    if text.lstrip().startswith(("{", "[")):
        try:
            loaded = json.loads(text)
        except ValueError as exc:
            raise ManifestError(f"{path}: not valid JSON: {exc}") from None
        return loaded if isinstance(loaded, list) else [loaded]
    try:
        yaml: Any = importlib.import_module("yaml")
    except ImportError:
        raise ManifestError(
            f"{path}: reading YAML needs PyYAML: pip install 'graceshut[simulate]' "
            "(or give a JSON manifest: kubectl get deployment NAME -o json)"
        ) from None
    try:
        return [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as exc:
        raise ManifestError(f"{path}: not valid YAML: {exc}") from None


_TEMPLATE_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "ReplicationController"}


def _pod_specs(doc: Any) -> list[tuple[str, dict[str, Any]]]:
    if not isinstance(doc, dict):
        return []
    kind = doc.get("kind")
    if kind == "List" or (kind is None and isinstance(doc.get("items"), list)):
        return [found for item in doc.get("items") or () for found in _pod_specs(item)]
    label = f"{kind}/{(doc.get('metadata') or {}).get('name', '?')}"
    path: tuple[str, ...]
    if kind == "Pod":
        path = ("spec",)
    elif kind in _TEMPLATE_KINDS or kind == "Job":
        path = ("spec", "template", "spec")
    elif kind == "CronJob":
        path = ("spec", "jobTemplate", "spec", "template", "spec")
    elif kind == "PodTemplate":
        path = ("template", "spec")
    else:
        return []
    node: Any = doc
    for key in path:
        node = node.get(key) if isinstance(node, dict) else None
    if not isinstance(node, dict):
        raise ManifestError(f"{label}: no {'.'.join(path)}")
    return [(label, node)]


def _container(source: str, pod: dict[str, Any], spec: dict[str, Any]) -> ContainerSpec:
    grace = pod.get("terminationGracePeriodSeconds", DEFAULT_GRACE_PERIOD)
    grace = _number(grace, f"{source}: terminationGracePeriodSeconds")
    ports: list[int] = []
    names: dict[str, int] = {}
    for entry in _list(spec.get("ports"), f"{source}: ports"):
        number = int(_number(_get(entry, "containerPort", source), f"{source}: containerPort"))
        ports.append(number)
        if isinstance(entry, dict) and entry.get("name"):
            names[str(entry["name"])] = number
    env: dict[str, str] = {}
    elsewhere: list[str] = []
    for entry in _list(spec.get("env"), f"{source}: env"):
        name = str(_get(entry, "name", f"{source}: env"))
        if "valueFrom" in entry:
            elsewhere.append(name)
        else:
            env[name] = str(entry.get("value", ""))
    sources = [
        f"{kind} {ref.get('name')}"
        for entry in _list(spec.get("envFrom"), f"{source}: envFrom")
        if isinstance(entry, dict)
        for kind, ref in entry.items()
        if isinstance(ref, dict)
    ]
    lifecycle = spec.get("lifecycle") or {}
    prestop = lifecycle.get("preStop") if isinstance(lifecycle, dict) else None
    command = [str(c) for c in _list(spec.get("command"), f"{source}: command")]
    command += [str(a) for a in _list(spec.get("args"), f"{source}: args")]
    return ContainerSpec(
        source=source,
        grace_period=grace,
        prestop=_action(prestop, f"{source}: lifecycle.preStop", hook=True) if prestop else None,
        readiness=_probe(spec.get("readinessProbe"), f"{source}: readinessProbe"),
        liveness=_probe(spec.get("livenessProbe"), f"{source}: livenessProbe"),
        env=env,
        env_from_elsewhere=tuple(elsewhere),
        env_sources=tuple(sources),
        ports=tuple(ports),
        port_names=names,
        command=tuple(command) if spec.get("command") else (),
    )


def _probe(spec: Any, where: str) -> Probe | None:
    if not spec:
        return None
    if not isinstance(spec, dict):
        raise ManifestError(f"{where}: not a mapping")
    timeout = _number(spec.get("timeoutSeconds", 1), f"{where}.timeoutSeconds")
    period = _number(spec.get("periodSeconds", 10), f"{where}.periodSeconds")
    return Probe(_action(spec, where, hook=False), timeout=timeout, period=period)


def _action(spec: Any, where: str, *, hook: bool) -> Action:
    if not isinstance(spec, dict):
        raise ManifestError(f"{where}: not a mapping")
    if isinstance(spec.get("httpGet"), dict):
        get = spec["httpGet"]
        headers = tuple(
            (str(_get(h, "name", f"{where}.httpGet.httpHeaders")), str(h.get("value", "")))
            for h in _list(get.get("httpHeaders"), f"{where}.httpGet.httpHeaders")
        )
        return HttpGet(
            path=str(get.get("path", "/")),
            port=_port(_get(get, "port", f"{where}.httpGet"), f"{where}.httpGet.port"),
            host=str(get["host"]) if get.get("host") else None,
            scheme=str(get.get("scheme", "HTTP")).upper(),
            headers=headers,
        )
    if isinstance(spec.get("exec"), dict):
        command = [str(c) for c in _list(spec["exec"].get("command"), f"{where}.exec.command")]
        if not command:
            raise ManifestError(f"{where}.exec.command is empty")
        return Exec(tuple(command))
    if hook and isinstance(spec.get("sleep"), dict):
        return Sleep(_number(_get(spec["sleep"], "seconds", f"{where}.sleep"), f"{where}.sleep"))
    if not hook and isinstance(spec.get("tcpSocket"), dict):
        get = spec["tcpSocket"]
        port = _port(_get(get, "port", f"{where}.tcpSocket"), f"{where}.tcpSocket.port")
        return TcpSocket(port=port, host=str(get["host"]) if get.get("host") else None)
    kinds = "httpGet, exec or sleep" if hook else "httpGet, exec or tcpSocket"
    given = ", ".join(sorted(str(k) for k in spec)) or "nothing"
    raise ManifestError(f"{where}: graceshut simulate plays {kinds}; the manifest has {given}")


def _port(value: Any, where: str) -> int | str:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ManifestError(f"{where}: {value!r} is not a port number or name")
    return value


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ManifestError(f"{where}: {value!r} is not a number of 0 or more")
    return float(value)


def _get(mapping: Any, key: str, where: str) -> Any:
    if not isinstance(mapping, dict) or key not in mapping:
        raise ManifestError(f"{where}: {key} is missing")
    return mapping[key]


def _list(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ManifestError(f"{where}: not a list")
    return value
