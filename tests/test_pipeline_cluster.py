"""The real ReST pipeline compiled with cluster settings: secrets, resources, GPUs, sharded Grow."""
import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

import pipeline
from rest.cluster import ClusterConfig, StepResources
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
