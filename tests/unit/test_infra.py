"""Every YAML under infra/ parses and has the fields its tool requires; the Dockerfile builds the package."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

INFRA = Path(__file__).resolve().parents[2] / "infra"
YAMLS = sorted([*INFRA.rglob("*.yaml"), *INFRA.rglob("*.yml")])


def _docs(path: Path) -> list[dict]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs and all(isinstance(d, dict) for d in docs), f"{path}: expected YAML mappings"
    return docs


def _pod_containers(template: dict) -> list[dict]:
    containers = template["spec"]["containers"]
    assert containers and all(c.get("name") and c.get("image") for c in containers)
    return containers


def _check_raycluster_spec(spec: dict, where: str) -> None:
    head = spec["headGroupSpec"]
    assert head["rayStartParams"].get("dashboard-host"), f"{where}: head without a dashboard"
    ports = {p["containerPort"] for c in _pod_containers(head["template"]) for p in c.get("ports", [])}
    assert 8265 in ports, f"{where}: dashboard port not exposed on the head"
    assert head.get("serviceType", "ClusterIP") == "ClusterIP", f"{where}: the Jobs API must not be exposed"
    gpus = [g for g in spec["workerGroupSpecs"]
            if any("nvidia.com/gpu" in c.get("resources", {}).get("limits", {}) for c in _pod_containers(g["template"]))]
    assert gpus, f"{where}: no GPU worker group"
    for group in spec["workerGroupSpecs"]:
        assert group["groupName"] and group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]


def _check_k8s(doc: dict, where: str) -> None:
    for key in ("apiVersion", "kind", "metadata"):
        assert key in doc, f"{where}: missing {key}"
    assert doc["metadata"].get("name"), f"{where}: metadata.name"
    if doc["kind"] == "RayCluster":
        _check_raycluster_spec(doc["spec"], where)
    elif doc["kind"] == "RayJob":
        assert "cli.main run" in doc["spec"]["entrypoint"], f"{where}: entrypoint should run the asit pipeline"
        _check_raycluster_spec(doc["spec"]["rayClusterSpec"], where)


def _check_launcher(doc: dict, where: str) -> None:
    for key in ("cluster_name", "provider", "available_node_types", "head_node_type"):
        assert key in doc, f"{where}: missing {key}"
    assert doc["provider"].get("type"), f"{where}: provider.type"
    assert doc["head_node_type"] in doc["available_node_types"], f"{where}: head_node_type not a node type"
    for name, node in doc["available_node_types"].items():
        assert "node_config" in node and "resources" in node, f"{where}: node type {name}"


def _check_compose(doc: dict, where: str) -> None:
    services = doc["services"]
    assert {"postgres", "mlflow"} <= set(services), f"{where}: needs postgres and mlflow services"
    for name, service in services.items():
        assert service.get("image") or service.get("build"), f"{where}: service {name} has no image"
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{where}: {name} publishes {port} beyond localhost"
    command = services["mlflow"]["command"]
    assert "postgresql://" in command and "s3://" in command, f"{where}: mlflow needs Postgres + S3 stores"


def _kind(doc: dict) -> str:
    if "apiVersion" in doc:
        return "k8s"
    if "cluster_name" in doc or "provider" in doc:
        return "launcher"
    if "services" in doc:
        return "compose"
    return "unknown"


CHECKS = {"k8s": _check_k8s, "launcher": _check_launcher, "compose": _check_compose}


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: str(p.relative_to(INFRA)))
def test_infra_yaml_has_required_fields(path: Path) -> None:
    for i, doc in enumerate(_docs(path)):
        kind = _kind(doc)
        assert kind in CHECKS, f"{path}: document {i} is none of k8s / cluster launcher / compose; add a check"
        CHECKS[kind](doc, f"{path.relative_to(INFRA)}[{i}]")


def test_every_infra_kind_is_present() -> None:
    kinds = {(_kind(d), d.get("kind")) for p in YAMLS for d in _docs(p)}
    assert {("k8s", "RayCluster"), ("k8s", "RayJob"), ("launcher", None), ("compose", None)} <= kinds


def test_dockerfile_installs_the_package() -> None:
    text = (INFRA / "docker/Dockerfile").read_text()
    assert any(line.startswith("FROM ") for line in text.splitlines())
    assert "pip install" in text and "-e ." in text
    for part in ("rayjobs", "cli", "configs"):
        assert f"COPY --chown=ray:users {part} {part}" in text
    ignored = (INFRA / "docker/Dockerfile.dockerignore").read_text().split()
    assert {".venv", "runs", ".git"} <= set(ignored)
