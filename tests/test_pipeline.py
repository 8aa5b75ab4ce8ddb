"""The pipeline's shape (compiled) and a real tiny ReST run through kfp.local."""
import json
import os

import pytest
import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

import pipeline
from rest.config import load_config

FIXED_TASKS = {"validate", "prepare", "bootstrap", "evaluate-bc", "control/finetune", "control/evaluate", "summarize",
               "register"}


def compiled_spec(tmp_path, overrides):
    path = str(tmp_path / "p.yaml")
    pipeline.compile_pipeline(load_config(None, overrides), path)
    with open(path) as f:
        docs = list(yaml.safe_load_all(f))
    return json_format.ParseDict(docs[0], pipeline_spec_pb2.PipelineSpec())


def body_tasks(spec):
    """The pipeline's tasks: all inside the exit handler (the root holds only it and the exit task)."""
    return spec.components["comp-exit-handler-1"].dag.tasks


def test_exit_task_ends_the_run_after_everything_else(tmp_path):
    spec = compiled_spec(tmp_path, {})
    root = {t.task_info.name: t for t in spec.root.dag.tasks.values()}
    assert set(root) == {"rest", "finish"}  # "rest": the exit handler group holding every other task
    finish = root["finish"]
    # Runs when the body finished, whatever its state, and is told that state; never from cache.
    assert finish.trigger_policy.strategy == finish.trigger_policy.TriggerStrategy.ALL_UPSTREAM_TASKS_COMPLETED
    assert finish.inputs.parameters["status"].task_final_status.producer_task == "exit-handler-1"
    assert not finish.caching_options.enable_cache
    summarize = next(t for t in body_tasks(spec).values() if t.task_info.name == "summarize")
    assert not summarize.caching_options.enable_cache


@pytest.mark.parametrize("G, thresholds", [(1, "0.5,0.6,0.7"), (2, "0.5,0.6"), (3, "0.5,0.6,0.7,0.8")])
def test_compiled_loop_has_G_times_2_plus_3I_tasks(tmp_path, G, thresholds):
    spec = compiled_spec(tmp_path, {"loop.grow_steps": str(G), "filter.thresholds": thresholds})
    I = len(thresholds.split(","))
    names = [t.task_info.name for t in body_tasks(spec).values()]
    loop = [n for n in names if n.startswith("grow-")]
    assert len(loop) == G * (2 + 3 * I)
    assert set(names) - set(loop) == FIXED_TASKS
    assert f"grow-{G}/improve-{I}/finetune" in names
    assert spec.pipeline_info.name == pipeline.PIPELINE_NAME


def test_filter_tasks_only_see_thresholds_up_to_their_step(tmp_path):
    spec = compiled_spec(tmp_path, {"filter.thresholds": "0.5,0.6,0.7"})
    by_name = {t.task_info.name: t for t in body_tasks(spec).values()}
    for i in (1, 2, 3):
        cfg = json_format.MessageToDict(by_name[f"grow-1/improve-{i}/filter"].inputs.parameters["config"])
        assert cfg["runtimeValue"]["constant"]["thresholds"] == [0.5, 0.6, 0.7][:i]


@pytest.mark.parametrize("rule", ["warn", "rollback"])
def test_control_gets_the_same_reward_hacking_rule_as_the_improve_steps(tmp_path, rule):
    spec = compiled_spec(tmp_path, {"loop.on_reward_hacking": rule})
    by_name = {t.task_info.name: t for t in body_tasks(spec).values()}
    for name in ("grow-1/improve-1/finetune", "control/finetune"):
        value = json_format.MessageToDict(by_name[name].inputs.parameters["on_reward_hacking"])
        assert value["runtimeValue"]["constant"] == rule, name


@pytest.mark.pipeline
def test_tiny_rest_run_through_kfp_local(tmp_path, tiny_data, tiny_policy):
    out = tmp_path / "run"
    rc = pipeline.main([
        "run-local", "--no-tracking", "--output-dir", str(out), "--train", tiny_data["train"], "--valid", tiny_data["valid"],
        "--test", tiny_data["test"], "--source-column", "de", "--target-column", "en", "--policy", tiny_policy,
        "--data.grow_sources", "12", "--sample.num_samples", "2", "--sample.max_length_ratio", "0.5",
        "--filter.thresholds", "0.05,0.1", "--filter.keep_references", "true", "--finetune.epochs", "1",
        "--sample.num_shards", "2",  # Grow fans out over two sampling tasks and merges them
        "--evaluate.best_of_n", "4"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    steps = summary["steps"]
    assert [(s["g"], s["i"], s["control"]) for s in steps] == [(0, 0, False), (1, 1, False), (1, 2, False),
                                                              (0, 0, True)]
    for s in steps:
        for key in ("test_bleu", "test_chrf", "test_reward", "kept_fraction", "wall_s", "model_path"):
            assert key in s
        assert os.path.isfile(os.path.join(s["model_path"], "config.json"))
    assert 0 < steps[1]["kept_fraction"] <= 1
    curve = steps[1]["best_of_n_curve"]  # every evaluation reports best-of-1, 2, 4
    assert sorted(curve, key=int) == ["1", "2", "4"] and curve["1"] <= curve["2"] <= curve["4"]
    # The control trains for as many optimizer steps as the Improve steps did together.
    assert steps[3]["optimizer_steps"] == steps[2]["optimizer_steps"] > 0
    assert (out / "summary.md").read_text().startswith("| policy |")
    # The verdict's paired-bootstrap intervals, from the per-sentence outputs the reports carried.
    v = summary["verdict"]
    n_test = steps[0]["test_sentences"]
    assert v["test_sentences"] == n_test > 0
    for base in ("bc", "control"):
        for key in ("test_chrf", "test_reward", "test_bleu"):
            r = v["significance"][base][key]
            lo, hi = r["delta_ci"]
            assert lo <= hi and 0 < r["p_value"] <= 1
            assert r["delta"] == pytest.approx(steps[2][key] - steps[3 if base == "control" else 0][key], abs=1e-6)
        assert v[f"beats_{base}"] == (v["significance"][base]["test_chrf"]["delta_ci"][0] > 0
                                      and v["significance"][base]["test_reward"]["delta_ci"][0] > 0)
    md = (out / "summary.md").read_text()
    assert "| last ReST step vs | metric | Δ | 95 % interval | p |" in md and "| control | reward |" in md
    # Every task's wall time, each counted once, with its share of the total.
    tasks = {t["task"]: t for t in summary["timing"]["tasks"]}
    assert set(tasks) == {"bootstrap", "evaluate-bc", "grow-1/sample", "grow-1/score", "grow-1/improve-1/filter",
                          "grow-1/improve-1/finetune", "grow-1/improve-1/evaluate", "grow-1/improve-2/filter",
                          "grow-1/improve-2/finetune", "grow-1/improve-2/evaluate", "control/finetune",
                          "control/evaluate", "summarize"}
    assert all(tasks[k]["wall_s"] > 0 for k in tasks if k != "bootstrap")  # the given policy is not trained
    assert sum(t["share"] for t in tasks.values()) == pytest.approx(1.0)
    assert "| grow-1/sample |" in md and "register (runs after summarize)" in md


def test_learned_reward_without_a_model_adds_its_training_task(tmp_path):
    spec = compiled_spec(tmp_path, {"score.reward": "reward_model"})
    by_name = {t.task_info.name: t for t in body_tasks(spec).values()}
    assert "reward-model" in by_name
    # Every step that scores with the learned reward takes the trained model as an input.
    for name in ("evaluate-bc", "grow-1/score", "grow-1/improve-1/finetune", "grow-1/improve-1/evaluate",
                 "control/finetune", "control/evaluate"):
        assert "reward_model" in by_name[name].inputs.artifacts, name
    # With a given model directory nothing is trained.
    spec = compiled_spec(tmp_path, {"score.reward": "reward_model", "score.reward_model_path": "s3://b/rm"})
    assert "reward-model" not in {t.task_info.name for t in body_tasks(spec).values()}


@pytest.mark.pipeline
@pytest.mark.slow  # 70-75 s; the wiring is checked at compile time above, the reward model in test_reward_model
def test_learned_reward_on_source_only_text_through_kfp_local(tmp_path, tiny_data, tiny_policy):
    """Source-only text joins Grow; a reward model trained in the run scores it; true chrF is reported beside."""
    sources = tmp_path / "mono.txt"
    sources.write_text("\n".join(["Klicken Sie auf die Schaltfläche.", "Wählen Sie eine Farbe aus.",
                                  "Die Tabelle wird gespeichert.", "Öffnen Sie das Menü Ansicht."]) + "\n",
                       encoding="utf-8")
    out = tmp_path / "run"
    rc = pipeline.main([
        "run-local", "--no-tracking", "--output-dir", str(out), "--train", tiny_data["train"],
        "--valid", tiny_data["valid"], "--test", tiny_data["test"], "--policy", tiny_policy,
        "--sources", str(sources), "--score.reward", "reward_model",
        "--data.grow_sources", "12", "--sample.num_samples", "2", "--sample.max_length_ratio", "0.5",
        "--filter.mode", "percentile", "--filter.thresholds", "0.1", "--filter.percentiles", "50",
        "--finetune.epochs", "1", "--reward_model.epochs", "1", "--reward_model.d_model", "32",
        "--reward_model.ffn_dim", "64", "--reward_model.heads", "2", "--reward_model.layers", "1"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    steps = summary["steps"]
    assert [(s["g"], s["i"], s["control"]) for s in steps] == [(0, 0, False), (1, 1, False), (0, 0, True)]
    for s in steps:  # the learned reward and the true metric (chrF against the references), side by side
        assert 0.0 <= s["test_reward"] <= 1.0 and 0.0 <= s["test_true"] <= 1.0 and s["true_metric"] == "chrf"
    assert "reward_hacking" in summary["verdict"]
    assert "test true metric" in (out / "summary.md").read_text()
