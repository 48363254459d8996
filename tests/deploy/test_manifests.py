"""deploy/: every built-in Kubernetes kind validated offline (``kubernetes-validate``, strict,
schemas shipped in the package), KubeRay's kinds checked field by field, the compose file
parsed, and every ``fleetmine`` command the manifests run present in the CLI."""

from __future__ import annotations

import copy
import shlex
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import typer
import yaml
from typer.testing import CliRunner

from fleetmine import app

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
K8S = DEPLOY / "k8s"
K8S_VERSION = "1.33.0"  # a version kubernetes-validate ships schemas for; no network needed
NOT_BUILT_IN = {"ray.io", "kustomize.config.k8s.io"}
NOT_APPLIED_BY_KUSTOMIZE = {"kustomization.yaml", "secrets.yaml", "rayjob-ingest.yaml"}
Doc = dict[str, Any]


def _documents() -> list[tuple[str, Doc]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        docs += [(path.name, d) for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


DOCS = _documents()


def _group(doc: Doc) -> str:
    api = str(doc["apiVersion"])
    return api.split("/")[0] if "/" in api else ""


def _id(item: tuple[str, Doc]) -> str:
    name, doc = item
    meta = doc.get("metadata", {})
    return f"{name}:{doc['kind']}/{meta.get('name') or meta.get('generateName', '')}"


BUILT_IN = [d for d in DOCS if _group(d[1]) not in NOT_BUILT_IN]


def _kind(kind: str) -> list[Doc]:
    return [d for _, d in DOCS if d["kind"] == kind]


def _one(kind: str) -> Doc:
    (doc,) = _kind(kind)
    return doc


def _pod_specs(doc: Doc) -> list[Doc]:
    """Every pod spec in a manifest, built-in or KubeRay."""
    spec = doc.get("spec", {})
    match doc["kind"]:
        case "Deployment" | "Job":
            return [spec["template"]["spec"]]
        case "CronJob":
            return [spec["jobTemplate"]["spec"]["template"]["spec"]]
        case "RayCluster":
            return [g["template"]["spec"] for g in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]]
        case "RayJob" if "rayClusterSpec" in spec:
            return _pod_specs({"kind": "RayCluster", "spec": spec["rayClusterSpec"]})
    return []


# -- built-in kinds ------------------------------------------------------------------------


@pytest.mark.parametrize("item", BUILT_IN, ids=[_id(d) for d in BUILT_IN])
def test_built_in_kind_validates(item: tuple[str, Doc]) -> None:
    kubernetes_validate.validate(item[1], K8S_VERSION, strict=True)


def test_validation_is_real_and_offline() -> None:
    """A typo fails strict validation against the shipped schemas (so a pass above means something)."""
    bad = copy.deepcopy(next(d for _, d in DOCS if d["kind"] == "Deployment"))
    bad["spec"]["replica"] = bad["spec"].pop("replicas")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


def test_every_kind_is_one_we_check() -> None:
    kinds = {d["kind"] for _, d in DOCS}
    assert {"RayCluster", "RayJob", "CronJob", "Deployment", "Service", "Secret", "ConfigMap"} <= kinds
    assert {d["kind"] for _, d in DOCS if _group(d) in NOT_BUILT_IN} <= {
        "RayCluster",
        "RayJob",
        "Kustomization",
    }


# -- KubeRay kinds -----------------------------------------------------------------------


def _check_pod_template(template: Doc, where: str) -> None:
    containers = template.get("spec", {}).get("containers")
    assert containers, f"{where}: template needs spec.containers"
    assert all(c.get("name") and c.get("image") for c in containers), f"{where}: container name and image"
    # KubeRay passes the template through to the pods: it must be a valid PodTemplateSpec
    wrapped = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"}, "template": template}
    kubernetes_validate.validate(wrapped, K8S_VERSION, strict=True)


def _check_cluster_spec(spec: Doc, where: str) -> None:
    head = spec.get("headGroupSpec")
    assert isinstance(head, dict), f"{where}: headGroupSpec"
    assert isinstance(head.get("rayStartParams"), dict), f"{where}: headGroupSpec.rayStartParams"
    _check_pod_template(head.get("template", {}), f"{where}.headGroupSpec")
    groups = spec.get("workerGroupSpecs")
    assert groups, f"{where}: workerGroupSpecs"
    for g in groups:
        name = g.get("groupName")
        assert name, f"{where}: every worker group needs groupName"
        for key in ("replicas", "minReplicas", "maxReplicas"):
            assert isinstance(g.get(key), int), f"{where}.{name}: {key} must be an integer"
        assert g["minReplicas"] <= g["replicas"] <= g["maxReplicas"], (
            f"{where}.{name}: min <= replicas <= max"
        )
        assert isinstance(g.get("rayStartParams", {}), dict)
        _check_pod_template(g.get("template", {}), f"{where}.{name}")
    for params in [head["rayStartParams"], *(g.get("rayStartParams", {}) for g in groups)]:
        assert all(isinstance(v, str) for v in params.values()), "rayStartParams values are strings"


def _limits(group: Doc) -> dict[str, Any]:
    return dict(group["template"]["spec"]["containers"][0]["resources"]["limits"])


def test_raycluster_head_autoscaling_cpu_and_optional_gpu_groups() -> None:
    cluster = _one("RayCluster")
    assert cluster["apiVersion"] == "ray.io/v1"
    spec = cluster["spec"]
    _check_cluster_spec(spec, "RayCluster")
    assert spec["enableInTreeAutoscaling"] is True
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    cpu, gpu = groups["cpu"], groups["gpu"]
    assert cpu["maxReplicas"] > cpu["minReplicas"], "the CPU group autoscales"
    assert "nvidia.com/gpu" not in _limits(cpu)
    assert gpu["minReplicas"] == 0 and gpu["replicas"] == 0, "the GPU group is optional: zero until asked"
    assert int(_limits(gpu)["nvidia.com/gpu"]) >= 1
    assert spec["authOptions"]["mode"] == "token"


def test_rayjob_runs_ingest_on_the_cluster() -> None:
    job = _one("RayJob")
    spec = job["spec"]
    assert isinstance(spec.get("entrypoint"), str) and spec["entrypoint"].strip()
    assert shlex.split(spec["entrypoint"])[:2] == ["fleetmine", "ingest"]
    assert "rayClusterSpec" in spec or "clusterSelector" in spec, (
        "RayJob needs rayClusterSpec or clusterSelector"
    )
    if "rayClusterSpec" in spec:
        _check_cluster_spec(spec["rayClusterSpec"], "RayJob.rayClusterSpec")
    else:
        assert spec["clusterSelector"]["ray.io/cluster"] == _one("RayCluster")["metadata"]["name"]


# -- how the pieces fit --------------------------------------------------------------------


def test_api_deployment_two_replicas_probed_on_health_behind_a_service() -> None:
    (api,) = [d for d in _kind("Deployment") if d["metadata"]["name"] == "fleetmine-api"]
    assert api["spec"]["replicas"] == 2
    (container,) = api["spec"]["template"]["spec"]["containers"]
    assert container["args"][:3] == ["serve", "--host", "0.0.0.0"]
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] == "/v1/health", probe
    labels = api["spec"]["template"]["metadata"]["labels"]
    (svc,) = [s for s in _kind("Service") if s["metadata"]["name"] == "fleetmine-api"]
    assert svc["spec"]["selector"].items() <= labels.items()
    ports = {p["name"] for p in container["ports"]}
    assert all(p["targetPort"] in ports for p in svc["spec"]["ports"])


def test_every_config_and_secret_reference_exists() -> None:
    defined = {(d["kind"], d["metadata"]["name"]): d for _, d in DOCS if d["kind"] in ("ConfigMap", "Secret")}
    cluster = _one("RayCluster")
    token = cluster["spec"]["authOptions"]["secretName"]
    assert "auth_token" in defined[("Secret", token)]["stringData"], "KubeRay reads the token from auth_token"
    for _, doc in DOCS:
        for pod in _pod_specs(doc):
            for c in pod["containers"]:
                for ref in c.get("envFrom", []):
                    if "configMapRef" in ref:
                        assert ("ConfigMap", ref["configMapRef"]["name"]) in defined
                    if "secretRef" in ref:
                        assert ("Secret", ref["secretRef"]["name"]) in defined
                for env in c.get("env", []):
                    key_ref = env.get("valueFrom", {}).get("secretKeyRef")
                    if key_ref:
                        secret = defined[("Secret", key_ref["name"])]
                        assert key_ref["key"] in secret["stringData"], f"{key_ref} names a missing key"


def test_kustomization_applies_every_manifest_but_the_one_offs() -> None:
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kust["resources"])
    assert all((K8S / r).exists() for r in listed)
    assert listed == {p.name for p in K8S.glob("*.yaml")} - NOT_APPLIED_BY_KUSTOMIZE


def test_dockerfile_slim_non_root_with_healthcheck() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    froms = [line for line in lines if line.startswith("FROM ")]
    assert all("-slim" in line for line in froms)
    assert any("pip install ." in line for line in lines)
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    assert any(line.startswith("HEALTHCHECK") for line in lines)
    assert 'ENTRYPOINT ["fleetmine"]' in lines


# -- compose -------------------------------------------------------------------------------

COMPOSE = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
SERVICES: dict[str, Doc] = COMPOSE["services"]


def _is_fleetmine(svc: Doc) -> bool:
    return str(svc.get("image", "")).startswith("fleetmine")


def test_compose_services() -> None:
    assert {"minio", "ray-head", "ray-worker", "api", "scheduler"} <= set(SERVICES)
    for name, svc in SERVICES.items():
        assert svc.get("image") or svc.get("build"), f"{name} has neither image nor build"
    api = SERVICES["api"]
    assert api["deploy"]["replicas"] == 2
    assert "/v1/health" in " ".join(api["healthcheck"]["test"])
    assert api["command"][:3] == ["serve", "--host", "0.0.0.0"]
    for name, svc in SERVICES.items():
        if _is_fleetmine(svc):
            env = svc["environment"]
            assert env["FLEETMINE_LAKE"] == "s3://fleet/lake", name
            assert env["AWS_ENDPOINT_URL"] == "http://minio:9000", name
    init = " ".join(SERVICES["create-buckets"]["entrypoint"])
    assert "mc mb" in init and "fleet/fleet" in init


# -- every fleetmine command used exists ---------------------------------------------------


def _invocations() -> list[tuple[str, list[str]]]:
    found = []
    for name, svc in SERVICES.items():
        if _is_fleetmine(svc) and "entrypoint" not in svc and svc.get("command") != ["--help"]:
            found.append((f"compose:{name}", [str(a) for a in svc["command"]]))
    for file, doc in DOCS:
        if doc["kind"] == "RayJob":
            argv = shlex.split(doc["spec"]["entrypoint"])
            assert argv[0] == "fleetmine"
            found.append((f"{file}:RayJob", argv[1:]))
        for pod in _pod_specs(doc) if doc["kind"] != "RayCluster" else []:
            for c in pod["containers"]:
                if c["image"].startswith("fleetmine") and "command" not in c:
                    found.append((f"{file}:{doc['kind']}/{c['name']}", [str(a) for a in c["args"]]))
    return found


INVOCATIONS = _invocations()


def _is_group(cmd: Any) -> bool:
    return hasattr(cmd, "commands")  # typer vendors click: duck-type its Group


def _resolve(argv: list[str]) -> tuple[list[str], Any, list[str]]:
    """The command path in ``argv`` (``lake maintain``), its command object, and the rest."""
    cmd: Any = typer.main.get_command(app)
    path, rest = [], list(argv)
    while _is_group(cmd) and rest and not rest[0].startswith("-"):
        sub = cmd.commands.get(rest[0])
        if sub is None:
            break
        path.append(rest.pop(0))
        cmd = sub
    return path, cmd, rest


def test_invocations_found() -> None:
    where = {w.split(":")[0] for w, _ in INVOCATIONS}
    assert {"compose", "api.yaml", "scheduler.yaml", "ingest-cronjob.yaml", "rayjob-ingest.yaml"} <= where


@pytest.mark.parametrize("argv", [a for _, a in INVOCATIONS], ids=[w for w, _ in INVOCATIONS])
def test_fleetmine_command_exists(argv: list[str]) -> None:
    path, cmd, rest = _resolve(argv)
    if not path or _is_group(cmd):  # every command the manifests run exists: a removed one fails
        pytest.fail(f"`fleetmine {' '.join(argv)}`: no such command")
    result = CliRunner().invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    known = {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)}
    for flag in (a.split("=")[0] for a in rest if a.startswith("--")):
        assert flag in known, f"`fleetmine {' '.join(path)}` has no option {flag}"
