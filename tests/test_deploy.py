"""deploy/: the Kubernetes manifests validate and hang together, the images' build context, install script,
pins and pip sets hold what they claim."""

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
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
K8S_VERSION = "1.30.0"
APPLIED_BY_HAND = {"load-models.yaml"}  # a one-off pod that fills the models claim; not in kustomization.yaml
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
    """Every Kubernetes object in deploy/k8s (kustomization.yaml is kustomize's input, not an object)."""
    return [(path.name, doc) for path in sorted(K8S.glob("*.yaml")) if path.name != "kustomization.yaml"
            for doc in yaml.safe_load_all(path.read_text()) if doc]


def kustomization() -> dict[str, Any]:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())


def _pod(spec: dict[str, Any], name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def pod_specs(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Every pod spec a manifest runs, whatever its kind."""
    kind, spec = doc["kind"], doc["spec"]
    if kind == "Pod":
        return [spec]
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



def _containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return spec["containers"] + spec.get("initContainers", [])


def test_every_mounted_volume_is_defined_in_its_pod() -> None:
    for name, doc in documents():
        for spec in pod_specs(doc):
            volumes = {v["name"] for v in spec.get("volumes", [])}
            for c in _containers(spec):
                for mount in c.get("volumeMounts", []):
                    assert mount["name"] in volumes, f"{name}: {c['name']} mounts undefined volume {mount['name']!r}"


def test_every_claim_a_pod_mounts_is_defined_here_for_many_nodes() -> None:
    claims = {doc["metadata"]["name"]: doc for _, doc in documents() if doc["kind"] == "PersistentVolumeClaim"}
    used = {(name, v["persistentVolumeClaim"]["claimName"]) for name, doc in documents() for spec in pod_specs(doc)
            for v in spec.get("volumes", []) if "persistentVolumeClaim" in v}
    assert {claim for _, claim in used} == {"dlforge-models", "dlforge-runs"}
    for name, claim in used:
        assert claim in claims, f"{name}: claim {claim!r} has no PersistentVolumeClaim in deploy/k8s"
    for claim in claims.values():  # serving replicas and training pods run on several nodes
        assert claim["spec"]["accessModes"] == ["ReadWriteMany"], claim["metadata"]["name"]


def test_kustomization_applies_every_manifest_but_the_one_off_loader() -> None:
    manifests = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert manifests >= APPLIED_BY_HAND
    assert sorted(kustomization()["resources"]) == sorted(manifests - APPLIED_BY_HAND)


def test_kustomization_sets_every_image_in_one_place() -> None:
    """The manifests name each image bare; registry and tag are kustomization.yaml's `images`, one entry each."""
    images = {i["name"]: i for i in kustomization()["images"]}
    used = {c["image"] for name, doc in documents() if name not in APPLIED_BY_HAND
            for spec in pod_specs(doc) for c in _containers(spec)}
    assert used == set(images) == {"dlforge-serve", "dlforge-train"}
    for name, image in images.items():
        assert image["newName"].endswith(f"/{name}"), "newName: REGISTRY/" + name
        assert isinstance(image["newTag"], str) and image["newTag"] not in {"", "latest"}, name
    loader = [c["image"] for name, doc in documents() if name in APPLIED_BY_HAND
              for spec in pod_specs(doc) for c in spec["containers"]]
    assert all(":" in image and not image.endswith(":latest") for image in loader), loader


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


def _docker_pattern(pattern: str) -> re.Pattern[str]:
    """One .dockerignore pattern as Docker's matcher reads it: `*` and `?` stay within a path segment, `**` spans
    segments (`**/` also none), `[...]` is a class; the pattern is cleaned and any leading `/` dropped."""
    pattern, regex, i = os.path.normpath(pattern).lstrip("/"), "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            regex, i = regex + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            regex, i = regex + ".*", i + 2
        elif pattern[i] == "[":
            end = pattern.index("]", i + 1)
            regex, i = regex + pattern[i : end + 1].replace("[!", "[^"), end + 1
        else:
            regex, i = regex + {"*": "[^/]*", "?": "[^/]"}.get(pattern[i], re.escape(pattern[i])), i + 1
    return re.compile(regex)


def dockerignore() -> list[tuple[bool, re.Pattern[str]]]:
    """(re-includes, pattern) per line of .dockerignore, in order."""
    lines = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()]
    return [(line.startswith("!"), _docker_pattern(line.removeprefix("!"))) for line in lines
            if line and not line.startswith("#")]


def sent_to_docker(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent folders decides; `!` re-includes."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for include, rule in rules:
        if any(rule.fullmatch(prefix) for prefix in prefixes):
            excluded = not include
    return not excluded


def test_docker_pattern_matcher_follows_dockers_rules() -> None:
    rules = [(False, _docker_pattern("*")), (True, _docker_pattern("src")), (False, _docker_pattern("**/*.py[cod]"))]
    assert not sent_to_docker("runs/a/b.pt", rules) and sent_to_docker("src/a/b.py", rules)
    assert not sent_to_docker("src/a/b.pyc", rules) and not sent_to_docker("srcx/b.py", rules)
    assert _docker_pattern("/a/*/c").fullmatch("a/b/c") and not _docker_pattern("a/*/c").fullmatch("a/b/x/c")


@pytest.mark.parametrize("path", [".venv/lib/python3.11/site-packages/torch/__init__.py", "runs/digits/model.onnx",
                                  "data/mnist/train.npz", ".git/objects/ab/cdef", "test-artifacts/serve.log",
                                  "tests/test_deploy.py", "docs/scaling.md", "deploy/k8s/serve.yaml",
                                  "src/dlforge/__pycache__/cli.cpython-311.pyc", "src/dlforge.egg-info/PKG-INFO"])
def test_build_context_leaves_out(path: str) -> None:
    assert not sent_to_docker(path, dockerignore())


def test_build_context_holds_every_copy_source_and_nothing_else_at_the_top() -> None:
    rules = dockerignore()
    sources = {s for name in ("Dockerfile.serve", "Dockerfile.train") for copy in _dockerfile(name)["COPY"]
               for s in copy.split()[:-1]}
    for source in sorted(sources):  # what a clean checkout holds there
        files = subprocess.run(["git", "ls-files", "--", source], cwd=ROOT, capture_output=True, text=True,
                               check=True).stdout.splitlines()
        assert files, f"COPY {source}: not in git"
        for f in files:
            assert sent_to_docker(f, rules), f"{f} (COPY {source}) is left out of the build context"
    tops = {s.split("/")[0] for s in sources}
    for entry in ROOT.iterdir():  # whatever else lies in this checkout (.venv, runs, data, ...) stays out
        if entry.name not in tops:
            assert not sent_to_docker(entry.name, rules), entry.name


def constraints() -> dict[str, Requirement]:
    lines = (DEPLOY / "constraints.txt").read_text().splitlines()
    pins = [Requirement(line) for line in lines if line.strip() and not line.startswith("#")]
    return {canonicalize_name(r.name): r for r in pins}


def _pinned_version(req: Requirement) -> str:
    (spec,) = req.specifier
    assert spec.operator == "==" and "*" not in spec.version and "+" not in spec.version, str(req)
    return spec.version


def test_constraints_pin_every_runtime_dependency_within_pyproject() -> None:
    import tomllib

    pins = constraints()
    assert "dlforge" not in pins
    for line in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]:
        req = Requirement(line)
        assert canonicalize_name(req.name) in pins, f"{req.name} is not pinned: run `make constraints`"
        version = _pinned_version(pins[canonicalize_name(req.name)])
        assert req.specifier.contains(version, prereleases=True), f"{req.name}=={version} breaks '{req}'"
    for req in pins.values():
        _pinned_version(req)


def _run_install(tmp_path: Path, *args: str, **env: str) -> tuple[subprocess.CompletedProcess[str], list[list[str]]]:
    """deploy/install.sh ARGS with an interpreter that only records its command lines (one list per pip call)."""
    log = tmp_path / "calls.jsonl"
    shim = tmp_path / "record-python"
    shim.write_text(f"#!{sys.executable}\nimport json, sys\n"
                    f"open({str(log)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n")
    shim.chmod(0o755)
    proc = subprocess.run(["bash", str(DEPLOY / "install.sh"), *args, str(ROOT)],
                          env={**os.environ, "PYTHON": str(shim), **env}, capture_output=True, text=True, timeout=60)
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return proc, calls


def test_install_passes_the_constraints_to_every_resolving_pip_call(tmp_path: Path) -> None:
    proc, calls = _run_install(tmp_path, "serve")
    assert proc.returncode == 0, proc.stderr
    requirements, itself = calls
    assert requirements[requirements.index("-c") + 1] == str(DEPLOY / "constraints.txt")
    assert "-r" in requirements and "--no-deps" in itself  # dlforge itself resolves nothing


@pytest.mark.parametrize(("variant", "index"), [(None, "https://download.pytorch.org/whl/cpu"),
                                                ("cu128", "https://download.pytorch.org/whl/cu128")])
def test_train_install_takes_torch_from_the_variant_index_at_the_pinned_version(
        tmp_path: Path, variant: str | None, index: str) -> None:
    """The command lines only: download.pytorch.org is out of reach here, so the torch step is not resolved."""
    proc, calls = _run_install(tmp_path, "train", **({"TORCH_VARIANT": variant} if variant else {}))
    assert proc.returncode == 0, proc.stderr
    torch_call, rest = calls
    assert torch_call[-3:] == ["--index-url", index, f"torch=={_pinned_version(constraints()['torch'])}"]
    assert rest[rest.index("-c") + 1] == str(DEPLOY / "constraints.txt") and rest[-1] == str(ROOT)
    assert "--index-url" not in rest  # the rest comes from the ordinary index


def test_train_install_refuses_an_unknown_torch_variant(tmp_path: Path) -> None:
    proc, calls = _run_install(tmp_path, "train", TORCH_VARIANT="cuda")
    assert proc.returncode == 2 and not calls
    assert "TORCH_VARIANT 'cuda'" in proc.stderr and "cu128" in proc.stderr


def _dry_run(kind: str, tmp_path: Path) -> dict[str, str]:
    """What deploy/install.sh KIND would install into an empty environment ({name: version}), resolved by pip.

    The script runs unchanged; the interpreter it is given turns each of its pip calls into a dry run with a report,
    except the train image's torch step: download.pytorch.org is out of reach here (its command line is checked
    above), so the next step resolves torch==X from the ordinary index instead.
    """
    shim = tmp_path / "python"
    shim.write_text(f'#!/bin/sh\ncase "$*" in *download.pytorch.org*) exit 0;; esac\n'
                    f'exec {sys.executable} "$@" --dry-run --ignore-installed --report "{tmp_path}/report-$$.json"\n')
    shim.chmod(0o755)
    proc = subprocess.run(["bash", str(DEPLOY / "install.sh"), kind, str(ROOT)],
                          env={**os.environ, "PYTHON": str(shim)}, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    reports = sorted(tmp_path.glob("report-*.json"))
    assert len(reports) == (2 if kind == "serve" else 1)
    return {canonicalize_name(i["metadata"]["name"]): i["metadata"]["version"]
            for report in reports for i in json.loads(report.read_text())["install"]}


def _public(version: str) -> str:
    return version.split("+")[0]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_train_pip_set_is_exactly_the_pinned_set(tmp_path: Path) -> None:
    """pip resolves the train install to the constraints, no more and no less: the file is a closed set."""
    resolved = _dry_run("train", tmp_path)
    pins = {name: _pinned_version(req) for name, req in constraints().items()}
    assert {name: _public(v) for name, v in resolved.items() if name != "dlforge"} == pins


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_serve_pip_set_has_no_torch_and_stays_under_400_mb(tmp_path: Path) -> None:
    """The serve image's pip set as pip resolves it; its installed size measured from this environment's files."""
    resolved = _dry_run("serve", tmp_path)
    assert "dlforge" in resolved and "onnxruntime" in resolved and "fastapi" in resolved
    pins = constraints()
    assert {n: v for n, v in resolved.items() if n != "dlforge"} == {n: _pinned_version(pins[n]) for n in resolved
                                                                      if n != "dlforge"}, "the pinned versions"
    assert not [n for n in resolved if n.startswith(("torch", "nvidia", "triton"))], sorted(resolved)
    total = 0
    for name in resolved:
        if name == "dlforge":
            continue
        files = metadata.distribution(name).files or []
        total += sum(f.locate().stat().st_size for f in files if Path(str(f.locate())).is_file())
    print(f"serve pip set: {len(resolved)} distributions, {total / 2**20:.0f} MiB installed")
    assert total < 400 * 2**20
