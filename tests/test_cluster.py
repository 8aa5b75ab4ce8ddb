"""rest_kfp.cluster: config validation, and what apply_cluster_settings puts into compiled YAML."""
# No `from __future__ import annotations`: kfp reads component annotations as real types.

import pytest
import yaml
from kfp import compiler, dsl

from rest_kfp import cluster
from rest_kfp.cluster import ClusterConfig, apply_cluster_settings, load_cluster_config
from rest.config import ConfigError

SECRET_VALUES = ("s3cr3t-access-VALUE-9x", "s3cr3t-secret-VALUE-7y", "mlflow-pw-VALUE-3z")


@dsl.component(base_image="python:3.11-slim")
def _light(x: int) -> int:
    return x + 1


@dsl.component(base_image="python:3.11-slim")
def _heavy(x: int) -> int:
    return x * 2


def _compile(cfg: ClusterConfig, tmp_path) -> tuple[dict, dict, str]:
    @dsl.pipeline(name="cluster-settings-probe")
    def probe(x: int = 1):
        a = _light(x=x).set_display_name("merge")
        apply_cluster_settings(a, "merge", cfg)
        b = _heavy(x=a.output).set_display_name("finetune")
        apply_cluster_settings(b, "finetune", cfg)
        c = _light(x=b.output).set_display_name("register")
        apply_cluster_settings(c, "register", cfg)

    path = tmp_path / "probe.yaml"
    compiler.Compiler().compile(probe, str(path))
    text = path.read_text()
    docs = list(yaml.safe_load_all(text))
    assert len(docs) == 2, "pipeline spec + platform spec"
    return docs[0], docs[1], text


def _executor(spec: dict, component: str) -> dict:
    """The container of the executor used by task ``component`` (compiled task name)."""
    comp = spec["root"]["dag"]["tasks"][component]["componentRef"]["name"]
    exec_label = spec["components"][comp]["executorLabel"]
    return spec["deploymentSpec"]["executors"][exec_label]["container"]


def _gpu_config(**kw) -> ClusterConfig:
    return ClusterConfig(
        image="registry.example/rest:1.2.3",
        resources={"finetune": {"accelerator_type": "nvidia.com/gpu", "accelerator_count": 1,
                                "memory_limit": "24Gi"}},
        node_selector={"pool": "ml"},
        accelerator_node_selector={"gpu": "a100"},
        tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        mlflow_secret="rest-mlflow-auth",
        caching={"merge": False},
        **kw,
    )


def test_compiled_yaml_has_resources_secrets_scheduling_caching(tmp_path, monkeypatch):
    for i, v in enumerate(SECRET_VALUES):  # values that must never leak into the package
        monkeypatch.setenv(f"REST_TEST_SECRET_{i}", v)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_VALUES[1])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", SECRET_VALUES[2])
    spec, platform, text = _compile(_gpu_config(), tmp_path)
    for v in SECRET_VALUES:
        assert v not in text

    tasks = spec["root"]["dag"]["tasks"]
    names = {t["taskInfo"]["name"]: k for k, t in tasks.items()}
    merge, finetune, register = names["merge"], names["finetune"], names["register"]

    # Resources: light defaults for merge, heavy defaults + GPU override for finetune.
    fin = _executor(spec, finetune)
    assert fin["image"] == "registry.example/rest:1.2.3"
    r = fin["resources"]
    assert r["cpuRequest"] == 2 and r["cpuLimit"] == 4
    assert r["memoryRequest"] == pytest.approx(8 * 2**30 / 1e9, rel=1e-3)
    assert r["memoryLimit"] == pytest.approx(24 * 2**30 / 1e9, rel=1e-3)
    assert r["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert str(r["accelerator"]["resourceCount"]) == "1"
    mer = _executor(spec, merge)
    assert mer["resources"]["cpuLimit"] == 1 and "accelerator" not in mer["resources"]
    env = {e["name"]: e["value"] for e in mer["env"]}
    assert env["REST_S3_ENDPOINT"] == "http://rest-minio:9000"
    assert env["REST_S3_BUCKET"] == "rest"
    assert env["MLFLOW_TRACKING_URI"] == "http://rest-mlflow:5000"
    assert "AWS_SECRET_ACCESS_KEY" not in env and "AWS_ACCESS_KEY_ID" not in env

    # Caching: merge turned off, finetune default on, register always off.
    assert tasks[merge]["cachingOptions"].get("enableCache", False) is False
    assert tasks[finetune]["cachingOptions"]["enableCache"] is True
    assert tasks[register]["cachingOptions"].get("enableCache", False) is False

    # Platform spec: secret references by name/key, node selector, tolerations, labels.
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    fin_k8s = executors[spec["components"][tasks[finetune]["componentRef"]["name"]]["executorLabel"]]
    mer_k8s = executors[spec["components"][tasks[merge]["componentRef"]["name"]]["executorLabel"]]
    refs = {(s["secretName"], kv["secretKey"], kv["envVar"])
            for s in fin_k8s["secretAsEnv"] for kv in s["keyToEnv"]}
    assert ("rest-s3-credentials", "access-key", "AWS_ACCESS_KEY_ID") in refs
    assert ("rest-s3-credentials", "secret-key", "AWS_SECRET_ACCESS_KEY") in refs
    assert ("rest-mlflow-auth", "username", "MLFLOW_TRACKING_USERNAME") in refs
    assert ("rest-mlflow-auth", "password", "MLFLOW_TRACKING_PASSWORD") in refs
    assert fin_k8s["nodeSelector"]["labels"] == {"pool": "ml", "gpu": "a100"}
    assert mer_k8s["nodeSelector"]["labels"] == {"pool": "ml"}  # no GPU, no GPU pool
    assert fin_k8s["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert fin_k8s["podMetadata"]["labels"] == {"rest-kubeflow/pipeline-pod": "true"}
    assert fin_k8s["imagePullPolicy"] == "IfNotPresent"


def test_no_mlflow_secret_by_default(tmp_path):
    spec, platform, _ = _compile(ClusterConfig(image="x.io/rest:1"), tmp_path)
    for ex in platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"].values():
        assert {s["secretName"] for s in ex["secretAsEnv"]} == {"rest-s3-credentials"}


def test_component_image_env(monkeypatch):
    monkeypatch.delenv("REST_IMAGE", raising=False)
    assert cluster.component_image() == cluster.DEFAULT_IMAGE == "ghcr.io/rest-kubeflow/rest:0.1.0"
    monkeypatch.setenv("REST_IMAGE", "my.registry/rest:2.0.0")
    assert cluster.component_image() == "my.registry/rest:2.0.0"
    assert ClusterConfig().image == "my.registry/rest:2.0.0"


def test_unknown_step_gets_default_resources():
    cfg = ClusterConfig(image="x.io/rest:1")
    assert cfg.step_resources("something-new") == cluster.StepResources()
    assert cfg.step_resources("sample").memory_limit == "16Gi"
    assert not cfg.step_caching("register") and cfg.step_caching("score")


@pytest.mark.parametrize("kwargs, needle", [
    ({"image": "x.io/rest:latest"}, "cluster.image"),
    ({"image": "x.io/rest"}, "pin a version"),
    ({"resources": {"sample": {"cpu_request": "8", "cpu_limit": "4"}}}, "cluster.resources.sample.cpu_request"),
    ({"resources": {"sample": {"memory_limit": "lots"}}}, "memory quantity"),
    ({"resources": {"sample": {"accelerator_count": 1}}}, "accelerator_type"),
    ({"resources": {"sample": {"gpus": 1}}}, "unknown setting"),
    ({"tolerations": [{"key": "a", "operator": "Maybe"}]}, "Equal or Exists"),
    ({"node_selector": {"pool": True}}, "quote"),
    ({"image_pull_policy": "Sometimes"}, "IfNotPresent"),
    ({"s3_bucket": "Bad_Bucket"}, "cluster.s3_bucket"),
    ({"caching": {"sample": "no"}}, "true/false"),
])
def test_validation_names_field_and_fix(kwargs, needle):
    kwargs.setdefault("image", "x.io/rest:1")
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        ClusterConfig(**kwargs)


def test_load_yaml_and_example(tmp_path):
    import os
    example = os.path.join(os.path.dirname(os.path.dirname(__file__)), "manifests", "cluster-config.example.yaml")
    cfg = load_cluster_config(example)
    assert cfg.step_resources("finetune").cpu_limit
    p = tmp_path / "c.yaml"
    p.write_text("image: x.io/rest:1\nresources:\n  sample: {cpu_limit: 8}\n")
    cfg = load_cluster_config(str(p))
    assert cfg.step_resources("sample").cpu_limit == "8"
    assert cfg.step_resources("sample").memory_limit == "16Gi"  # the rest stays default
    p.write_text("imagee: x.io/rest:1\n")
    with pytest.raises(ConfigError, match="unknown setting.*imagee"):
        load_cluster_config(str(p))
    with pytest.raises(ConfigError, match="not found"):
        load_cluster_config(str(tmp_path / "missing.yaml"))
    assert load_cluster_config(None).s3_secret == "rest-s3-credentials"
