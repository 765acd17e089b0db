"""The deployment files hold: every Kubernetes manifest is valid against the API's own
schemas (kubernetes-validate, strict: no unknown field), the ConfigMap is the defaults
rendered, the image builds every package, the laptop compose file stays on loopback.
(No cluster and no Docker engine here: the image itself is not built by the tests.)"""

from __future__ import annotations

import importlib.util
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
# The oldest Kubernetes the manifests promise (gRPC probes are GA from 1.27).
KUBERNETES = "1.27"


def documents() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                found.append((f"{path.name}:{doc['kind']}/{doc['metadata']['name']}", doc))
    return found


@pytest.mark.parametrize(("where", "manifest"), documents(), ids=[w for w, _ in documents()])
def test_every_manifest_is_valid_kubernetes(where: str, manifest: dict[str, Any]) -> None:
    kubernetes_validate.validate(manifest, KUBERNETES, strict=True)


def test_the_kustomization_lists_every_manifest() -> None:
    listed = set(yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"])
    assert listed == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}


def test_what_the_manifests_promise() -> None:
    kinds = {doc["kind"]: doc for _, doc in documents()}
    assert set(kinds) >= {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "ConfigMap",
        "Secret",
        "CronJob",
    }
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert all(container[p]["grpc"]["port"] == 50051 for p in ("readinessProbe", "livenessProbe"))
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["resources"]["requests"]["cpu"] and container["resources"]["limits"]["memory"]
    env = {e["name"]: e for e in container["env"]}
    assert env["ARBITER_MODEL_REGISTRY"]["value"] == "redis"  # replicas share no folder
    assert "secretKeyRef" in env["REDIS_URL"]["valueFrom"]  # no secret in the manifest
    job = kinds["CronJob"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert "arbiter export-logs" in job["command"][-1] and "--source logs" in job["command"][-1]
    # The trainer's data folder is the volume: the base rows the first model learnt from
    # outlive the pod, and the export beside them.
    trainer_env = {e["name"]: e.get("value") for e in job["env"]}
    mounted = {m["mountPath"] for m in job["volumeMounts"]}
    assert trainer_env["ARBITER_DATA_DIR"] in mounted
    assert kinds["CronJob"]["spec"]["concurrencyPolicy"] == "Forbid"


def test_the_configmap_is_the_defaults_rendered() -> None:
    spec = importlib.util.spec_from_file_location("render_config", ROOT / "deploy/render_config.py")
    assert spec is not None and spec.loader is not None
    render = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(render)
    rendered = render.render(ROOT / "engine" / "defaults")
    assert (K8S / "configmap.yaml").read_text() == rendered, "run: python deploy/render_config.py"
    data = yaml.safe_load(rendered)["data"]
    for name in render.FILES:  # and YAML gives back each file exactly
        assert data[name] == (ROOT / "engine" / "defaults" / name).read_text()


def test_the_image_copies_every_package() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    copied = set(re.findall(r"^COPY (\w+) \1$", dockerfile, re.MULTILINE))
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    included = {p.rstrip("*") for p in packages["packages"]["find"]["include"]}
    assert included - copied == {"arbiter"}  # generated in the image from protos/
    assert "COPY protos protos" in dockerfile and "grpc_tools.protoc" in dockerfile
    assert re.search(r"^USER 10001$", dockerfile, re.MULTILINE)  # not root


def test_the_laptop_trial_listens_on_loopback_only() -> None:
    compose = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    ports = [p for service in compose["services"].values() for p in service.get("ports", [])]
    assert ports and all(p.startswith("127.0.0.1:") for p in ports)


def test_the_dashboard_reads_metrics_the_service_exports() -> None:
    """Every metric a Grafana panel queries is one engine/service/metrics.py defines (a
    renamed metric fails here, not on an operator's empty panel)."""
    from prometheus_client import REGISTRY

    from engine.service import metrics

    assert metrics.RPC_SECONDS  # the module's metrics are registered
    exported = {
        sample_name
        for family in REGISTRY.collect()
        if family.name.startswith("arbiter_")
        for sample_name in (
            family.name,
            f"{family.name}_total",
            f"{family.name}_bucket",
            f"{family.name}_count",
            f"{family.name}_sum",
        )
    }
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "arbiter.json").read_text())
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\barbiter_\w+", target["expr"])
    }
    assert queried and queried <= exported, queried - exported
