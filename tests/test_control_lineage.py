"""The control gets this run's ReST steps, not the starting policy's whole lineage.

A scheduled run starts from ``models:/NAME@champion``: a policy fine-tuned by earlier runs,
whose ``optimizer_steps_since_bc`` counts their steps too. The control (BC continued on
the references) must train for as many steps as *this* run's Improve steps took.
"""
import json
import os
import shutil

import pytest

import pipeline
from rest.services import registry
from rest.steps.finetune import run_steps
from rest.services.files import read_json
from rest.model.policy import POLICY_INFO, policy_info
from tests.servers import mlflow_server, s3_server  # noqa: F401  (fixtures)

MODEL = "rest-lineage"
EARLIER_STEPS = 5000  # what the champion's lineage records: far more than a tiny run takes


def test_run_steps_counts_only_this_run():
    assert run_steps({"optimizer_steps_since_bc": 0}, {"optimizer_steps_since_bc": 12}) == 12
    assert run_steps({"optimizer_steps_since_bc": 5000}, {"optimizer_steps_since_bc": 5007}) == 7
    assert run_steps({}, {}) == 0                       # a foreign model directory: no lineage at all
    # Every step rolled back: the last policy is the start, and the control gets no steps from it.
    assert run_steps({"optimizer_steps_since_bc": 40}, {"optimizer_steps_since_bc": 40}) == 0
    with pytest.raises(ValueError, match="does not descend"):
        run_steps({"optimizer_steps_since_bc": 50}, {"optimizer_steps_since_bc": 7})


@pytest.fixture
def champion(mlflow_server, tiny_policy, tmp_path, monkeypatch):
    """A registered champion whose lineage records EARLIER_STEPS fine-tuning steps."""
    from mlflow import MlflowClient

    start = str(tmp_path / "champion")
    shutil.copytree(tiny_policy, start)
    info = {**policy_info(tiny_policy), "kind": "rest", "improve_step": 3, "optimizer_steps": 700,
            "optimizer_steps_since_bc": EARLIER_STEPS}
    with open(os.path.join(start, POLICY_INFO), "w", encoding="utf-8") as f:
        json.dump(info, f)
    version = registry.register_policy(start, MODEL, mlflow_server.url)
    MlflowClient(mlflow_server.url).set_registered_model_alias(MODEL, "champion", version)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    monkeypatch.setenv("REST_MLFLOW_EXPERIMENT", "rest-lineage")
    return f"models:/{MODEL}@champion"


@pytest.mark.integration
@pytest.mark.pipeline
def test_run_from_champion_gives_the_control_only_this_runs_steps(champion, tiny_data, tmp_path):
    out = tmp_path / "run"
    rc = pipeline.main(["run-local", "--output-dir", str(out), "--train", tiny_data["train"],
                        "--valid", tiny_data["valid"], "--test", tiny_data["test"], "--policy", champion,
                        "--data.grow_sources", "12", "--sample.num_samples", "2", "--sample.max_length_ratio", "0.5",
                        "--filter.thresholds", "0.05", "--filter.keep_references", "true", "--finetune.epochs", "1",
                        "--loop.register", "false", "--loop.model_name", MODEL])
    assert rc == 0
    rows = read_json(str(out / "summary.json"))["steps"]
    infos = {r["label"]: policy_info(r["model_path"]) for r in rows}
    start = next(i for label, i in infos.items() if label.startswith("bc"))
    assert start["optimizer_steps_since_bc"] == EARLIER_STEPS  # the run did start from the champion
    rest_steps = [i for label, i in infos.items() if label.startswith("rest ")]
    control = next(i for r, i in zip(rows, infos.values()) if r.get("control"))
    this_run = sum(i["optimizer_steps"] for i in rest_steps)
    assert 0 < this_run < EARLIER_STEPS
    assert rest_steps[-1]["optimizer_steps_since_bc"] == EARLIER_STEPS + this_run
    # The control was asked for, and took, exactly this run's steps.
    assert control["target_steps"] == this_run
    assert control["optimizer_steps"] == this_run
