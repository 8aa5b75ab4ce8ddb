"""rest.services.tracking against the embedded sqlite store, and once against a real mlflow server."""
from __future__ import annotations

import json
import os

import pytest

from rest.services import tracking
from tests.servers import mlflow_server, s3_server  # noqa: F401  (fixtures)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _exercise(uri: str, tmp_path) -> dict:
    """Run two steps of one pipeline run and a step of another; return ids for checks."""
    data = tmp_path / "grown.jsonl"
    rows = [{"id": f"s{k}", "source": f"Quelle {k}", "candidate": f"cand {k}", "reward": k / 20}
            for k in range(20)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with tracking.step_run(uri, "rest-test", "pipe-1", "sample", tags={"g": 1}) as sample:
        params = tracking.log_config(sample, {"sample": {"temperature": 0.8, "num_samples": 4},
                                              "filter": {"thresholds": [0.5, 0.6]},
                                              "finetune": {"batch_tokens": 6000},
                                              "storage": {"aws_secret_access_key": "hunter2", "api_token": "x"}})
        tracking.log_metrics(sample, {"reward_mean": 0.47, "n": 20, "label": "skip-me", "none": None}, step=1)
        tracking.log_dataset(sample, str(data), "s3://rest/runs/pipe-1/1/0/grown.jsonl",
                             "ab" * 32, "grown", context="training")
        tracking.log_dataset(sample, None, "s3://rest/runs/pipe-1/0/0/test.jsonl", "cd" * 32, "test", "evaluation")
        picked = tracking.log_sample_table(sample, rows, thresholds=[0.5], per_group=3)
        hist = tracking.reward_histogram([r["reward"] for r in rows], [0.5, 0.6], str(tmp_path / "hist.png"))
        tracking.log_artifact(sample, hist, "plots")
    with tracking.step_run(uri, "rest-test", "pipe-1", "evaluate") as evaluate:
        curves = tracking.curves_plot(
            [{"g": 0, "i": 0, "reward": 0.47, "chrf": 45.0, "bleu": 22.0},
             {"g": 1, "i": 1, "test_reward": 0.48, "chrf": 45.5, "bleu": 22.4},
             {"g": 1, "i": 2, "reward": 0.49, "chrf": 46.0},
             {"kind": "control", "label": "references only", "reward": 0.494, "chrf": 46.2, "bleu": 23.0}],
            str(tmp_path / "curves.png"))
        tracking.log_artifact(evaluate, curves, "plots")
    with pytest.raises(RuntimeError, match="boom"):
        with tracking.step_run(uri, "rest-test", "pipe-1", "finetune") as failing:
            raise RuntimeError("boom")
    with tracking.step_run(uri, "rest-test", "pipe-2", "sample") as other:
        pass
    return {"sample": sample, "evaluate": evaluate, "failing": failing, "other": other, "params": params,
            "picked": picked, "hist": hist, "curves": curves}


def _check(uri: str, ids: dict, tmp_path) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)  # a fresh client: what an outside viewer sees
    sample, evaluate, failing = ids["sample"], ids["evaluate"], ids["failing"]
    parent = sample.parent_run_id
    assert evaluate.parent_run_id == parent == failing.parent_run_id != ids["other"].parent_run_id
    prun = client.get_run(parent)
    assert prun.data.tags[tracking.PIPELINE_TAG] == "pipe-1" and prun.data.tags[tracking.ROLE_TAG] == "pipeline"
    children = client.search_runs([sample.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent}'")
    assert sorted(r.data.tags["rest.step"] for r in children) == ["evaluate", "finetune", "sample"]
    assert client.get_run(failing.run_id).info.status == "FAILED"

    run = client.get_run(sample.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["g"] == "1"
    assert run.data.params["sample.temperature"] == "0.8"
    assert run.data.params["filter.thresholds"] == "0.5,0.6"
    assert not any("secret" in k or "api_token" in k for k in run.data.params)
    assert "hunter2" not in json.dumps(run.data.params) and run.data.params["finetune.batch_tokens"] == "6000"
    assert run.data.metrics == {"reward_mean": 0.47, "n": 20.0}
    inputs = {d.dataset.name: d for d in run.inputs.dataset_inputs}
    assert set(inputs) == {"grown", "test"}
    assert "s3://rest/runs/pipe-1/1/0/grown.jsonl" in inputs["grown"].dataset.source
    assert {t.key: t.value for t in inputs["test"].tags}["rest.sha256"] == "cd" * 32
    assert {t.key: t.value for t in inputs["test"].tags}["mlflow.data.context"] == "evaluation"
    assert json.loads(inputs["grown"].dataset.profile)["num_rows"] == 20

    groups = [r["group"] for r in ids["picked"]]
    assert groups.count("best") == 3 and groups.count("worst") == 3 and groups.count("borderline@0.5") == 3
    assert ids["picked"][0]["reward"] == 0.95

    names = {a.path for a in client.list_artifacts(sample.run_id)}
    assert "samples.json" in names
    plots = [a.path for a in client.list_artifacts(sample.run_id, "plots")]
    assert plots == ["plots/hist.png"]
    local = client.download_artifacts(evaluate.run_id, "plots/curves.png", str(tmp_path))
    with open(local, "rb") as f:
        assert f.read(8) == PNG_MAGIC
    with open(ids["hist"], "rb") as f:
        assert f.read(8) == PNG_MAGIC


def test_embedded_store_parent_nested_and_artifacts(tmp_path):
    uri = tracking.embedded_uri(str(tmp_path / "store"))
    ids = _exercise(uri, tmp_path)
    _check(uri, ids, tmp_path)
    # Artifacts stay beside the database, not in the current directory.
    assert os.path.isdir(tmp_path / "store" / "artifacts")
    # The same pipeline run found again: no second parent.
    assert tracking.pipeline_parent_run(uri, "rest-test", "pipe-1") == ids["sample"].parent_run_id


def test_explicit_parent_run_id(tmp_path):
    from mlflow import MlflowClient

    uri = tracking.embedded_uri(str(tmp_path / "store"))
    client = MlflowClient(tracking_uri=uri)
    exp = tracking.get_or_create_experiment(client, uri, "given")
    given = client.create_run(exp).info.run_id
    with tracking.step_run(uri, "given", "pipe-x", "evaluate", parent_run_id=given) as step:
        pass
    assert step.parent_run_id == given
    assert client.get_run(step.run_id).data.tags["mlflow.parentRunId"] == given


def test_tracking_uri_from_env(tmp_path):
    assert tracking.tracking_uri_from_env({"MLFLOW_TRACKING_URI": "http://mlflow:5000"}) == "http://mlflow:5000"
    assert tracking.tracking_uri_from_env({}, default_dir=str(tmp_path)) == f"sqlite:///{tmp_path}/mlflow.db"


def test_plots_handle_empty_input(tmp_path):
    assert tracking.reward_histogram([], [0.5], str(tmp_path / "h.png"))
    assert tracking.curves_plot([], str(tmp_path / "c.png"))
    for name in ("h.png", "c.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG_MAGIC


@pytest.mark.integration
def test_against_real_mlflow_server(mlflow_server, tmp_path):
    ids = _exercise(mlflow_server.url, tmp_path)
    _check(mlflow_server.url, ids, tmp_path)


@pytest.mark.parametrize("state, status", [("SUCCEEDED", "FINISHED"), ("FAILED", "FAILED"), ("CANCELLED", "KILLED")])
def test_exit_task_ends_the_parent_with_the_pipelines_state(tmp_path, monkeypatch, state, status):
    from mlflow import MlflowClient

    from rest_kfp.runtime import finish_pipeline

    uri = tracking.embedded_uri(str(tmp_path / "store"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("REST_MLFLOW_EXPERIMENT", "rest-test")
    monkeypatch.setenv("REST_PIPELINE_RUN", "pipe-end")
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    with tracking.step_run(uri, "rest-test", "pipe-end", "validate") as step:
        pass
    client = MlflowClient(tracking_uri=uri)
    assert client.get_run(step.parent_run_id).info.status == "RUNNING"  # until the exit task ends it
    assert finish_pipeline(state, "Task exit-handler-1 failed.") == status
    parent = client.get_run(step.parent_run_id)
    assert parent.info.status == status and parent.info.end_time
    assert ("rest.error" in parent.data.tags) == (status != "FINISHED")


def test_exit_task_leaves_a_handed_in_run_and_no_tracking_alone(tmp_path, monkeypatch):
    from mlflow import MlflowClient

    from rest_kfp.runtime import finish_pipeline

    uri = tracking.embedded_uri(str(tmp_path / "store"))
    client = MlflowClient(tracking_uri=uri)
    owned = client.create_run(tracking.get_or_create_experiment(client, uri, "rest-test")).info.run_id
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_RUN_ID", owned)
    assert finish_pipeline("SUCCEEDED") is None
    assert client.get_run(owned).info.status == "RUNNING"  # KFP's MLflow integration ends it
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.delenv("MLFLOW_RUN_ID")
    assert finish_pipeline("FAILED") is None  # tracking off: nothing to end, no error
