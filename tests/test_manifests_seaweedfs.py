"""manifests/components/seaweedfs: SeaweedFS's S3 gateway instead of MinIO, as locked down as the rest.

The overlay ``manifests/overlays/seaweedfs`` (dev + the component) and prod + the component
render, validate strictly against the Kubernetes schemas, keep the project's S3 endpoint
(Service ``rest-minio:9000``), drop every MinIO object, and pass the same pod-security rules
as the MinIO overlays (tests/test_manifests.py).
"""
from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
K8S_VERSION = "1.37.0"  # as tests/test_manifests.py
COMPONENT = os.path.join(ROOT, "manifests", "components", "seaweedfs")

pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (with kustomize) not installed")


@functools.lru_cache(maxsize=None)
def render(variant: str) -> tuple[dict, ...]:
    """``dev``: manifests/overlays/seaweedfs; ``prod``: overlays/prod + the component."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        if variant == "dev":
            target = os.path.join(ROOT, "manifests", "overlays", "seaweedfs")
        else:
            target = tmp
            with open(os.path.join(tmp, "kustomization.yaml"), "w", encoding="utf-8") as f:
                yaml.safe_dump({"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
                                "namespace": "rest-prod",
                                "resources": [os.path.relpath(os.path.join(ROOT, "manifests", "overlays", "prod"), tmp)],
                                "components": [os.path.relpath(COMPONENT, tmp)]}, f)
        out = subprocess.run(["kubectl", "kustomize", target], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return tuple(d for d in yaml.safe_load_all(out.stdout) if d)


def by_kind(variant: str, kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in render(variant) if d["kind"] == kind}


VARIANTS = ["dev", "prod"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_minio_swapped_for_seaweedfs(variant):
    objs = render(variant)
    kinds = {(d["kind"], d["metadata"]["name"]) for d in objs}
    assert ("StatefulSet", "rest-seaweedfs") in kinds
    assert ("StatefulSet", "rest-minio") not in kinds and ("Job", "rest-minio-setup") not in kinds
    assert not [d for d in objs if "minio/" in yaml.safe_dump(d)], "no MinIO image left"
    assert all(d["metadata"].get("namespace") for d in objs), "every object lands in one namespace"
    assert all(d["metadata"].get("labels", {}).get("app.kubernetes.io/part-of") == "rest-kubeflow" for d in objs)
    # The MLflow server and its backend store are those of the overlay it builds on.
    assert ("Deployment", "rest-mlflow") in kinds


@pytest.mark.parametrize("variant", VARIANTS)
def test_s3_endpoint_unchanged_and_points_at_the_gateway(variant):
    svc = by_kind(variant, "Service")["rest-minio"]
    assert [(p["name"], p["port"], p["targetPort"]) for p in svc["spec"]["ports"]] == [("s3", 9000, "s3")]
    sts = by_kind(variant, "StatefulSet")["rest-seaweedfs"]
    assert svc["spec"]["selector"] == sts["spec"]["template"]["metadata"]["labels"]
    (c,) = sts["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"s3": 8333}
    assert "-s3" in c["args"] and "-s3.config=/config/s3.json" in c["args"]
    settings = by_kind(variant, "ConfigMap")["rest-settings"]["data"]
    assert settings["s3-endpoint"] == "http://rest-minio:9000"  # the cluster config default, unchanged


@pytest.mark.parametrize("variant", VARIANTS)
def test_network_policy_opens_only_the_s3_port_to_pipeline_pods_and_mlflow(variant):
    pol = by_kind(variant, "NetworkPolicy")["rest-minio"]
    assert pol["spec"]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "rest-seaweedfs"}
    (rule,) = pol["spec"]["ingress"]
    assert [p["port"] for p in rule["ports"]] == [8333]
    peers = [p["podSelector"]["matchLabels"] for p in rule["from"]]
    assert peers == [{"rest-kubeflow/pipeline-pod": "true"}, {"app.kubernetes.io/name": "rest-mlflow"}]


@pytest.mark.parametrize("variant", VARIANTS)
def test_identities_rendered_from_the_secrets(variant):
    """The init container writes the S3 identities from Secrets into a memory volume; the
    pipeline's identity is limited to the project's bucket."""
    sts = by_kind(variant, "StatefulSet")["rest-seaweedfs"]
    spec = sts["spec"]["template"]["spec"]
    (init,) = spec["initContainers"]
    env = {e["name"]: e["valueFrom"] for e in init["env"]}
    assert env["ROOT_USER"]["secretKeyRef"]["name"] == "rest-minio-root"
    assert env["PIPELINE_ACCESS_KEY"]["secretKeyRef"] == {"name": "rest-s3-credentials", "key": "access-key"}
    assert env["PIPELINE_SECRET_KEY"]["secretKeyRef"] == {"name": "rest-s3-credentials", "key": "secret-key"}
    script = init["args"][0]
    config = script[script.index("{"): script.rindex("}") + 1]
    for k, v in {"$ROOT_USER": "root", "$ROOT_PASSWORD": "rootpw", "$PIPELINE_ACCESS_KEY": "ak",
                 "$PIPELINE_SECRET_KEY": "sk", "$BUCKET": "rest"}.items():
        config = config.replace(k, v)
    identities = {i["name"]: i for i in json.loads(config)["identities"]}
    assert identities["rest-pipeline"]["credentials"] == [{"accessKey": "ak", "secretKey": "sk"}]
    assert all(a.endswith(":rest") for a in identities["rest-pipeline"]["actions"])
    assert "Admin" in identities["admin"]["actions"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["s3-config"]["emptyDir"].get("medium") == "Memory"


@pytest.mark.parametrize("variant", VARIANTS)
def test_validates_strictly(variant):
    import kubernetes_validate

    for obj in render(variant):
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


@pytest.mark.parametrize("variant", VARIANTS)
def test_pod_security_and_pinned_images(variant):
    """The same rules tests/test_manifests.py applies to every workload of the MinIO overlays."""
    for obj in render(variant):
        if obj["kind"] not in ("Deployment", "StatefulSet", "Job"):
            continue
        spec = obj["spec"]["template"]["spec"]
        psc = spec.get("securityContext", {})
        assert psc.get("runAsNonRoot") is True and psc.get("seccompProfile", {}).get("type") == "RuntimeDefault"
        assert spec.get("automountServiceAccountToken") is False
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for c in spec.get("initContainers", []) + spec["containers"]:
            where = f"{obj['kind']}/{obj['metadata']['name']}/{c['name']}"
            sc = c.get("securityContext", {})
            assert sc.get("allowPrivilegeEscalation") is False, where
            assert sc.get("readOnlyRootFilesystem") is True, where
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], where
            assert sc.get("runAsUser", psc.get("runAsUser", 1)) != 0, where
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c.get("resources", {}).get(kind, {})), f"{where}: {kind}"
            tmp = [m for m in c.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
            assert tmp and "emptyDir" in volumes[tmp[0]["name"]], f"{where}: mount an emptyDir at /tmp"
            last = c["image"].rsplit("/", 1)[-1]
            assert ":" in last and last.rsplit(":", 1)[-1] != "latest", f"{where}: {c['image']} not pinned"
