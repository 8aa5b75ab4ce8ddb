"""The reward-hacking guard: training reward up on validation while the true metric falls.

A synthetic reward that pays for repetition (what the paper's reward model learned to
like) and a filtered set of repetitive "translations": fine-tuning the shipped BC policy
on it raises that reward and lowers chrF against the references. The guard must flag the
step, and roll it back or stop the run when so configured.
"""
import pytest

from rest.config import DEFAULT_POLICY_DIR, FinetuneConfig
from rest.rewards.spec import RewardSpec
from rest.steps.finetune import RewardHackingError, improve
from rest.services.files import write_jsonl
from rest.steps.summary import make_row, verdict, verdict_text

HACK = dict(reward="hacking_rewards:repetition", allow_code_reward=True, true_metric="chrf")
FT = FinetuneConfig(learning_rate=3e-3, warmup_steps=0, epochs=2, batch_tokens=600, threads=1, seed=1)


@pytest.fixture(scope="module")
def repetitive_set(tmp_path_factory, tiny_data):
    """A filtered set whose candidates are one word repeated, and 16 validation rows."""
    from rest.steps.data import load_pairs
    from rest.config import DataConfig

    d = tmp_path_factory.mktemp("hack")
    rows = load_pairs(tiny_data["train"], DataConfig())[:96]
    filtered = d / "filtered"
    write_jsonl(str(filtered / "data.jsonl"),
                ({"id": r["id"], "source_id": r["id"], "source": r["source"], "candidate": "the " * 12,
                  "reference": r["target"], "origin": "sample", "reward": 0.9} for r in rows))
    valid = str(d / "valid.jsonl")
    write_jsonl(valid, load_pairs(tiny_data["valid"], DataConfig()))
    return {"filtered": str(filtered), "valid": valid}


def test_repetition_reward_rises_while_chrf_falls_and_is_flagged(repetitive_set, tmp_path):
    info = improve(DEFAULT_POLICY_DIR, repetitive_set["filtered"], repetitive_set["valid"], FT, 1,
                   str(tmp_path / "p"), reward=RewardSpec(**HACK))
    assert info["best_valid_reward"] > info["start_valid_reward"]
    assert info["best_valid_true"] < info["start_valid_true"]
    assert info["reward_hacking"] and not info.get("rolled_back")
    assert all("valid_true" in h for h in info["history"])
    # The summary and its verdict flag the step.
    bc = make_row("bc", 0, 0, {"test_bleu": 15.0, "test_chrf": 40.0, "test_reward": 0.1}, "bc")
    row = make_row("rest g1 i1", 1, 1, {"test_bleu": 15.0, "test_chrf": 40.0, "test_reward": 0.2}, "p", info)
    v = verdict([bc, row])
    assert v["reward_hacking"] == ["g1/i1"]
    assert "validation: reward up, chrf down" in v["reward_hacking_reasons"]["g1/i1"][0]
    assert "reward hacking" in verdict_text(v).lower()


def test_rollback_keeps_the_previous_policy(repetitive_set, tmp_path):
    out = str(tmp_path / "p")
    info = improve(DEFAULT_POLICY_DIR, repetitive_set["filtered"], repetitive_set["valid"], FT, 1, out,
                   reward=RewardSpec(**HACK, on_reward_hacking="rollback"))
    assert info["reward_hacking"] and info["rolled_back"] and info["discarded_steps"] > 0
    assert info["optimizer_steps"] == 0
    from rest.model.policy import load_policy

    # Same weights as the parent: compare the tensors, not the files (the lineage file differs).
    a, _ = load_policy(out)
    b, _ = load_policy(DEFAULT_POLICY_DIR)
    assert all((x == y).all() for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    row = make_row("rest g1 i1", 1, 1, {"test_bleu": 1.0, "test_chrf": 1.0, "test_reward": 0.1}, out, info)
    assert row["rolled_back"] and row["hacking_in_validation"]


def test_stop_fails_the_step_and_writes_nothing(repetitive_set, tmp_path):
    out = tmp_path / "p"
    with pytest.raises(RewardHackingError, match="reward hacking.*loop.on_reward_hacking=stop"):
        improve(DEFAULT_POLICY_DIR, repetitive_set["filtered"], repetitive_set["valid"], FT, 1, str(out),
                reward=RewardSpec(**HACK, on_reward_hacking="stop"))
    assert not out.exists()


def test_no_flag_when_the_true_metric_does_not_fall():
    from rest.rewards.spec import is_reward_hacking

    # The one rule (finetune's guard, the summary and bench/quality use it): reward up, metric down by > tolerance.
    assert not is_reward_hacking(0.4, 0.5, 0.40, 0.399, 0.002)
    assert is_reward_hacking(0.4, 0.5, 0.40, 0.39, 0.002)
    assert not is_reward_hacking(0.4, 0.5, 0.40, None, 0.0)
    assert not is_reward_hacking(0.5, 0.4, 0.40, 0.30, 0.002)  # the reward fell: not hacking
