"""Read the termination settings of one container from a pod or workload manifest.

A manifest is a YAML file of one or more documents (PyYAML, the ``graceshut[simulate]``
extra) or JSON (``kubectl get deployment app -o json``: no extra needed). Any document
with a pod template counts (Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, Job,
CronJob, PodTemplate, or a List of them); a Service whose selector matches the pod's
labels gives ``publishNotReadyAddresses``; the others (PodDisruptionBudget...) are
skipped. Numbers Kubernetes keeps in whole seconds (``terminationGracePeriodSeconds``,
the ``sleep`` action) must be whole here too: the API server refuses ``2.5``.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
from pathlib import Path
from typing import Any

from ._actions import Action, Exec, Grpc, HttpGet, Sleep, TcpSocket
from ._kubelet import Probe

DEFAULT_GRACE_PERIOD = 30


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
    startup: Probe | None = None
    replicas: int | None = None
    """The workload's ``replicas`` (Kubernetes' default, 1, when absent); None: not known."""
    publish_not_ready: bool = False
    """A Service in the manifest selecting the pod has ``publishNotReadyAddresses``."""
    stop_signal: str | None = None
    """``lifecycle.stopSignal`` (Kubernetes 1.33+), else the image's ``STOPSIGNAL``."""
    volumes: tuple[tuple[str, str, str], ...] = ()
    """The container's ``volumeMounts``: (volume name, its kind, mountPath)."""


def read_manifest(path: Path, container: str | None) -> ContainerSpec:
    """Read *path* and return the settings of *container* (may be None when only one).

    Raises:
        ManifestError: Unreadable, no workload, no such container, or an ambiguous choice.
    """
    documents = _documents(path)
    workloads = [found for doc in documents for found in _pod_specs(doc)]
    pods = [(label, spec) for label, spec, _, _ in workloads]
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
    replicas, labels = next((r, lb) for w, _, r, lb in workloads if w == label)
    container_spec = _container(f"{path}: {label}, container {spec.get('name')}", pod, spec)
    publish = any(
        _selects(service, labels) and (service.get("spec") or {}).get("publishNotReadyAddresses")
        for service in _services(documents)
    )
    return dataclasses.replace(container_spec, replicas=replicas, publish_not_ready=publish)


def _services(documents: list[Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for doc in documents:
        if not isinstance(doc, dict):
            continue
        if doc.get("kind") == "List" or (doc.get("kind") is None and "items" in doc):
            found += _services(list(doc.get("items") or ()))
        elif doc.get("kind") == "Service":
            found.append(doc)
    return found


def _selects(service: dict[str, Any], labels: dict[str, Any]) -> bool:
    selector = (service.get("spec") or {}).get("selector")
    if not isinstance(selector, dict) or not selector:
        return False  # a Service without a selector has its endpoints made by hand
    return all(labels.get(key) == value for key, value in selector.items())


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


def _pod_specs(doc: Any) -> list[tuple[str, dict[str, Any], int | None, dict[str, Any]]]:
    """(label, pod spec, replicas, pod labels) for each pod template in *doc*."""
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
    return [(label, node, *_replicas_and_labels(doc, kind, path, label))]


def _replicas_and_labels(
    doc: dict[str, Any], kind: str, path: tuple[str, ...], label: str
) -> tuple[int | None, dict[str, Any]]:
    template: Any = doc
    for key in (*path[:-1], "metadata") if kind != "Pod" else ("metadata",):
        template = template.get(key) if isinstance(template, dict) else None
    labels = template.get("labels") if isinstance(template, dict) else None
    replicas: int | None = None  # a DaemonSet's or a Job's: not known from the manifest
    if kind == "Pod":
        replicas = 1
    elif kind in _TEMPLATE_KINDS - {"DaemonSet"}:
        value = (doc.get("spec") or {}).get("replicas", 1)  # Kubernetes' default
        replicas = int(_whole(value, f"{label}: spec.replicas"))
    return replicas, labels if isinstance(labels, dict) else {}


def _container(source: str, pod: dict[str, Any], spec: dict[str, Any]) -> ContainerSpec:
    grace = pod.get("terminationGracePeriodSeconds", DEFAULT_GRACE_PERIOD)
    grace = _whole(grace, f"{source}: terminationGracePeriodSeconds")
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
    stop_signal = lifecycle.get("stopSignal") if isinstance(lifecycle, dict) else None
    kinds = {
        str(v.get("name")): next((k for k in v if k != "name"), "emptyDir")
        for v in _list(pod.get("volumes"), f"{source}: volumes")
        if isinstance(v, dict)
    }
    volumes = tuple(
        (name, kinds.get(name, "unknown"), str(_get(m, "mountPath", f"{source}: volumeMounts")))
        for m in _list(spec.get("volumeMounts"), f"{source}: volumeMounts")
        for name in [str(_get(m, "name", f"{source}: volumeMounts"))]
    )
    command = [str(c) for c in _list(spec.get("command"), f"{source}: command")]
    command += [str(a) for a in _list(spec.get("args"), f"{source}: args")]
    return ContainerSpec(
        source=source,
        grace_period=grace,
        prestop=_action(prestop, f"{source}: lifecycle.preStop", hook=True) if prestop else None,
        readiness=_probe(spec.get("readinessProbe"), f"{source}: readinessProbe"),
        liveness=_probe(spec.get("livenessProbe"), f"{source}: livenessProbe"),
        startup=_probe(spec.get("startupProbe"), f"{source}: startupProbe"),
        stop_signal=str(stop_signal) if stop_signal else None,
        volumes=volumes,
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
        seconds = _get(spec["sleep"], "seconds", f"{where}.sleep")
        return Sleep(_whole(seconds, f"{where}.sleep.seconds"))
    if isinstance(spec.get("tcpSocket"), dict):
        # As a hook, the API accepts it and the kubelet fails it: played as it fails.
        get = spec["tcpSocket"]
        port = _port(_get(get, "port", f"{where}.tcpSocket"), f"{where}.tcpSocket.port")
        return TcpSocket(port=port, host=str(get["host"]) if get.get("host") else None)
    if not hook and isinstance(spec.get("grpc"), dict):
        get = spec["grpc"]
        port = _get(get, "port", f"{where}.grpc")
        if isinstance(port, bool) or not isinstance(port, int):
            raise ManifestError(f"{where}.grpc.port: {port!r} is not a port number")
        return Grpc(port=port, service=str(get.get("service") or ""))
    kinds = "httpGet, exec, sleep or tcpSocket" if hook else "httpGet, exec, tcpSocket or grpc"
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


def _whole(value: Any, where: str) -> float:
    number = _number(value, where)
    if not isinstance(value, int):
        raise ManifestError(
            f"{where}: {value!r} is not a whole number of seconds (Kubernetes keeps it "
            "as an integer: the API server refuses a fraction)"
        )
    return number


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
