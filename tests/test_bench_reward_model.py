"""bench/reward_model.py's comparisons: equal rules for both arms, matched steps, Holm-corrected p-values.

The whole benchmark takes 30-60 min of CPU (its ``--quick`` smoke, minutes, is in
tests/test_bench_smoke.py). Here: the guard option that gives a control the same rollback
rule as a guarded ReST arm, on the shipped BC policy, and the comparison table built from
real sacrebleu resamples of synthetic systems.
"""
import os
import sys

import pytest

from rest.config import DEFAULT_POLICY_DIR, FinetuneConfig
from rest.rewards.spec import RewardSpec
from rest.steps.finetune import control
from rest.services.files import write_jsonl
from rest.stats import holm, resample_corpus

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.append(os.path.join(ROOT, "bench"))  # appended: bench/pipeline.py must not shadow pipeline.py


def test_holm_adjusts_like_the_reference_procedure():
    # R: p.adjust(c(0.01, 0.04, 0.03, 0.005), "holm") = 0.03 0.06 0.06 0.02
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == [1.0, 1.0]          # capped at 1
    assert holm([0.02]) == [0.02]                  # a family of one: unchanged
    assert holm([]) == []
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        holm([0.1, 1.5])


HACK = dict(reward="hacking_rewards:repetition", allow_code_reward=True, true_metric="chrf")


@pytest.fixture(scope="module")
def repetitive_references(tmp_path_factory, tiny_data):
    """"References" that are one word repeated: training on them raises the repetition reward, lowers chrF."""
    from rest.config import DataConfig
    from rest.steps.data import load_pairs

    d = tmp_path_factory.mktemp("ctrl")
    rows = load_pairs(tiny_data["train"], DataConfig())[:96]
    refs = str(d / "grow.jsonl")
    write_jsonl(refs, ({"id": r["id"], "source": r["source"], "target": "the " * 12} for r in rows))
    valid = str(d / "valid.jsonl")
    write_jsonl(valid, load_pairs(tiny_data["valid"], DataConfig()))
    return refs, valid


def test_guarded_control_is_rolled_back_like_a_rest_step(repetitive_references, tmp_path):
    """With guard=True the control gets its arm's rollback; without, it is only measured (the pipeline's control)."""
    refs, valid = repetitive_references
    ft = FinetuneConfig(learning_rate=3e-3, warmup_steps=0, epochs=2, batch_tokens=600, threads=1, seed=1)
    spec = RewardSpec(**HACK, on_reward_hacking="rollback")
    guarded = control(DEFAULT_POLICY_DIR, refs, valid, ft, 12, str(tmp_path / "g"), spec, rest_checks=2, guard=True)
    assert guarded["reward_hacking"] and guarded["rolled_back"]
    assert guarded["optimizer_steps"] == 0 and guarded["discarded_steps"] == 12 and guarded["guarded"]
    measured = control(DEFAULT_POLICY_DIR, refs, valid, ft, 12, str(tmp_path / "m"), spec, rest_checks=2)
    assert measured["reward_hacking"] and not measured.get("rolled_back")
    assert measured["optimizer_steps"] == 12 and not measured["guarded"]


def _systems():
    """Hypotheses of seven systems on 60 sentences: the references with some words dropped."""
    import random

    refs = [f"click the button number {k} to open dialog {k % 7} now" for k in range(60)]

    def drop(share, seed):
        rng = random.Random(seed)
        return [" ".join(w for w in r.split() if rng.random() > share) for r in refs]

    hyps = {"base": drop(0.5, 0), "control": drop(0.45, 1), "control-per-source": drop(0.45, 2),
            "control-chrf": drop(0.4, 3), "rest-learned-rollback": drop(0.2, 4),
            "rest-learned-per-source-rollback": drop(0.44, 5), "rest-chrf": drop(0.35, 6)}
    return refs, hyps


def test_comparisons_are_step_matched_and_holm_corrected():
    import reward_model

    refs, hyps = _systems()
    learned, per_source = "rest-learned-rollback", "rest-learned-per-source-rollback"
    rule_l = reward_model.selection_rule(RewardSpec(reward="reward_model", true_metric="chrf",
                                                    on_reward_hacking="rollback"))
    rule_c = reward_model.selection_rule(RewardSpec(reward="chrf", true_metric="chrf"))
    assert rule_l == "best valid learned reward; rollback if valid chrf falls" and rule_c == "best valid chrf"
    rows = {"base": {"optimizer_steps": 0},
            learned: {"optimizer_steps": 128, "rule": rule_l}, per_source: {"optimizer_steps": 312, "rule": rule_l},
            "rest-chrf": {"optimizer_steps": 150, "rule": rule_c},
            "control": {"optimizer_steps": 128, "target_steps": 128, "rule": rule_l, "matches": learned},
            "control-per-source": {"optimizer_steps": 0, "target_steps": 312, "rule": rule_l, "matches": per_source},
            "control-chrf": {"optimizer_steps": 150, "target_steps": 150, "rule": rule_c, "matches": "rest-chrf"}}
    control_of = {learned: "control", per_source: "control-per-source", "rest-chrf": "control-chrf"}
    calls = []

    def resample(label):
        calls.append(label)
        return resample_corpus(hyps[label], refs, "chrf", n_bootstrap=200)

    comps = reward_model.compare(resample, rows, control_of, learned, per_source)
    assert len(calls) == len(set(calls)) == 7       # each system resampled once, shared by its comparisons
    assert list(comps) == [f"{learned} vs control", f"{per_source} vs control-per-source",
                           "rest-chrf vs control-chrf", f"{learned} vs base", "control vs base",
                           f"{learned} gain vs rest-chrf gain"]
    for arm, ctrl in control_of.items():           # every control comparison: same steps, same rule
        c = comps[f"{arm} vs {ctrl}"]
        assert c["kind"] == "step-matched control" and c["control_budget"] == c["steps"][0] == rows[arm]["optimizer_steps"]
        assert c["steps"][1] == rows[ctrl]["optimizer_steps"] and c["rule"] == rows[ctrl]["rule"]
    # The difference of gains is the two gains' difference, with a resampled interval around it.
    dd = comps[f"{learned} gain vs rest-chrf gain"]
    g1, g2 = comps[f"{learned} vs control"]["delta"], comps["rest-chrf vs control-chrf"]["delta"]
    assert dd["delta"] == pytest.approx(g1 - g2) and dd["delta_ci"][0] < dd["delta"] < dd["delta_ci"][1]
    # Holm over the whole family, never below the raw p-value; a clear win survives it.
    raw = [c["delta_p_value"] for c in comps.values()]
    assert [c["p_holm"] for c in comps.values()] == pytest.approx(holm(raw))
    assert all(c["p_holm"] >= c["delta_p_value"] for c in comps.values())
    assert comps[f"{learned} vs control"]["delta"] > 0 and comps[f"{learned} vs control"]["p_holm"] < 0.05
    assert comps[f"{per_source} vs control-per-source"]["p_holm"] > 0.05  # nearly the same system

    md = reward_model.markdown([{
        "case": "toy", "data": {}, "prepared": {"grow": {"rows": 1}, "test": {"rows": 60}},
        "reward_model": {"kendall_tau": 0.3, "spearman_rho": 0.4, "selection_kendall_tau": 0.35, "test_pairs": 9,
                         "valid_pairs": 8, "train_pairs": 50},
        "rows": [{"policy": k, "test_bleu": 1.0, "test_chrf": 2.0, "test_learned_reward": 0.1,
                  "test_true_reward": 0.2, **v} for k, v in rows.items()],
        "paired_bootstrap": comps, "timing": {}}], quick=False)
    assert "Holm: adjusted over the 6 comparisons" in md and "test split of 9 pairs" in md
    assert "| control-per-source | 1.00 | 2.00 | 0.1000 | 0.2000 | 0 (of 312, as " in md
    assert "| step-matched control | 312 / 0 (budget 312, rolled back) |" in md
