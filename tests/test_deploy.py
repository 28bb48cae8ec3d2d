"""The Kubernetes manifest, checked against the Kubernetes API schema (kubernetes-validate)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

kubernetes_validate = pytest.importorskip("kubernetes_validate")
yaml = pytest.importorskip("yaml")

MANIFEST = Path(__file__).resolve().parents[1] / "edge_server" / "k8s.yaml"


@pytest.fixture(scope="module")
def documents() -> dict[str, dict]:
    docs = [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]
    return {d["kind"]: d for d in docs}


def test_every_resource_passes_the_api_schema_strictly(documents):
    version = kubernetes_validate.latest_version()
    assert set(documents) == {"Deployment", "Service", "HorizontalPodAutoscaler",
                              "PodDisruptionBudget"}
    for document in documents.values():
        kubernetes_validate.validate(document, version, strict=True)
    # and the check can fail: a misspelt field is refused
    broken = copy.deepcopy(documents["Deployment"])
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grcp"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, version, strict=True)


def test_the_deployment_probes_health_over_grpc_and_bounds_its_resources(documents):
    pod = documents["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["readinessProbe"]["grpc"] == {"port": 50051,
                                                   "service": "splitnet.v1.EdgeInference"}
    assert container["livenessProbe"]["grpc"]["port"] == 50051
    assert {"requests", "limits"} <= set(container["resources"])
    assert pod["securityContext"]["runAsNonRoot"] is True
    # the metrics port the pod is scraped on is the one the server is told to serve
    args = container["args"]
    port = int(args[args.index("--metrics-port") + 1])
    assert {"containerPort": port, "name": "metrics"} in container["ports"]
    hpa = documents["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"]["name"] == documents["Deployment"]["metadata"]["name"]
    assert hpa["metrics"][0]["resource"]["name"] == "cpu"
    selector = documents["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"]
    assert selector == documents["Deployment"]["spec"]["selector"]["matchLabels"]
