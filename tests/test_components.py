"""Component tier: each KFP component's Python function called in-process on tiny artifacts.

Between the core's unit tests and the kfp.local pipeline runs: the wrappers' own logic
(which files they read, what metadata and metrics they record, how a learned reward or a
previous report is threaded through) runs here without a pipeline around it. Artifacts are
real ``kfp.dsl`` artifacts whose URIs are local directories, as kfp.local gives them.
"""
from __future__ import annotations

import json
import os

import pytest
from kfp import dsl

import components
from rest.config import RunConfig, load_config


def artifact(kind, path, metadata=None):
    return kind(name=os.path.basename(path), uri=str(path), metadata=dict(metadata or {}))


@pytest.fixture(autouse=True)
def no_services(monkeypatch):
    """No MLflow, no object store: each step runs on its own, as in a run with tracking off."""
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "REST_S3_ENDPOINT", "MLFLOW_S3_ENDPOINT_URL"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("REST_PIPELINE_RUN", "component-tier")


@pytest.fixture(scope="module")
def run_config() -> dict:
    cfg = load_config(None, {"data.grow_sources": "8", "sample.num_samples": "2", "sample.max_length_ratio": "0.5",
                             "filter.thresholds": "0.05,0.1", "finetune.epochs": "1",
                             # a tiny random model's samples score about 0: only the references pass
                             "filter.keep_references": "true"})
    assert isinstance(cfg, RunConfig)
    return cfg.to_dict()


def test_components_chain_on_tiny_artifacts(tmp_path, tiny_data, tiny_policy, run_config):
    cfg = run_config
    data = artifact(dsl.Dataset, tmp_path / "data")
    components.prepare_op.python_func(config=cfg["data"], train=tiny_data["train"], valid=tiny_data["valid"],
                                      test=tiny_data["test"], data=data)
    assert data.metadata["grow_rows"] == 8 and data.metadata["sha256"]

    bc = artifact(dsl.Model, tmp_path / "bc")
    components.bootstrap_op.python_func(config=cfg["bootstrap"], reward="chrf", initial_policy=tiny_policy,
                                        data=data, policy=bc)
    assert bc.metadata["trained"] is False and bc.metadata["kind"] == "bc" and bc.metadata["sha256"]

    grown = artifact(dsl.Dataset, tmp_path / "grown")
    components.sample_op.python_func(config=cfg["sample"], grow_step=1, shard_index=0, num_shards=1, policy=bc,
                                     data=data, grown=grown)
    # 8 sources x (2 samples + the reference)
    assert sum(1 for _ in open(tmp_path / "grown" / "data.jsonl", encoding="utf-8")) == 8 * 3

    scored = artifact(dsl.Dataset, tmp_path / "scored")
    components.score_op.python_func(config=cfg["score"], grow_step=1, grown=grown, scored=scored)
    assert scored.metadata["rows"] == 24 and scored.metadata["reward"] == "chrf1"
    assert scored.metadata["sample_wall_s"] > 0  # Grow's time rides along to the summary

    filtered = artifact(dsl.Dataset, tmp_path / "filtered")
    f = dict(cfg["filter"], thresholds=cfg["filter"]["thresholds"][:1])
    components.filter_op.python_func(config=f, grow_step=1, improve_step=1, scored=scored, filtered=filtered)
    assert 0 < filtered.metadata["kept_fraction"] <= 1
    assert set(filtered.metadata["tasks"]) == {"grow-1/sample", "grow-1/score", "grow-1/improve-1/filter"}
    assert os.path.isfile(tmp_path / "filtered" / "reward_histogram.png")
    assert json.load(open(tmp_path / "filtered" / "examples.json", encoding="utf-8"))

    improved = artifact(dsl.Model, tmp_path / "improved")
    components.finetune_op.python_func(config=cfg["finetune"], score_config=cfg["score"], on_reward_hacking="warn",
                                       hacking_tolerance=0.002, grow_step=1, improve_step=1, policy=bc,
                                       filtered=filtered, data=data, improved=improved)
    assert improved.metadata["optimizer_steps"] > 0 and improved.metadata["g"] == 1
    assert improved.metadata["reward_hacking"] is False

    def evaluate(policy, label, g, i, previous, name, **kw):
        report = artifact(dsl.Artifact, tmp_path / name / "report")
        metrics = artifact(dsl.Metrics, tmp_path / name / "metrics")
        os.makedirs(tmp_path / name, exist_ok=True)
        components.evaluate_op.python_func(config=cfg["evaluate"], score_config=cfg["score"], label=label,
                                           grow_step=g, improve_step=i, policy=policy, data=data, metrics=metrics,
                                           report=report, previous_report=previous, **kw)
        return report, metrics

    report, metrics = evaluate(bc, "bc", 0, 0, None, "eval-bc", is_control=False)
    assert set(metrics.metadata) >= {"test_bleu", "test_chrf", "test_reward"}
    report, _ = evaluate(improved, "rest g1 i1", 1, 1, report, "eval-1", is_control=False, filtered=filtered)

    control = artifact(dsl.Model, tmp_path / "control")
    components.control_op.python_func(config=cfg["finetune"], score_config=cfg["score"], on_reward_hacking="warn",
                                      hacking_tolerance=0.002, improve_steps=1, bc_policy=bc, last_policy=improved,
                                      data=data, control=control)
    # The control trains for exactly as many optimizer steps as the Improve steps took.
    assert control.metadata["optimizer_steps"] == improved.metadata["optimizer_steps"]
    report, _ = evaluate(control, "control (references only)", 0, 0, report, "eval-control", is_control=True)

    summary = artifact(dsl.Artifact, tmp_path / "summary")
    table = artifact(dsl.Markdown, tmp_path / "table.md")
    curves = artifact(dsl.HTML, tmp_path / "curves.html")
    components.summarize_op.python_func(config=cfg, report=report, summary=summary, table=table, curves=curves)
    result = json.load(open(tmp_path / "summary" / "summary.json", encoding="utf-8"))
    assert [(s["g"], s["i"], s["control"]) for s in result["steps"]] == [(0, 0, False), (1, 1, False), (0, 0, True)]
    tasks = {t["task"] for t in result["timing"]["tasks"]}
    assert {"grow-1/sample", "grow-1/improve-1/finetune", "control/finetune", "control/evaluate"} <= tasks
    assert open(tmp_path / "table.md", encoding="utf-8").read().startswith("| policy |")


def test_a_component_outside_the_step_table_is_refused():
    from rest_kfp.runtime import step

    with pytest.raises(ValueError, match="not in the step table"):
        with step("finetunee"):
            pass
