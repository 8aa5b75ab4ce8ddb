"""The tiny pipeline against a real `mlflow server` and a real S3 server, checked from outside."""
import json
import os

import pytest

import pipeline
from rest.services import registry
from rest.services.files import read_json
from rest.services.storage import ArtifactStore
from tests.servers import mlflow_server, s3_server  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.integration, pytest.mark.pipeline]
MODEL = "rest-it"


def tiny_args(tiny_data, tiny_policy, out):
    return ["run-local", "--output-dir", str(out), "--train", tiny_data["train"], "--valid", tiny_data["valid"],
            "--test", tiny_data["test"], "--policy", tiny_policy, "--data.grow_sources", "12",
            "--sample.num_samples", "2", "--sample.max_length_ratio", "0.5", "--filter.thresholds", "0.05,0.1",
            "--filter.keep_references", "true", "--finetune.epochs", "1", "--loop.model_name", MODEL]


@pytest.fixture
def servers_env(monkeypatch, s3_server, mlflow_server):
    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("REST_S3_BUCKET", "rest-it")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    monkeypatch.setenv("REST_MLFLOW_EXPERIMENT", "rest-it")
    ArtifactStore(s3_server.settings(bucket="rest-it")).ensure_bucket()
    return s3_server, mlflow_server


def test_unreachable_store_fails_first_and_a_rerun_completes_traceably(servers_env, tiny_data, tiny_policy,
                                                                        tmp_path, capfd):
    s3, server = servers_env
    # 1. Object store down: the validate task fails before any compute, naming the endpoint.
    s3.stop()
    try:
        with pytest.raises(RuntimeError, match="validate-op"):
            pipeline.main(tiny_args(tiny_data, tiny_policy, tmp_path / "down"))
    finally:
        s3.start()
    captured = capfd.readouterr()
    assert s3.endpoint in captured.out + captured.err  # kfp.local relays the task's log to stdout

    # 2. Store back: the same command completes.
    out = tmp_path / "run"
    assert pipeline.main(tiny_args(tiny_data, tiny_policy, out)) == 0
    summary = read_json(str(out / "summary.json"))
    run_id = os.environ["REST_PIPELINE_RUN"]

    # Objects are in the bucket with the digests the steps computed.
    store = ArtifactStore(s3.settings(bucket="rest-it"))
    keys = [k for k in store.list(f"runs/{run_id}/")]
    assert any("/filtered/" in k for k in keys) and any("/policy/" in k for k in keys)
    manifests = [k for k in keys if k.endswith("_MANIFEST.json")]
    assert manifests
    for m in manifests:
        prefix = m[: -len("/_MANIFEST.json")]
        local = store.get_dir(prefix, str(tmp_path / "check" / prefix))  # checks every object's digest
        assert os.listdir(local)

    # MLflow: one parent run with nested step runs, per-step metrics and plots.
    from mlflow import MlflowClient

    client = MlflowClient(server.url)
    exp = client.get_experiment_by_name("rest-it")
    runs = client.search_runs([exp.experiment_id], filter_string=f"tags.`rest.pipeline_run` = '{run_id}'")
    parents = [r for r in runs if r.data.tags.get("rest.role") == "pipeline"]
    steps = {r.data.tags.get("rest.step"): r for r in runs if r.data.tags.get("rest.role") == "step"}
    assert len(parents) == 1
    parent = parents[0]
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in steps.values())
    assert {"validate", "prepare", "bootstrap", "grow-1/sample", "grow-1/score", "grow-1/improve-2/finetune",
            "summarize", "register"} <= set(steps)
    assert "kept_fraction" in steps["grow-1/improve-1/filter"].data.metrics
    assert "test_chrf" in steps["grow-1/improve-2/evaluate"].data.metrics
    assert len(client.get_metric_history(steps["grow-1/improve-1/finetune"].info.run_id, "train_loss")) >= 1
    filter_files = {f.path for f in client.list_artifacts(steps["grow-1/improve-1/filter"].info.run_id)}
    assert "reward_histogram.png" in filter_files
    parent_files = {f.path for f in client.list_artifacts(parent.info.run_id)}
    assert {"curves.png", "summary.json"} <= parent_files
    assert parent.data.params["filter.thresholds"] == "0.05,0.1"
    assert steps["grow-1/sample"].inputs.dataset_inputs  # the grown set is recorded as a dataset input

    # The registered model loads by alias and translates.
    import mlflow

    mlflow.set_tracking_uri(server.url)
    model = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
    out_text = model.predict(["Wählen Sie Datei - Speichern."])
    assert isinstance(out_text[0], str)
    champion = client.get_model_version_by_alias(MODEL, "champion")
    assert champion.tags["rest.pipeline_run"] == run_id

    # The same policy registered again is not significantly better: champion stays, challenger set.
    final_policy = summary["steps"][-2]["model_path"]
    version = registry.register_policy(final_policy, MODEL, server.url, tags={"rest.note": "same again"})
    test_rows = [{"id": str(k), "source": s, "target": t} for k, (_, s, t) in enumerate(
        line.rstrip("\n").split("\t") for line in open(tiny_data["test"], encoding="utf-8").readlines()[1:])]
    decision = registry.promote(MODEL, version, test_rows, server.url)
    assert decision["promoted"] is False
    assert client.get_model_version_by_alias(MODEL, "champion").version == champion.version
    assert client.get_model_version_by_alias(MODEL, "challenger").version == version
    json.dumps(decision)  # the evidence is plain data
