"""The example Kubernetes manifests are valid API objects (offline OpenAPI schemas, no cluster)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate  # the test extra
import pytest
import yaml  # graceshut[simulate]

from graceshut.simulate._actions import Exec
from graceshut.simulate._manifest import read_manifest

from .asgi_servers import ROOT, free_port
from .test_simulate import FAST, simulate, uvicorn

K8S = ROOT / "examples" / "k8s"
MANIFESTS = sorted(K8S.glob("*.yaml")) + sorted(K8S.glob("*.yml"))
# The oldest Kubernetes the examples are meant for, and the newest schemas shipped.
VERSIONS = ["1.30", kubernetes_validate.latest_version()]


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def test_there_are_manifests_to_validate() -> None:
    """The glob finds the Deployments and the PodDisruptionBudget, so nothing passes empty."""
    names = {path.name for path in MANIFESTS}
    assert {"deployment.yaml", "deployment-exec.yaml", "pdb.yaml"} <= names


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("path", MANIFESTS, ids=lambda path: path.name)
def test_every_example_manifest_is_valid(path: Path, version: str) -> None:
    """Each document validates strictly (no unknown field) against the Kubernetes schema."""
    docs = documents(path)
    assert docs, f"{path.name} holds no document"
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{path.name} ({doc.get('kind')}), Kubernetes {version}: {error}")


def test_the_validator_catches_a_misspelt_field() -> None:
    """A typo in a preStop hook fails validation: the check above is not vacuous."""
    doc = documents(K8S / "deployment.yaml")[0]
    doc["spec"]["template"]["spec"]["containers"][0]["lifecycle"]["preStop"]["httpGet"]["pathh"] = (
        "/shutdown"
    )
    with pytest.raises(kubernetes_validate.ValidationError, match="pathh"):
        kubernetes_validate.validate(doc, VERSIONS[-1], strict=True)


def test_the_exec_variant_calls_graceshut_prestop_on_loopback() -> None:
    """deployment-exec.yaml: exec preStop `graceshut prestop` on 127.0.0.1, no token at all."""
    spec = read_manifest(K8S / "deployment-exec.yaml", "app")
    assert spec.prestop == Exec(("graceshut", "prestop", "http://127.0.0.1:8000/shutdown"))
    assert spec.grace_period == 30
    assert "GRACESHUT_TOKEN" not in spec.env
    assert spec.env_from_elsewhere == ()


@pytest.mark.e2e
def test_the_exec_variant_stops_the_demo_clean(tmp_path: Path) -> None:
    """Its settings under `graceshut simulate`, exec hook on loopback without a token: clean."""
    port = free_port()
    bin_dir = Path(sys.executable).parent  # where `graceshut` is installed
    # The manifest's own hook, on this run's port instead of 8000 (the test above checks
    # that the manifest says exactly this).
    hook = f"graceshut prestop http://127.0.0.1:{port}/shutdown"
    status, report, stderr = simulate(
        "--manifest",
        str(K8S / "deployment-exec.yaml"),
        "--container",
        "app",
        "--port",
        str(port),
        "--env",
        f"PATH={bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "--prestop-exec",
        hook,
        "--env",
        f"DEMO_DATABASE={tmp_path / 'demo.sqlite3'}",
        "--env",
        "GRACESHUT_PROPAGATION_DELAY=1",
        *FAST,
        *uvicorn("examples.app:app", port),
    )
    assert status == 0, (report["problems"], stderr, report["app_output_tail"])
    assert report["requests"]["failed"] == 0
    assert report["app_report"]["ok"] is True


def test_the_statefulset_mounts_its_own_volume_where_the_app_spills() -> None:
    """statefulset-spill.yaml: SPILL_DIRECTORY is the mount of a per-pod volume claim."""
    docs = {doc["kind"]: doc for doc in documents(K8S / "statefulset-spill.yaml")}
    spec = docs["StatefulSet"]["spec"]
    assert spec["serviceName"] == docs["Service"]["metadata"]["name"]
    (container,) = spec["template"]["spec"]["containers"]
    env = {item["name"]: item["value"] for item in container["env"]}
    (mount,) = container["volumeMounts"]
    assert env["SPILL_DIRECTORY"] == mount["mountPath"]
    (claim,) = spec["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == mount["name"]
