"""manifests/: every overlay renders, validates against the Kubernetes schemas, and is locked down."""
from __future__ import annotations

import functools
import os
import shutil
import subprocess

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OVERLAYS = ["dev", "prod"]
# The newest schemas kubernetes-validate 1.37.0 ships (see kubernetes_validate.latest_version()).
K8S_VERSION = "1.37.0"
WORKLOADS = {"Deployment", "StatefulSet", "Job", "CronJob", "Pod", "DaemonSet", "ReplicaSet"}

pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (with kustomize) not installed")


@functools.lru_cache(maxsize=None)
def render(overlay: str) -> tuple[dict, ...]:
    out = subprocess.run(["kubectl", "kustomize", os.path.join(ROOT, "manifests", "overlays", overlay)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return tuple(d for d in yaml.safe_load_all(out.stdout) if d)


def all_objects():
    return [(o, d) for o in OVERLAYS for d in render(o)]


def _id(param):
    overlay, obj = param
    return f"{overlay}:{obj['kind']}/{obj['metadata']['name']}"


def pod_spec(obj: dict) -> dict:
    if obj["kind"] == "Pod":
        return obj["spec"]
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return obj["spec"]["template"]["spec"]


def containers(spec: dict) -> list[dict]:
    return spec.get("initContainers", []) + spec.get("containers", []) + spec.get("ephemeralContainers", [])


WORKLOAD_OBJECTS = [p for p in all_objects() if p[1]["kind"] in WORKLOADS] if shutil.which("kubectl") else []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_expected_objects(overlay):
    kinds = {(d["kind"], d["metadata"]["name"]) for d in render(overlay)}
    for needed in [("StatefulSet", "rest-minio"), ("Service", "rest-minio"), ("Job", "rest-minio-setup"),
                   ("Deployment", "rest-mlflow"), ("Service", "rest-mlflow"), ("ServiceAccount", "rest-pipeline"),
                   ("Role", "rest-pipeline"), ("RoleBinding", "rest-pipeline"),
                   ("NetworkPolicy", "rest-minio"), ("NetworkPolicy", "rest-mlflow")]:
        assert needed in kinds, f"{overlay} lacks {needed}"
    assert all(d["metadata"].get("namespace") for d in render(overlay)), "every object lands in one namespace"


def test_dev_generates_placeholder_secrets_prod_expects_existing():
    dev = {d["metadata"]["name"]: d for d in render("dev") if d["kind"] == "Secret"}
    assert set(dev) == {"rest-minio-root", "rest-s3-credentials"}
    assert set(dev["rest-s3-credentials"]["data"]) == {"access-key", "secret-key"}
    assert not [d for d in render("prod") if d["kind"] == "Secret"], "prod must use existing Secrets"


def test_backend_store_per_overlay():
    def mlflow_args(overlay):
        (dep,) = [d for d in render(overlay) if d["kind"] == "Deployment" and d["metadata"]["name"] == "rest-mlflow"]
        return " ".join(dep["spec"]["template"]["spec"]["containers"][0]["args"]), dep
    dev_args, _ = mlflow_args("dev")
    prod_args, prod = mlflow_args("prod")
    assert "sqlite:////mlflow/" in dev_args and "--artifacts-destination=s3://" in dev_args
    assert "postgresql://" in prod_args and "sqlite" not in prod_args
    assert ("StatefulSet", "rest-postgres") in {(d["kind"], d["metadata"]["name"]) for d in render("prod")}
    assert "rest-mlflow-db" not in yaml.safe_dump(prod), "prod MLflow must not mount the sqlite volume"
    assert not [d for d in render("prod") if d["kind"] == "PersistentVolumeClaim"]


@pytest.mark.parametrize("param", all_objects() if shutil.which("kubectl") else [], ids=_id)
def test_validates_strictly(param):
    import kubernetes_validate

    _, obj = param
    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_validator_catches_unknown_fields():
    """Guard against a silently permissive validator (e.g. a missing schema version)."""
    import kubernetes_validate

    (dep,) = [d for d in render("dev") if d["kind"] == "Deployment"]
    bad = yaml.safe_load(yaml.safe_dump(dep))
    bad["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


@pytest.mark.parametrize("param", WORKLOAD_OBJECTS, ids=_id)
def test_pod_security(param):
    _, obj = param
    spec = pod_spec(obj)
    psc = spec.get("securityContext", {})
    assert psc.get("runAsNonRoot") is True
    assert psc.get("seccompProfile", {}).get("type") == "RuntimeDefault"
    assert spec.get("automountServiceAccountToken") is False, "servers do not call the Kubernetes API"
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    for c in containers(spec):
        where = f"{obj['kind']}/{obj['metadata']['name']}/{c['name']}"
        sc = c.get("securityContext", {})
        assert sc.get("allowPrivilegeEscalation") is False, where
        assert sc.get("readOnlyRootFilesystem") is True, where
        assert sc.get("capabilities", {}).get("drop") == ["ALL"], where
        assert not sc.get("capabilities", {}).get("add"), where
        assert sc.get("privileged") in (None, False), where
        assert sc.get("runAsUser", psc.get("runAsUser", 1)) != 0, where
        res = c.get("resources", {})
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(res.get(kind, {})), f"{where}: {kind} needs cpu and memory"
        # A read-only root needs a writable /tmp.
        tmp = [m for m in c.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
        assert tmp and "emptyDir" in volumes[tmp[0]["name"]], f"{where}: mount an emptyDir at /tmp"


@pytest.mark.parametrize("param", WORKLOAD_OBJECTS, ids=_id)
def test_images_pinned(param):
    _, obj = param
    for c in containers(pod_spec(obj)):
        image = c["image"]
        last = image.rsplit("/", 1)[-1]
        assert "@sha256:" in image or ":" in last, f"{image}: no tag"
        assert last.rsplit(":", 1)[-1] != "latest", f"{image}: latest"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_admit_only_pipeline_pods(overlay):
    from rest_kfp.cluster import PIPELINE_POD_LABEL

    pols = {d["metadata"]["name"]: d for d in render(overlay) if d["kind"] == "NetworkPolicy"}
    label = dict([PIPELINE_POD_LABEL])

    def sources(name):
        return [peer.get("podSelector", {}).get("matchLabels") for rule in pols[name]["spec"]["ingress"]
                for peer in rule["from"]]
    for peers in (sources("rest-minio"), sources("rest-mlflow")):
        assert all(p is not None for p in peers), "no namespace-wide or IP-block peers"
    assert label in sources("rest-minio") and {"app.kubernetes.io/name": "rest-mlflow"} in sources("rest-minio")
    assert sources("rest-mlflow") == [label]
    # Each policy selects the server it protects.
    servers = {d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"]
               for d in render(overlay) if d["kind"] in ("Deployment", "StatefulSet")}
    for pol in pols.values():
        assert pol["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"] in servers


def test_services_match_cluster_config_defaults():
    from rest_kfp.cluster import ClusterConfig

    cfg = ClusterConfig(image="x.io/rest:1")
    dev = render("dev")
    svc = {d["metadata"]["name"]: d for d in dev if d["kind"] == "Service"}
    assert cfg.s3_endpoint == f"http://rest-minio:{svc['rest-minio']['spec']['ports'][0]['port']}"
    assert cfg.mlflow_tracking_uri == f"http://rest-mlflow:{svc['rest-mlflow']['spec']['ports'][0]['port']}"
    (settings,) = [d for d in dev if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "rest-settings"]
    assert settings["data"]["bucket"] == cfg.s3_bucket and settings["data"]["s3-endpoint"] == cfg.s3_endpoint
    assert f"arn:aws:s3:::{cfg.s3_bucket}/*" in settings["data"]["bucket-policy.json"]
    (secret,) = [d for d in dev if d["kind"] == "Secret" and d["metadata"]["name"] == cfg.s3_secret]
    assert {cfg.s3_access_key_key, cfg.s3_secret_key_key} == set(secret["data"])
