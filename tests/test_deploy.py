"""deploy/: the Kubernetes manifests validate, the images' install script and pip sets hold what they claim."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S_VERSION = "1.30.0"
TRAINING_ONLY = {"torch", "torchmetrics", "kornia", "onnx", "onnxscript", "scikit-learn", "matplotlib",
                 "wordfreq", "espeakng-loader", "sacrebleu", "num2words",  # demo data makers; sacrebleu: BLEU/chrF
                 "filelock",  # the run directory's training lock
                 "torchdata",  # the resumable training data loader
                 "pyarrow",  # text tables for training
                 "fsspec"}  # the shards dataset reads local folders and URLs through it
# KServe's component extension fields beside the pod spec of a predictor (v1beta1 ComponentExtensionSpec).
KSERVE_EXTENSION = {"minReplicas", "maxReplicas", "scaleMetric", "scaleTarget", "containerConcurrency", "timeout",
                    "canaryTrafficPercent", "logger", "batcher", "labels", "annotations", "deploymentStrategy"}


def documents() -> list[tuple[str, dict[str, Any]]]:
    return [(path.name, doc) for path in sorted((DEPLOY / "k8s").glob("*.yaml"))
            for doc in yaml.safe_load_all(path.read_text()) if doc]


def _pod(spec: dict[str, Any], name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def pod_specs(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Every pod spec a manifest runs, whatever its kind."""
    kind, spec = doc["kind"], doc["spec"]
    if kind == "Deployment":
        return [spec["template"]["spec"]]
    if kind == "PyTorchJob":
        return [replica["template"]["spec"] for replica in spec["pytorchReplicaSpecs"].values()]
    if kind == "InferenceService":
        return [{k: v for k, v in spec["predictor"].items() if k not in KSERVE_EXTENSION}]
    return []


@pytest.mark.parametrize(("name", "doc"), documents(), ids=lambda v: v if isinstance(v, str) else v["kind"])
def test_manifest_validates_against_the_kubernetes_schemas(name: str, doc: dict[str, Any]) -> None:
    if doc["apiVersion"].startswith(("kubeflow.org/", "serving.kserve.io/")):
        # CRDs: their schemas ship with the operators, not in a package; check the structure the operator reads,
        # and each pod spec inside them against the core Pod schema (strict: unknown fields fail).
        _check_custom_resource(doc)
    else:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    for i, spec in enumerate(pod_specs(doc)):
        kubernetes_validate.validate(_pod(spec, f"{name}-{i}"), K8S_VERSION, strict=True)


def _check_custom_resource(doc: dict[str, Any]) -> None:
    spec = doc["spec"]
    if doc["kind"] == "PyTorchJob":
        assert doc["apiVersion"] == "kubeflow.org/v1"
        assert set(spec["pytorchReplicaSpecs"]) <= {"Master", "Worker"}
        for replica in spec["pytorchReplicaSpecs"].values():
            assert isinstance(replica["replicas"], int) and replica["restartPolicy"] in {"OnFailure", "Never", "Always"}
            assert replica["template"]["spec"]["containers"][0]["name"] == "pytorch"
        assert set(spec["elasticPolicy"]) <= {"rdzvBackend", "minReplicas", "maxReplicas", "maxRestarts",
                                              "nProcPerNode", "metrics", "rdzvHost", "rdzvPort", "rdzvId"}
    else:
        assert (doc["apiVersion"], doc["kind"]) == ("serving.kserve.io/v1beta1", "InferenceService")
        predictor = spec["predictor"]
        assert predictor["minReplicas"] <= predictor["maxReplicas"]
        assert predictor["scaleMetric"] in {"cpu", "memory", "concurrency", "rps"}
        container = predictor["containers"][0]
        assert container["name"] == "kserve-container" and container["args"][0] == "/mnt/models"
        assert {e["name"] for e in container["env"]} >= {"STORAGE_URI"}


def test_every_container_is_locked_down_with_resources() -> None:
    for name, doc in documents():
        for spec in pod_specs(doc):
            assert spec["securityContext"]["runAsNonRoot"] is True, name
            assert spec["securityContext"]["runAsUser"] != 0, name
            for c in spec["containers"]:
                sc = c["securityContext"]
                assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False, name
                assert sc["capabilities"]["drop"] == ["ALL"], name
                assert {"requests", "limits"} <= set(c["resources"]), name
                assert any(m["mountPath"] == "/tmp" for m in c["volumeMounts"]), f"{name}: no writable /tmp"


def test_serving_pods_probe_v2_health_and_read_the_token_from_a_secret() -> None:
    serving = [(name, spec) for name, doc in documents() if doc["kind"] in {"Deployment", "InferenceService"}
               for spec in pod_specs(doc)]
    assert len(serving) == 2
    for name, spec in serving:
        c = spec["containers"][0]
        assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready", name
        assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live", name
        token_file = Path(c["args"][c["args"].index("--token-file") + 1])
        secret_volumes = {v["name"] for v in spec["volumes"] if "secret" in v}
        mounts = {m["name"]: Path(m["mountPath"]) for m in c["volumeMounts"]}
        assert any(mounts[v] == token_file.parent for v in secret_volumes), f"{name}: token not from a Secret"


def test_service_and_autoscaler_point_at_the_deployment() -> None:
    by_kind = {doc["kind"]: doc for name, doc in documents() if name == "serve.yaml"}
    deployment, service, hpa = by_kind["Deployment"], by_kind["Service"], by_kind["HorizontalPodAutoscaler"]
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    port = deployment["spec"]["template"]["spec"]["containers"][0]["ports"][0]["name"]
    assert service["spec"]["ports"][0]["targetPort"] == port
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": deployment["metadata"]["name"]}
    assert hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


# --- images --------------------------------------------------------------------------------------------


def serve_requirements() -> list[Requirement]:
    lines = (DEPLOY / "requirements-serve.txt").read_text().splitlines()
    return [Requirement(line) for line in lines if line.strip() and not line.startswith("#")]


def test_serve_pip_set_is_dlforge_dependencies_minus_training() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = {Requirement(r).name: str(Requirement(r)) for r in project["dependencies"]}
    serve = {r.name: str(r) for r in serve_requirements()}
    assert not serve.keys() & TRAINING_ONLY
    assert {name: runtime.get(name) for name in serve} == serve, "same specifiers as pyproject.toml"
    # What is left out is exactly the training stack, plus what only export/evaluate use.
    assert set(runtime) - set(serve) <= TRAINING_ONLY | {"jsonschema"}


def test_the_serving_path_runs_with_torch_unimportable(model_package: Path) -> None:
    """Load, batch and answer V2 requests in a process where `import torch` fails, as in the serve image."""
    script = f"""
import sys
sys.modules["torch"] = None  # any import of torch now raises ImportError
from starlette.testclient import TestClient
from dlforge.serve.app import create_app
from dlforge.serve.settings import Settings
with TestClient(create_app(Settings(path={str(model_package)!r}))) as client:
    assert client.get("/v2/health/ready").json() == {{"ready": True}}
    body = {{"inputs": [{{"name": "input", "shape": [2, 1, 8, 8], "datatype": "FP32", "data": [0.5] * 128}}]}}
    response = client.post("/v2/models/tiny/infer", json=body)
    assert response.status_code == 200, response.text
    print(response.json()["outputs"][0]["shape"])
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "[2, 10]"


def _dockerfile(name: str) -> dict[str, list[str]]:
    text = re.sub(r"\\\n\s*", " ", (DEPLOY / name).read_text())
    steps: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            op, _, rest = line.strip().partition(" ")
            steps.setdefault(op.upper(), []).append(rest)
    return steps


@pytest.mark.parametrize(("name", "kind"), [("Dockerfile.serve", "serve"), ("Dockerfile.train", "train")])
def test_images_install_with_the_tested_script_and_run_as_non_root(name: str, kind: str) -> None:
    steps = _dockerfile(name)
    assert any(f"deploy/install.sh {kind} " in run for run in steps["RUN"])
    user = steps["USER"][-1].split(":")[0]
    assert user not in {"root", "0"} and user.isdigit()
    for copy in steps["COPY"]:
        *sources, _ = copy.split()
        assert all((ROOT / s).exists() for s in sources), copy
    if kind == "serve":
        assert "/v2/health/ready" in steps["HEALTHCHECK"][0]
        assert "torch" not in (DEPLOY / name).read_text().replace("no torch", "")


def _dry_run(kind: str, tmp_path: Path) -> dict[str, str]:
    """What deploy/install.sh KIND would install into an empty environment ({name: version}), resolved by pip.

    The script runs unchanged; the interpreter it is given turns each of its pip calls into a dry run with a report.
    """
    shim = tmp_path / "python"
    shim.write_text(f'#!/bin/sh\nexec {sys.executable} "$@" --dry-run --ignore-installed '
                    f'--report "{tmp_path}/report-$$.json"\n')
    shim.chmod(0o755)
    proc = subprocess.run(["bash", str(DEPLOY / "install.sh"), kind, str(ROOT)],
                          env={**os.environ, "PYTHON": str(shim)}, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    reports = sorted(tmp_path.glob("report-*.json"))
    assert len(reports) == (2 if kind == "serve" else 1)
    return {i["metadata"]["name"].lower(): i["metadata"]["version"]
            for report in reports for i in json.loads(report.read_text())["install"]}


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_serve_pip_set_has_no_torch_and_stays_under_400_mb(tmp_path: Path) -> None:
    """The serve image's pip set as pip resolves it; its installed size measured from this environment's files."""
    resolved = _dry_run("serve", tmp_path)
    assert "dlforge" in resolved and "onnxruntime" in resolved and "fastapi" in resolved
    assert not [n for n in resolved if n.startswith(("torch", "nvidia", "triton"))], sorted(resolved)
    total = 0
    for name in resolved:
        if name == "dlforge":
            continue
        files = metadata.distribution(name).files or []
        total += sum(f.locate().stat().st_size for f in files if Path(str(f.locate())).is_file())
    print(f"serve pip set: {len(resolved)} distributions, {total / 2**20:.0f} MiB installed")
    assert total < 400 * 2**20
