"""The run summary's significance (paired bootstrap), its time table, and the filter histogram's thresholds."""
import os
import time

import pytest

from rest.services import registry

from rest import stats

from rest.steps import summary

from rest.services import tracking
from rest.config import FilterConfig
from rest.steps.filter import effective_threshold
from rest.services.files import write_jsonl

N = 100
REFS = [f"sentence {k} says the {['red', 'blue', 'green', 'grey'][k % 4]} fox jumps over dog {k * 7}"
        for k in range(N)]


def wrong(ref: str) -> str:
    return ref.replace("fox jumps over", "cat sleeps under").replace("says the", "has a")


def system(correct: set[int]) -> list[dict]:
    """Per-sentence outputs: the reference where ``k`` is in ``correct``, a corrupted one elsewhere."""
    return [{"id": str(k), "hypothesis": r if k in correct else wrong(r), "reference": r,
             "reward": 0.9 if k in correct else 0.3} for k, r in enumerate(REFS)]


BASE = set(range(50))
CLEARLY_BETTER = set(range(N))
# Better by point estimate (wins 10 sentences, loses 5) but with too few discordant sentences to be sure.
NOISY = set(range(5, 50)) | set(range(50, 60))


def rows(last_metrics: dict, ctrl: bool = True) -> list[dict]:
    bc = summary.make_row("bc", 0, 0, {"test_bleu": 20.0, "test_chrf": 50.0, "test_reward": 0.6}, "bc")
    rest = summary.make_row("rest g1 i1", 1, 1, last_metrics, "p")
    out = [bc, rest]
    if ctrl:
        out.append(summary.make_row("control", 0, 0, {"test_bleu": 20.0, "test_chrf": 50.0, "test_reward": 0.6}, "c",
                                    control=True))
    return out


POINT = {"test_bleu": 21.0, "test_chrf": 51.0, "test_reward": 0.61}  # point estimates all above BC's


def test_identical_systems_interval_contains_zero_and_do_not_beat():
    same = system(BASE)
    v = summary.verdict(rows(POINT), {"bc": same, "g1-i1": same, "control": same})
    for name in ("bc", "control"):
        for key in ("test_chrf", "test_reward", "test_bleu"):
            r = v["significance"][name][key]
            assert r["delta"] == 0 and r["delta_ci"][0] <= 0 <= r["delta_ci"][1] and r["p_value"] == 1.0
    # Point estimates above BC used to make this "beats"; the intervals do not.
    assert v["beats_bc"] is False and v["beats_control"] is False


def test_clearly_better_system_beats():
    v = summary.verdict(rows(POINT), {"bc": system(BASE), "g1-i1": system(CLEARLY_BETTER),
                                      "control": system(BASE)})
    sig = v["significance"]["bc"]
    assert sig["test_chrf"]["delta_ci"][0] > 0 and sig["test_reward"]["delta_ci"][0] > 0
    assert sig["test_reward"]["delta"] == pytest.approx(0.3)
    assert sig["test_chrf"]["p_value"] < 0.01 and sig["test_reward"]["p_value"] < 0.01
    assert v["beats_bc"] is True and v["beats_control"] is True
    text = summary.verdict_text(v)
    assert "ReST beats BC" in text and "ReST beats the control" in text
    assert "both the chrF difference and the mean-reward difference lie above 0" in text


def test_summary_says_in_plain_words_when_the_control_is_significantly_better():
    # ReST no better than BC; the control right everywhere: plain fine-tuning won.
    v = summary.verdict(rows(POINT), {"bc": system(BASE), "g1-i1": system(BASE), "control": system(CLEARLY_BETTER)})
    assert v["control_better_on"] == ["chrF", "reward"] and v["beats_control"] is False
    text = summary.verdict_text(v)
    assert "The references-only control is significantly better than ReST on chrF and reward" in text
    assert "bootstrap.converge=true" in text
    # Only a noisy difference: nothing is said.
    v = summary.verdict(rows(POINT), {"bc": system(BASE), "g1-i1": system(NOISY), "control": system(BASE)})
    assert v["control_better_on"] == [] and "significantly better than ReST" not in summary.verdict_text(v)


def test_summary_says_when_a_policy_kept_its_start():
    # The control's outputs are BC's sentence for sentence: none of its checkpoints beat BC (BC is converged).
    v = summary.verdict(rows(POINT), {"bc": system(BASE), "g1-i1": system(NOISY), "control": system(BASE)})
    assert v["control_kept_start"] is True and v["rest_kept_start"] is False
    text = summary.verdict_text(v)
    assert "No checkpoint of the control beat the starting policy" in text and "No Improve step" not in text
    # A control that moved, and a ReST step that did not.
    v = summary.verdict(rows(POINT), {"bc": system(BASE), "g1-i1": system(BASE), "control": system(NOISY)})
    assert v["control_kept_start"] is False and v["rest_kept_start"] is True
    assert "the last ReST step is BC itself" in summary.verdict_text(v)
    # Without per-sentence outputs nothing is claimed.
    v = summary.verdict(rows(POINT))
    assert v["control_kept_start"] is False and v["rest_kept_start"] is False


def test_point_better_but_noisy_system_does_not_beat():
    v = summary.verdict(rows(POINT), {"bc": system(BASE), "g1-i1": system(NOISY), "control": system(BASE)})
    sig = v["significance"]["bc"]
    assert sig["test_reward"]["delta"] == pytest.approx(0.6 * 5 / N)  # better on average ...
    assert sig["test_chrf"]["delta"] > 0
    for key in ("test_chrf", "test_reward"):  # ... but the interval reaches below 0
        lo, hi = sig[key]["delta_ci"]
        assert lo < 0 < hi and sig[key]["p_value"] > 0.05
    assert v["beats_bc"] is False
    text = summary.verdict_text(v)
    assert "ReST does NOT beat BC (chrF and reward intervals not above 0)" in text
    # The table of intervals, as summary.md and run-local print it.
    lo, hi = sig["test_chrf"]["delta_ci"]
    assert f"| BC | chrF | {sig['test_chrf']['delta']:+.2f} | [{lo:+.2f}, {hi:+.2f}] |" in text


def test_verdict_is_seeded_and_pairs_sentences_by_id():
    a, b = system(BASE), system(NOISY)
    v1 = summary.verdict(rows(POINT, ctrl=False), {"bc": a, "g1-i1": b}, n_bootstrap=300, seed=7)
    v2 = summary.verdict(rows(POINT, ctrl=False), {"bc": a, "g1-i1": list(reversed(b))}, n_bootstrap=300, seed=7)
    assert v1["significance"] == v2["significance"]
    v3 = summary.verdict(rows(POINT, ctrl=False), {"bc": a, "g1-i1": b}, n_bootstrap=300, seed=8)
    assert v3["significance"]["bc"]["test_chrf"]["delta_ci"] != v1["significance"]["bc"]["test_chrf"]["delta_ci"]
    with pytest.raises(ValueError, match="different test sentences"):
        summary.compare(a, b[:-1])


def test_without_per_sentence_outputs_the_verdict_is_untested_not_beats():
    v = summary.verdict(rows(POINT))
    assert v["beats_bc"] is None and v["beats_control"] is None and v["significance"] == {}
    assert "not tested" in summary.verdict_text(v)


@pytest.mark.parametrize("metric", ["chrf", "bleu"])
def test_corpus_test_is_sacrebleus_paired_bootstrap(metric, monkeypatch):
    from sacrebleu.metrics import BLEU, CHRF
    from sacrebleu.significance import PairedTest

    a = [o["hypothesis"] for o in system(BASE)]
    b = [o["hypothesis"] for o in system(NOISY)]
    r = stats.paired_bootstrap(a, b, REFS, metric, n_bootstrap=200, seed=3)
    assert registry.paired_bootstrap is stats.paired_bootstrap  # one implementation
    monkeypatch.setenv("SACREBLEU_SEED", "3")
    _, scores = PairedTest([("a", a), ("b", b)], {metric: {"chrf": CHRF, "bleu": BLEU}[metric]()}, [REFS],
                           test_type="bs", n_samples=200)()
    name = next(k for k in scores if k != "System")
    base, cand = scores[name]
    assert r["metric"] == name
    assert r["p_value"] == pytest.approx(cand.p_value)
    assert (r["baseline_score"], r["candidate_score"]) == pytest.approx((base.score, cand.score))
    assert (r["baseline_mean"], r["baseline_ci"]) == pytest.approx((base.mean, base.ci))
    assert (r["candidate_mean"], r["candidate_ci"]) == pytest.approx((cand.mean, cand.ci))
    lo, hi = r["delta_ci"]
    assert r["delta"] == pytest.approx(cand.score - base.score) and lo < r["delta"] < hi


def test_report_carries_the_compared_sentences_only(tmp_path):
    def evaluate(label, g, i, prev, correct, control=False):
        out = tmp_path / label
        tr = tmp_path / f"{label}.translations.jsonl"
        write_jsonl(str(tr), [{**o, "source": "s"} for o in system(correct)])
        row = summary.make_row(label, g, i, {"test_bleu": 1.0, "test_chrf": 1.0, "test_reward": 0.1}, "p",
                               control=control)
        summary.append_row(prev, row, str(out), translations=str(tr))
        return str(out)

    r = evaluate("bc", 0, 0, None, BASE)
    r = evaluate("g1i1", 1, 1, r, NOISY)
    r = evaluate("g1i2", 1, 2, r, CLEARLY_BETTER)
    r = evaluate("ctrl", 0, 0, r, BASE, control=True)
    sent = summary.read_sentences(r)
    assert set(sent) == {"bc", "g1-i2", "control"}  # g1-i1 stays in its own evaluation
    assert sent["g1-i2"][0] == {"id": "0", "hypothesis": REFS[0], "reference": REFS[0], "reward": 0.9}
    out = tmp_path / "summary"
    res = summary.write_summary(r, str(out), started=time.time())
    assert res["verdict"]["beats_bc"] is True and res["verdict"]["test_sentences"] == N
    md = (out / "summary.md").read_text()
    assert "| last ReST step vs | metric | Δ | 95 % interval | p |" in md and "| control | reward |" in md


def test_task_times_count_each_task_once_with_shares():
    a = {"tasks": {"bootstrap": 0.0, "evaluate-bc": 10.0}}
    # Key-sorted, as KFP hands artifact metadata back: the table still follows the pipeline.
    b = {"tasks": dict(sorted({"grow-1/sample": 30.0, "grow-1/score": 10.0, "grow-1/improve-1/filter": 1.0,
                               "grow-1/improve-1/finetune": 20.0, "grow-1/improve-1/evaluate": 9.0}.items()))}
    c = {"tasks": {"grow-1/sample": 30.0, "grow-1/score": 10.0, "grow-1/improve-2/filter": 1.0,
                   "grow-1/improve-2/finetune": 9.0, "grow-1/improve-2/evaluate": 10.0}}
    t = summary.task_times([a, b, c], {"summarize": 0.0})
    names = [x["task"] for x in t["tasks"]]
    assert names == ["bootstrap", "evaluate-bc", "grow-1/sample", "grow-1/score", "grow-1/improve-1/filter",
                     "grow-1/improve-1/finetune", "grow-1/improve-1/evaluate", "grow-1/improve-2/filter",
                     "grow-1/improve-2/finetune", "grow-1/improve-2/evaluate", "summarize"]
    assert names.count("grow-1/sample") == 1 and t["total_s"] == 100.0
    assert {x["task"]: x["share"] for x in t["tasks"]}["grow-1/sample"] == pytest.approx(0.3)
    table = summary.time_table(t)
    assert "| grow-1/sample | 30.0 | 30.0% |" in table and "| total | 100.0 | 100% |" in table
    assert "register (runs after summarize)" in table


def test_histogram_draws_the_thresholds_the_guard_used(tmp_path):
    rewards = [0.55, 0.6, 0.62, 0.65, 0.7, 0.72, 0.75, 0.8, 0.85, 0.9]
    cfg = FilterConfig(thresholds=[0.5, 0.6, 0.7], guard="raise")
    mean = sum(rewards) / len(rewards)
    used = [effective_threshold(cfg, k, mean) for k in (1, 2, 3)]
    assert used[0] > mean > cfg.thresholds[0]  # the guard lifted the schedule
    fig = tracking.reward_histogram_figure(rewards, used, configured=cfg.thresholds)
    try:
        ax = fig.axes[0]
        drawn = sorted(line.get_xdata()[0] for line in ax.lines)  # the τ lines and the mean's
        assert drawn == pytest.approx(sorted(used + [mean]))
        labels = [t.get_text() for t in ax.texts if "τ" in t.get_text()]
        share = sum(r >= used[1] for r in rewards) / len(rewards)
        assert labels[1] == f" τ2 = {used[1]:.3g} (configured 0.6): {share:.0%} kept"
        assert not any("τ1 = 0.5 " in lab or "τ1=0.5" in lab for lab in labels)
        assert [m["tau"] for m in fig.threshold_marks] == used
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)
    # Unmoved thresholds carry no "configured" note; the PNG is still written.
    path = tracking.reward_histogram(rewards, [0.8], str(tmp_path / "h.png"), configured=[0.8])
    assert os.path.getsize(path) > 0
    assert tracking.threshold_marks(rewards, [0.8], [0.8])[0]["label"] == " τ1 = 0.8: 30% kept"


def test_bc_valid_reward_is_the_one_this_run_measured():
    """A given policy's lineage carries its own training's validation figure; the BC row shows the
    first Improve step's check of the same policy on this run's valid split instead."""
    bc = summary.make_row("bc", 0, 0, {"test_bleu": 1.0, "test_chrf": 2.0, "test_reward": 0.3}, "bc",
                          {"kind": "bc", "bc_training": {"best_valid_reward": 0.4465}})
    first = summary.make_row("rest g1 i1", 1, 1, {"test_bleu": 1.0, "test_chrf": 2.0, "test_reward": 0.3}, "p",
                             {"best_valid_reward": 0.45, "start_valid_reward": 0.4123})
    ctrl = summary.make_row("control", 0, 0, {"test_bleu": 1.0, "test_chrf": 2.0, "test_reward": 0.3}, "c",
                            {"best_valid_reward": 0.44, "start_valid_reward": 0.4123}, control=True)
    rows = summary.measured_bc_valid([bc, first, ctrl])
    assert rows[0]["valid_reward"] == 0.4123 and rows[0]["valid_reward_from"] == "g1/i1 step 0"
    assert rows[1]["valid_reward"] == 0.45 and rows[2]["valid_reward"] == 0.44
    assert summary.measured_bc_valid([bc])[0]["valid_reward"] == 0.4465  # no Improve step: the lineage's


def test_summary_says_when_outputs_got_longer():
    """A ReST step whose translations run longer than BC's (the chrF beta-2 reward pays for length) is
    named in plain words, with the length against the references, and shows in the step table."""
    r = rows({**POINT, "test_length_ratio": 1.14})
    r[0]["test_length_ratio"] = 1.05
    v = summary.verdict(r)
    assert v["length_ratio"]["change"] == pytest.approx(1.14 / 1.05 - 1)
    text = summary.verdict_text(v)
    assert "8.6 % longer than BC's (length against the references 1.050 -> 1.140)" in text and "chrf1" in text
    assert "| length |" in summary.markdown_table(r) and "| 1.140 |" in summary.markdown_table(r)
    # Within the tolerance, or without lengths (an older report), nothing is said.
    r[1]["test_length_ratio"] = 1.06
    assert "longer than BC" not in summary.verdict_text(summary.verdict(r))
    assert "length_ratio" not in summary.verdict(rows(POINT)) and "| length |" not in summary.markdown_table(rows(POINT))
