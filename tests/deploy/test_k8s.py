"""deploy/k8s/: every manifest valid against the Kubernetes schemas, and consistent.

kubernetes-validate ships the JSON schemas inside its wheel: this runs offline.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
# The oldest release we support (native preStop sleep is beta and on by default from 1.30)
# and the newest whose schemas the installed kubernetes-validate carries.
VERSIONS = ("1.31.0", kubernetes_validate.latest_version() + ".0")
DEPLOYMENTS = {
    # name: (module, port, readiness path)
    "limbo-worker": ("services.worker", 8000, "/readyz"),
    "limbo-supervisor": ("services.supervisor", 8001, "/readyz"),
}
Manifest = dict[str, Any]


def manifest_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def load_all() -> list[tuple[Path, Manifest]]:
    documents = []
    for path in manifest_files():
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                documents.append((path, doc))
    return documents


def find(kind: str, name: str) -> Manifest:
    for _, doc in load_all():
        if doc["kind"] == kind and doc["metadata"]["name"] == name:
            return doc
    raise AssertionError(f"no {kind} {name} in {K8S}")


def only_container(deployment: Manifest) -> Manifest:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def config_value(key: str) -> str:
    return str(find("ConfigMap", "limbo-config")["data"][key])


def resolve_port(container: Manifest, port: int | str) -> int:
    if isinstance(port, int):
        return port
    for declared in container["ports"]:
        if declared["name"] == port:
            return int(declared["containerPort"])
    raise AssertionError(f"port {port!r} not declared by container {container['name']}")


def test_manifests_exist_and_kustomization_lists_them_all() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = sorted(kustomization["resources"])
    assert listed == sorted(p.name for p in manifest_files())
    kinds = {doc["kind"] for _, doc in load_all()}
    assert {"Deployment", "Service", "PodDisruptionBudget", "Secret", "ConfigMap"} <= kinds


@pytest.mark.parametrize("version", VERSIONS)
def test_every_manifest_is_valid(version: str) -> None:
    documents = load_all()
    assert documents
    for path, doc in documents:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{path.name} {doc['kind']} {doc['metadata']['name']}: {exc.message}")


def test_validation_rejects_a_misspelt_field() -> None:
    """The schema check is strict: an unknown field (a typo) fails it."""
    deployment = copy.deepcopy(find("Deployment", "limbo-worker"))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["livenesProbe"] = container.pop("livenessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, VERSIONS[-1], strict=True)


@pytest.mark.parametrize("name", sorted(DEPLOYMENTS))
def test_probes_hit_the_right_paths_and_ports(name: str) -> None:
    module, port, readiness = DEPLOYMENTS[name]
    container = only_container(find("Deployment", name))
    assert container["command"] == ["python", "-m", module]
    assert resolve_port(container, container["livenessProbe"]["httpGet"]["port"]) == port
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert resolve_port(container, container["startupProbe"]["httpGet"]["port"]) == port
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert resolve_port(container, container["readinessProbe"]["httpGet"]["port"]) == port
    assert container["readinessProbe"]["httpGet"]["path"] == readiness
    # the port the service listens on is the one configured for it
    variable = "WORKER_PORT" if module == "services.worker" else "SUPERVISOR_PORT"
    assert int(config_value(variable)) == port
    annotations = find("Deployment", name)["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == port
    assert annotations["prometheus.io/path"] == "/metrics"


def test_worker_grace_period_covers_prestop_and_drain() -> None:
    deployment = find("Deployment", "limbo-worker")
    spec = deployment["spec"]["template"]["spec"]
    container = only_container(deployment)
    pause = int(
        container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    )
    drain = int(config_value("WORKER_SHUTDOWN_TIMEOUT"))
    assert drain >= 1
    assert spec["terminationGracePeriodSeconds"] > pause + drain, (
        "the kubelet would SIGKILL the worker before its drain ends"
    )


def test_supervisor_grace_period_covers_its_stop() -> None:
    spec = find("Deployment", "limbo-supervisor")["spec"]["template"]["spec"]
    # supervisord.conf gives the supervisor 10 s; Kubernetes must give at least as much.
    assert spec["terminationGracePeriodSeconds"] >= 10


def test_pods_are_non_root_restricted_and_sized() -> None:
    dockerfile_user = re.search(
        r"^USER (\d+):(\d+)$", (ROOT / "deploy" / "Dockerfile").read_text(), re.M
    )
    assert dockerfile_user is not None
    pod_specs = [
        doc["spec"]["template"]["spec"]
        for _, doc in load_all()
        if doc["kind"] in {"Deployment", "Job"}
    ]
    assert len(pod_specs) == 3
    for spec in pod_specs:
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] == int(dockerfile_user.group(1))
        for container in spec.get("initContainers", []) + spec["containers"]:
            assert container["resources"]["requests"]["cpu"]
            assert container["resources"]["requests"]["memory"]
            assert container["resources"]["limits"]["memory"]
            assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_secret_references_resolve() -> None:
    secret = find("Secret", "limbo-secrets")
    keys = set(secret.get("stringData", {})) | set(secret.get("data", {}))
    assert {"DATABASE_URL", "WORKER_API_TOKEN", "SUPERVISOR_ADMIN_TOKEN"} <= keys
    referenced = []
    for _, doc in load_all():
        if doc["kind"] not in {"Deployment", "Job"}:
            continue
        spec = doc["spec"]["template"]["spec"]
        for container in spec.get("initContainers", []) + spec["containers"]:
            names = {e["name"] for e in container.get("env", [])}
            assert "DATABASE_URL" in names, f"{container['name']} has no DATABASE_URL"
            for entry in container.get("env", []):
                ref = entry.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] == "limbo-secrets"
                    assert ref["key"] in keys
                    referenced.append(ref["key"])
                # secrets never sit in plain env values
                assert "value" not in entry or "postgresql://" not in str(entry["value"])
            for source in container.get("envFrom", []):
                assert source["configMapRef"]["name"] == "limbo-config"
    assert set(referenced) == keys


@pytest.mark.parametrize("name", sorted(DEPLOYMENTS))
def test_services_and_budgets_select_the_deployment(name: str) -> None:
    deployment = find("Deployment", name)
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"] == labels
    service = find("Service", name)
    assert service["spec"]["selector"] == labels
    container = only_container(deployment)
    for port in service["spec"]["ports"]:
        resolve_port(container, port["targetPort"])
    budget = find("PodDisruptionBudget", name)
    assert budget["spec"]["selector"]["matchLabels"] == labels
    replicas = deployment["spec"]["replicas"]
    allowed = budget["spec"].get("maxUnavailable", replicas - budget["spec"].get("minAvailable", 0))
    assert 1 <= allowed < replicas, "the budget must allow a drain yet keep one pod"
    # several supervisors (one leader by advisory lock) keep limbo handling up during a drain
    assert replicas >= 2
