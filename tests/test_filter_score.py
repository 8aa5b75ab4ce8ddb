import json
import os

import pytest

from rest.config import FilterConfig, ScoreConfig
from rest.steps.filter import FilterError, filter_scored
from rest.services.files import read_jsonl, write_jsonl
from rest.rewards.metrics import RewardError, get_reward
from rest.steps.score import score


def grown_dir(tmp_path, rewards_by_source):
    """A scored set: each source has samples with the given rewards plus a reference at 1.0."""
    d = tmp_path / "scored"
    rows = []
    for s, rewards in rewards_by_source.items():
        for k, r in enumerate(rewards):
            rows.append({"id": f"{s}#{k}", "source_id": s, "source": s, "candidate": f"c{k}", "reference": "ref",
                         "origin": "sample", "reward": r})
        rows.append({"id": f"{s}#ref", "source_id": s, "source": s, "candidate": "ref", "reference": "ref",
                     "origin": "reference", "reward": 1.0})
    write_jsonl(str(d / "data.jsonl"), rows)
    mean = sum(r["reward"] for r in rows) / len(rows)
    (d / "stats.json").write_text(json.dumps({"mean_reward": mean}))
    return str(d), mean


def test_global_threshold_keeps_what_passes(tmp_path):
    d, mean = grown_dir(tmp_path, {"a": [0.1, 0.5, 0.9], "b": [0.2, 0.95, 0.3]})
    # The paper's filter (no cap per source) with the references beside the samples.
    paper = FilterConfig(thresholds=[0.8, 0.9], guard="off", max_per_source=0, keep_references=True)
    stats = filter_scored(d, paper, 2, str(tmp_path / "f"))
    kept = list(read_jsonl(str(tmp_path / "f" / "data.jsonl")))
    assert {r["candidate"] for r in kept if r["origin"] == "sample"} == {"c2", "c1"}
    assert stats["kept"] == 4 and stats["kept_references"] == 2
    assert stats["mean_reward_kept"] > stats["mean_reward_all"]


def test_default_filter_keeps_each_sources_best_sample_that_passes(tmp_path):
    d, _ = grown_dir(tmp_path, {"a": [0.1, 0.85, 0.9], "b": [0.2, 0.5, 0.3]})
    stats = filter_scored(d, FilterConfig(thresholds=[0.8, 0.9], guard="off"), 1, str(tmp_path / "f"))
    kept = list(read_jsonl(str(tmp_path / "f" / "data.jsonl")))
    # a's best sample only (not its second that also passes, not its reference); b has none above 0.8.
    assert [(r["source_id"], r["candidate"], r["origin"]) for r in kept] == [("a", "c2", "sample")]
    assert stats["kept_references"] == 0


def test_guard_raises_threshold_above_mean_or_errors(tmp_path):
    d, mean = grown_dir(tmp_path, {"a": [0.1, 0.5, 0.9]})
    stats = filter_scored(d, FilterConfig(thresholds=[0.1, 0.2], guard="raise"), 1, str(tmp_path / "f"))
    assert stats["threshold_used"] > mean
    second = filter_scored(d, FilterConfig(thresholds=[0.1, 0.2], guard="raise"), 2, str(tmp_path / "f2"))
    # The schedule is lifted as a whole: still rising by the chosen step.
    assert second["threshold_used"] == pytest.approx(stats["threshold_used"] + 0.1)
    with pytest.raises(FilterError, match="not above the grown set's mean reward"):
        filter_scored(d, FilterConfig(thresholds=[0.1, 0.2], guard="error"), 1, str(tmp_path / "g"))


def test_empty_result_is_a_clear_error_and_writes_nothing(tmp_path):
    d, _ = grown_dir(tmp_path, {"a": [0.1, 0.2]})
    with pytest.raises(FilterError, match="no candidate passed"):
        filter_scored(d, FilterConfig(thresholds=[0.99], keep_references=False, guard="off"), 1, str(tmp_path / "f"))
    assert not os.path.exists(tmp_path / "f" / "data.jsonl")


def test_percentile_mode_and_cap(tmp_path):
    d, _ = grown_dir(tmp_path, {"a": [0.1, 0.2, 0.3], "b": [0.6, 0.7, 0.8]})
    cfg = FilterConfig(thresholds=[0.5], percentiles=[50.0], mode="percentile", guard="off", max_per_source=1)
    filter_scored(d, cfg, 1, str(tmp_path / "f"))
    kept = list(read_jsonl(str(tmp_path / "f" / "data.jsonl")))
    assert [r["source_id"] for r in kept] == ["a", "b"]  # one per source: its best (the reference)


def test_score_streams_rewards_and_stats(tmp_path):
    g = tmp_path / "grown"
    write_jsonl(str(g / "data.jsonl"), [
        {"id": "1", "source_id": "a", "source": "Hallo", "candidate": "Hello world", "reference": "Hello world",
         "origin": "sample"},
        {"id": "2", "source_id": "a", "source": "Hallo", "candidate": "Goodbye", "reference": "Hello world",
         "origin": "sample"}])
    stats = score(str(g), ScoreConfig(reward="chrf", batch_size=1), str(tmp_path / "s"))
    rows = list(read_jsonl(str(tmp_path / "s" / "data.jsonl")))
    assert rows[0]["reward"] == pytest.approx(1.0) and rows[1]["reward"] < 0.3
    assert stats["rows"] == 2 and sum(stats["histogram"]["counts"]) == 2


def test_chrf1_weighs_precision_and_recall_alike():
    """chrf1 is symmetric in candidate and reference, so a longer candidate earns nothing for its
    length; chrf (beta 2) is not: it pays the candidate that covers the reference plus extra text."""
    short, long = "Open the file.", "Open the file and then save all of the changes."
    chrf1, chrf2 = get_reward("chrf1"), get_reward("chrf")
    assert chrf1([""], [long], [short])[0] == pytest.approx(chrf1([""], [short], [long])[0])
    assert chrf2([""], [long], [short])[0] > chrf2([""], [short], [long])[0]
    assert chrf1([""], [short], [short])[0] == pytest.approx(1.0)


def test_reward_registry_and_code_hook():
    assert get_reward("bleu")(["x"], ["a b c d"], ["a b c d"])[0] == pytest.approx(1.0)
    with pytest.raises(RewardError, match="allow_code_reward"):
        get_reward("os.path:join")
    assert get_reward("os.path:join", allow_code=True) is os.path.join
    with pytest.raises(RewardError, match="does not import"):
        get_reward("no_such_module_xyz:f", allow_code=True)
    with pytest.raises(RewardError, match="unknown reward"):
        get_reward("rouge")
