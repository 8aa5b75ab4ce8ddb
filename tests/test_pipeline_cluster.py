"""The real ReST pipeline compiled with cluster settings: secrets, resources, GPUs, sharded Grow."""
import re

import pytest
import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

import pipeline
from rest_kfp.cluster import ClusterConfig, StepResources
from rest.config import load_config


def compile_for_cluster(tmp_path, monkeypatch, shards=3):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-VALUE-never-in-yaml")
    cluster = ClusterConfig(
        resources={"finetune": StepResources(cpu_request="4", cpu_limit="8", memory_request="16Gi",
                                             memory_limit="32Gi", accelerator_type="nvidia.com/gpu",
                                             accelerator_count=2)},
        tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        node_selector={"pool": "rest"})
    cfg = load_config(None, {"sample.num_shards": str(shards), "filter.thresholds": "0.5,0.6"})
    path = tmp_path / "rest.yaml"
    pipeline.compile_pipeline(cfg, str(path), cluster)
    text = path.read_text()
    docs = list(yaml.safe_load_all(text))
    return text, docs


def test_cluster_settings_reach_every_task_of_the_real_pipeline(tmp_path, monkeypatch):
    text, docs = compile_for_cluster(tmp_path, monkeypatch)
    assert len(docs) == 2  # pipeline spec + kubernetes platform spec
    assert "s3cr3t-VALUE-never-in-yaml" not in text
    spec = json_format.ParseDict(docs[0], pipeline_spec_pb2.PipelineSpec())
    executors = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    # Every component's pod takes the S3 keys from the Secret and knows its run id from its label.
    assert len(executors) == len(spec.deployment_spec.fields["executors"].struct_value.fields)
    for name, ex in executors.items():
        secret_refs = {s["secretName"] for s in ex.get("secretAsEnv", [])}
        assert "rest-s3-credentials" in secret_refs, name
        assert any(f["name"] == "REST_PIPELINE_RUN" for f in ex.get("fieldPathAsEnv", [])), name
    finetune = next(ex for n, ex in executors.items() if n.startswith("exec-finetune-op"))
    assert finetune["nodeSelector"]["labels"]["pool"] == "rest"
    assert finetune["tolerations"][0]["key"] == "nvidia.com/gpu"
    containers = {n: e["container"] for n, e in docs[0]["deploymentSpec"]["executors"].items()}
    ft = containers["exec-finetune-op"]
    assert ft["resources"]["accelerator"]["resourceCount"] == "2"
    assert ft["resources"]["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert ft["resources"]["resourceCpuLimit"] == "8"


def test_grow_is_sharded_across_parallel_tasks_and_merged(tmp_path, monkeypatch):
    _, docs = compile_for_cluster(tmp_path, monkeypatch, shards=3)
    root = docs[0]["components"]["comp-exit-handler-1"]["dag"]["tasks"]  # the body, inside the exit handler
    loops = {k: t for k, t in root.items() if "parameterIterator" in t}
    assert len(loops) == 1
    (loop_key, loop), = loops.items()
    assert loop["parameterIterator"]["items"]["raw"] == "[0, 1, 2]"  # three sampling pods at once
    merge = next(t for t in root.values() if t["taskInfo"]["name"] == "grow-1/merge")
    assert merge["inputs"]["artifacts"]["shards"]["taskOutputArtifact"]["producerTask"] == loop_key
    score = next(t for t in root.values() if t["taskInfo"]["name"] == "grow-1/score")
    assert "merge" in score["inputs"]["artifacts"]["grown"]["taskOutputArtifact"]["producerTask"]


def _task_config(docs, display):
    """The run-config section a task of the compiled pipeline receives (its `config` parameter)."""
    root = docs[0]["components"]["comp-exit-handler-1"]["dag"]["tasks"]
    task = next(t for t in root.values() if t["taskInfo"]["name"] == display)
    return task["inputs"]["parameters"]["config"]["runtimeValue"]["constant"], task


def test_gpu_requests_and_devices_agree_in_the_compiled_pipeline(tmp_path, monkeypatch):
    """A step given nvidia.com/gpu computes on it: its config says device auto (cuda in a pod that sees a
    GPU), processes auto (one per GPU); the control trains on finetune's GPUs; validate leaves the device
    check to this compile step (its pod has no GPU)."""
    _, docs = compile_for_cluster(tmp_path, monkeypatch, shards=1)
    containers = {n: e["container"] for n, e in docs[0]["deploymentSpec"]["executors"].items()}
    for executor in ("exec-finetune-op", "exec-control-op"):
        acc = containers[executor]["resources"]["accelerator"]
        assert (acc["resourceType"], acc["resourceCount"]) == ("nvidia.com/gpu", "2"), executor
    for executor in ("exec-sample-op", "exec-evaluate-op", "exec-validate-op"):
        assert "accelerator" not in containers[executor].get("resources", {}), executor
    finetune, _ = _task_config(docs, "grow-1/improve-1/finetune")
    assert (finetune["device"], finetune["processes"], finetune["precision"]) == ("auto", "auto", "auto")
    _, validate = _task_config(docs, "validate")
    assert validate["inputs"]["parameters"]["check_devices"]["runtimeValue"]["constant"] is False


@pytest.mark.parametrize("overrides, resources, needle", [
    ({"finetune.device": "cpu"}, {"finetune": 1}, "finetune.device: is cpu but cluster.resources.finetune requests 1"),
    ({"sample.device": "cuda"}, {}, "sample.device: is cuda but cluster.resources.sample requests 0"),
    ({"evaluate.device": "cuda:1"}, {"evaluate": 1}, "evaluate.device: is cuda:1 but cluster.resources.evaluate"),
    ({"finetune.processes": "4"}, {"finetune": 2}, "finetune.processes: is 4 but cluster.resources.finetune"),
])
def test_a_device_the_pod_is_not_given_fails_the_compile(tmp_path, overrides, resources, needle):
    from rest.config import ConfigError

    cluster = ClusterConfig(resources={step: StepResources(accelerator_type="nvidia.com/gpu", accelerator_count=n)
                                       for step, n in resources.items()})
    cfg = load_config(None, overrides)
    with pytest.raises(ConfigError, match=re.escape(needle)):
        pipeline.compile_pipeline(cfg, str(tmp_path / "rest.yaml"), cluster)


def _tasks_by_name(docs):
    """display name -> (task dict, executor label) over every DAG of the compiled spec."""
    out = {}
    for comp in [docs[0]["root"], *docs[0]["components"].values()]:
        for t in comp.get("dag", {}).get("tasks", {}).values():
            out[t["taskInfo"]["name"]] = t
    return out


def test_pods_run_non_root_with_tmp_timeouts_and_retries(tmp_path, monkeypatch):
    """What manifests/ promise, in the compiled YAML: uid 1000 non-root, /tmp an emptyDir (the only
    place a step writes besides its outputs), a deadline per step, retries with backoff."""
    _, docs = compile_for_cluster(tmp_path, monkeypatch, shards=1)
    executors = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for name, ex in executors.items():
        assert ex["securityContext"] == {"runAsUser": "1000", "runAsGroup": "1000", "runAsNonRoot": True}, name
        assert ex["emptyDirMounts"] == [{"mountPath": "/tmp", "sizeLimit": "20Gi", "volumeName": "tmp"}], name
        assert int(ex["activeDeadlineSeconds"]) > 0, name
    deadline = {name.removeprefix("exec-"): int(ex["activeDeadlineSeconds"]) for name, ex in executors.items()}
    assert deadline["finetune-op"] == 43200 and deadline["filter-op"] == 1800 and deadline["evaluate-op"] == 7200
    tasks = _tasks_by_name(docs)
    retry = tasks["grow-1/improve-1/finetune"]["retryPolicy"]
    assert retry == {"maxRetryCount": 2, "backoffDuration": "60s", "backoffFactor": 2.0, "backoffMaxDuration": "1800s"}
    # Side effects outside the run are never retried blindly.
    assert "retryPolicy" not in tasks["register"] and "retryPolicy" not in tasks["finish"]


def test_cluster_config_rejects_unknown_steps_and_root(tmp_path):
    from rest.config import ConfigError

    with pytest.raises(ConfigError, match="cluster.timeouts.finetunee: no such step"):
        ClusterConfig(timeouts={"finetunee": 60})
    with pytest.raises(ConfigError, match="cluster.resources.promte: no such step"):
        ClusterConfig(resources={"promte": {"cpu_limit": "2"}})
    with pytest.raises(ConfigError, match="cluster.run_as_user: must be a non-root UID"):
        ClusterConfig(run_as_user=0)
    assert ClusterConfig(timeouts={"sample": 600}).step_timeout("sample") == 600
