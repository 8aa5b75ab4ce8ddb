"""The same pipeline with a causal (decoder-only) policy: a tiny ReST-EM run through kfp.local."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import pipeline
from rest.tasks import arithmetic as ar

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def tiny_task(tmp_path_factory):
    """Tiny arithmetic files and a tiny causal policy (random weights, char tokenizer)."""
    from rest.model import causal
    from rest.model.policy import save_policy

    d = tmp_path_factory.mktemp("task")
    ar.build_task(str(d / "data"), n_worked=30, n_answer_only=12, n_test=8, n_hard_test=4, n_hard_answer_only=4,
                  n_valid=6, digits=(2,))
    tok = causal.char_tokenizer([ar.VOCAB])
    model = causal.build_model(tok, d_model=32, ffn_dim=64, layers=1, heads=2, dropout=0.0, seed=0, max_positions=64)
    causal.set_prompt(model, causal.resolve_prompt("source", tok))
    save_policy(model, tok, str(d / "policy"), {"kind": "bc", "optimizer_steps_since_bc": 0})
    return {"data": str(d / "data"), "policy": str(d / "policy")}


@pytest.mark.pipeline
@pytest.mark.slow  # ~2.5 CPU minutes: 19 tasks, each its own process
def test_tiny_rest_em_run_with_a_causal_policy_through_kfp_local(tmp_path, tiny_task, monkeypatch):
    monkeypatch.chdir(ROOT)
    data, out = tiny_task["data"], tmp_path / "run"
    rc = pipeline.main([
        "run-local", "--no-tracking", "--config", "configs/rest-em-arithmetic.yaml", "--output-dir", str(out),
        "--train", f"{data}/worked.tsv", "--valid", f"{data}/valid.tsv", "--test", f"{data}/test.tsv",
        "--data.grow", f"{data}/answer_only.tsv", "--data.hard_test", f"{data}/hard_test.tsv",
        "--policy", tiny_task["policy"], "--loop.grow_steps", "2", "--sample.num_samples", "2",
        "--filter.thresholds", "0.0",  # random weights verify nothing: keep every sample to exercise the union
        "--finetune.max_steps", "2", "--finetune.eval_every", "2", "--evaluate.best_of_n", "2"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    steps = summary["steps"]
    assert [(s["g"], s["i"], s["control"]) for s in steps] == [(0, 0, False), (1, 1, False), (2, 1, False),
                                                              (0, 0, True)]
    for s in steps:
        assert 0.0 <= s["test_accuracy"] <= 1.0 and 0.0 <= s["hard_accuracy"] <= 1.0
        assert set(s["pass_at_k"]) == {"1", "2"}
        with open(os.path.join(s["model_path"], "rest_policy.json")) as f:
            assert json.load(f)["prompt"]["template"] == "{source}"  # the prompt travels with every policy
    # from_base: each iteration starts from BC, the step count accumulates for the control.
    assert steps[1]["optimizer_steps"] == 2 and steps[2]["optimizer_steps"] == 4 == steps[3]["optimizer_steps"]
    with open(os.path.join(steps[2]["model_path"], "rest_policy.json")) as f:
        assert json.load(f)["initialized_from"] == "base"
    v = summary["verdict"]
    assert v["binary_reward"] and "hard_reward" in v["significance"]["control"]
    assert "| test accuracy | hard accuracy |" in (out / "summary.md").read_text()
    # docs/rest-em.md's tables come from this tool, reading the same run's artifacts.
    table = subprocess.run([sys.executable, "tools/rest_em_table.py", str(out)], capture_output=True, text=True,
                           check=True).stdout
    assert "| ReST-EM iteration 2 | 4 |" in table and "| control: BC + worked solutions only | 4 |" in table
    # The second table (what each iteration found): 4 hard pool problems x 2 samples were drawn.
    iteration_2 = [line for line in table.splitlines() if line.startswith("| ReST-EM iteration 2 | ")][1]
    assert iteration_2.split("|")[4].strip().endswith(" of 8")
