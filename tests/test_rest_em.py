"""ReST-EM as a recipe: the preset, the bundled arithmetic data, verifiable rewards by name, the
filter's cap / dedupe / union, pass@k, the verdict on accuracy, and the compiled wiring."""
from __future__ import annotations

import hashlib
import itertools
import json
import math
import os

import pytest

from rest.config import load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRESET = os.path.join(ROOT, "configs", "rest-em-arithmetic.yaml")
DATA = os.path.join(ROOT, "data", "arithmetic-addition")


def test_preset_loads_and_validates(monkeypatch):
    from rest.steps.validate import validate_run

    monkeypatch.chdir(ROOT)  # the preset's data paths are relative to the repository root
    cfg = load_config(PRESET)
    assert cfg.bootstrap.architecture == "causal" and cfg.bootstrap.policy == ""
    assert cfg.finetune.from_base and cfg.finetune.include_train and cfg.filter.accumulate
    assert cfg.filter.max_per_source == 10 and cfg.filter.dedupe and cfg.filter.thresholds == [0.5]
    assert cfg.loop.grow_steps == 3 and cfg.filter.improve_steps == 1  # ReST-EM: G iterations, I = 1
    assert cfg.score.reward == "arithmetic" and cfg.score.true_metric == "none"
    validate_run(cfg.to_dict())  # the data files, the reward; no policy to check (BC trains from scratch)


def test_causal_translation_preset_loads_and_validates(monkeypatch):
    from rest.steps.validate import validate_run

    monkeypatch.chdir(ROOT)
    cfg = load_config(os.path.join(ROOT, "configs", "causal-translation.yaml"))
    assert (cfg.bootstrap.architecture, cfg.bootstrap.prompt, cfg.score.reward) == ("causal", "translation", "chrf")
    validate_run(cfg.to_dict(), check_data=False)


def test_bundled_arithmetic_data_is_what_the_code_generates(tmp_path):
    import sys

    sys.path.insert(0, os.path.join(ROOT, "tools"))
    from build_arithmetic_data import build

    build(str(tmp_path))
    for name in ("worked.tsv", "answer_only.tsv", "valid.tsv", "test.tsv", "hard_test.tsv", "README.md"):
        with open(os.path.join(DATA, name), "rb") as a, open(tmp_path / name, "rb") as b:
            assert hashlib.sha256(a.read()).digest() == hashlib.sha256(b.read()).digest(), name


def test_verifiable_rewards_are_registered_by_name():
    from rest.config import ScoreConfig
    from rest.rewards.metrics import get_reward, is_binary, reward_options
    from rest.rewards.spec import RewardSpec

    for name in ("exact_match", "numeric", "regex", "python_tests", "arithmetic"):
        assert is_binary(name) and getattr(get_reward(name), "binary", False)
    assert get_reward("arithmetic")(["12+3="], ["21003 10001|15"], ["15"]) == [1.0]
    assert get_reward("arithmetic")(["12+3="], ["15"], ["15"]) == [0.0]  # no working shown
    assert get_reward("numeric")(["q"], ["about 3.1416"], ["3.14159"]) == [0.0]
    loose = get_reward("numeric", options={"rel_tol": 1e-3})
    assert loose(["q"], ["about 3.1416"], ["3.14159"]) == [1.0] and loose.binary
    assert get_reward("exact_match")(["q"], ["Paris."], ["paris"]) == [1.0]
    cfg = ScoreConfig(reward="regex", regex_pattern=r"The answer is {reference}\.?", true_metric="none")
    spec = RewardSpec.from_config(cfg)
    fn, true = spec.functions()
    assert true is None and fn(["q"], ["The answer is 42."], ["42"]) == [1.0]
    assert reward_options("chrf", cfg) == {}
    assert RewardSpec(reward="numeric").reference_metric == "numeric"  # BC's checkpoints, the promotion metric


def test_pass_at_k_is_the_unbiased_estimator():
    import numpy as np

    from rest.steps.evaluate import best_of_table, pass_at_k, pass_at_k_curve

    for n, c, k in [(10, 3, 1), (10, 3, 4), (8, 0, 2), (8, 8, 8), (5, 1, 5), (12, 5, 6)]:
        # The fraction of k-subsets of the n samples holding at least one of the c correct ones.
        subsets = list(itertools.combinations(range(n), k))
        exact = sum(any(i < c for i in s) for s in subsets) / len(subsets)
        assert pass_at_k(n, c, k) == pytest.approx(exact, abs=1e-12)
    assert pass_at_k(200, 7, 50) == pytest.approx(1 - math.comb(193, 50) / math.comb(200, 50), abs=1e-12)
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)
    # For a 0/1 reward it is the expected best-of-k.
    rewards = [[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0]]
    curve = pass_at_k_curve(rewards)
    table = best_of_table(rewards).mean(axis=0)
    assert set(curve) == {"1", "2", "4"}
    assert np.allclose([curve[str(k)] for k in (1, 2, 4)], table[[0, 1, 3]])


def _scored(tmp_path, rows):
    d = tmp_path / "scored"
    d.mkdir(exist_ok=True)
    with open(d / "data.jsonl", "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    with open(d / "stats.json", "w") as f:
        json.dump({"mean_reward": sum(r["reward"] for r in rows) / len(rows)}, f)
    return str(d)


def _row(src, cand, reward, g):
    return {"id": f"{src}#{cand}#{g}", "source_id": src, "source": src, "candidate": cand, "reference": "x",
            "reward": reward, "origin": "sample", "grow": g}


def test_filter_caps_dedupes_and_accumulates_per_source(tmp_path):
    from rest.config import FilterConfig
    from rest.services.files import read_jsonl
    from rest.steps.filter import filter_scored

    cfg = FilterConfig(thresholds=[0.5], guard="off", max_per_source=3, dedupe=True, accumulate=True)
    g1 = [_row("a", "s1", 1.0, 1), _row("a", "s1", 1.0, 1), _row("a", "w", 0.0, 1), _row("b", "t1", 1.0, 1),
          _row("c", "u1", 1.0, 1)]
    (tmp_path / "1").mkdir()
    stats = filter_scored(_scored(tmp_path / "1", g1), cfg, 1, str(tmp_path / "f1"))
    kept1 = list(read_jsonl(str(tmp_path / "f1" / "data.jsonl")))
    assert [(r["source_id"], r["candidate"]) for r in kept1] == [("a", "s1"), ("b", "t1"), ("c", "u1")]
    assert stats["sources_kept"] == 3
    # Grow 2 sees only a and b (c's earlier solutions stay); a gets new ones, capped at 3, newest first.
    g2 = [_row("a", "s2", 1.0, 2), _row("a", "s1", 1.0, 2), _row("a", "s3", 1.0, 2), _row("a", "s4", 1.0, 2),
          _row("b", "t0", 0.0, 2)]
    (tmp_path / "2").mkdir()
    stats = filter_scored(_scored(tmp_path / "2", g2), cfg, 1, str(tmp_path / "f2"), previous_dir=str(tmp_path / "f1"))
    kept2 = [(r["source_id"], r["candidate"], r["grow"]) for r in read_jsonl(str(tmp_path / "f2" / "data.jsonl"))]
    assert kept2 == [("a", "s2", 2), ("a", "s1", 2), ("a", "s3", 2), ("b", "t1", 1), ("c", "u1", 1)]
    assert stats["kept_from_previous"] == 2 and stats["sources_kept"] == 3 and stats["kept"] == 5


def test_verdict_on_a_verifiable_reward_reads_the_accuracy(tmp_path):
    from rest.steps.summary import append_row, make_row, markdown_table, verdict, verdict_text, read_sentences

    def evaluation(name, correct, hard_correct):
        d = tmp_path / name / "eval"
        d.mkdir(parents=True)
        for fname, flags in (("translations.jsonl", correct), ("hard_translations.jsonl", hard_correct)):
            with open(d / fname, "w") as f:
                for k, ok in enumerate(flags):
                    f.write(json.dumps({"id": f"t{k}", "hypothesis": "h", "reference": "r", "reward": float(ok)}) + "\n")
        acc, hard = sum(correct) / len(correct), sum(hard_correct) / len(hard_correct)
        return str(d), {"test_bleu": 0.0, "test_chrf": 0.0, "test_reward": acc, "test_accuracy": acc,
                        "hard_reward": hard, "hard_accuracy": hard}

    n = 200
    report = None
    for name, g, ctrl, acc, hard in (("bc", 0, False, 0.5, 0.0), ("g1", 1, False, 0.9, 0.3),
                                     ("control", 0, True, 0.6, 0.0)):
        d, m = evaluation(name, [k < acc * n for k in range(n)], [k < hard * n for k in range(n)])
        row = make_row(name, g, 1 if g else 0, m, "/p", {}, None, control=ctrl)
        out = tmp_path / name / "report"
        append_row(report, row, str(out), translations=os.path.join(d, "translations.jsonl"))
        report = str(out)
    sentences = read_sentences(report)
    assert {"bc.hard", "g1-i1.hard", "control.hard"} <= set(sentences)
    rows = [json.loads(line) for line in open(os.path.join(report, "rows.jsonl"))]
    v = verdict(rows, sentences)
    assert v["binary_reward"] and v["beats_bc"] and v["beats_control"]
    assert v["significance"]["bc"]["hard_reward"]["delta"] == pytest.approx(0.3)
    assert v["test_accuracy_vs_control"] == pytest.approx(0.3)
    text = verdict_text(v)
    assert "accuracy +40.0 points, hard accuracy +30.0 points" in text and "| control | accuracy |" in text
    assert "| test accuracy | hard accuracy |" in markdown_table(rows) and "90.0 %" in markdown_table(rows)


def test_promotion_compares_a_verifiable_reward_per_sentence():
    from rest.services.registry import _paired

    srcs, refs = ["1+2="] * 50, ["3"] * 50
    good, bad = ["12003|3"] * 50, ["12003|4"] * 25 + ["12003|3"] * 25
    r = _paired(bad, good, srcs, refs, "arithmetic", 200, 1)
    assert r["candidate_score"] == 100.0 and r["baseline_score"] == 50.0 and r["p_value"] < 0.05


def test_compiled_rest_em_pipeline_starts_every_iteration_from_bc(tmp_path, monkeypatch):
    import yaml
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2

    import pipeline

    monkeypatch.chdir(ROOT)
    path = str(tmp_path / "p.yaml")
    pipeline.compile_pipeline(load_config(PRESET), path)
    with open(path) as f:
        spec = json_format.ParseDict(list(yaml.safe_load_all(f))[0], pipeline_spec_pb2.PipelineSpec())
    tasks = {t.task_info.name: t for t in spec.components["comp-exit-handler-1"].dag.tasks.values()}
    for g in (1, 2, 3):
        ft = tasks[f"grow-{g}/improve-1/finetune"]
        assert ft.inputs.artifacts["base_policy"].task_output_artifact.producer_task == "bootstrap-op"
        flt = tasks[f"grow-{g}/improve-1/filter"]
        assert ("previous" in flt.inputs.artifacts) == (g > 1)  # the union of the kept sets
    assert "control/finetune" in tasks
