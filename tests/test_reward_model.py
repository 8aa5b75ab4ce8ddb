"""The learned, reference-free reward model: correlations, pair encoding, training, loading, errors."""
from __future__ import annotations

import itertools
import json
import math
import os
import random

import numpy as np
import pytest
import torch

from conftest import bundled_rows
from rest.config import RewardModelConfig
from rest.rewards.learned import (correlations, encode_pairs, kendall_tau_b, load_pairs,
                               spearman_rho, split_by_source, split_selection_test, train_reward_model)

torch.set_num_threads(1)

TINY = dict(d_model=32, layers=1, heads=2, ffn_dim=64, max_length=64, batch_size=16, threads=1)


# --------------------------------------------------------------------------- correlations

def test_correlations_hand_cases():
    assert correlations([1, 2, 3, 4, 5], [10, 20, 30, 40, 50]) == pytest.approx({"kendall_tau": 1.0, "spearman_rho": 1.0})
    c = correlations([1, 2, 3, 4, 5], [5, 4, 3, 2, 1])
    assert c["kendall_tau"] == pytest.approx(-1.0) and c["spearman_rho"] == pytest.approx(-1.0)
    # 7 concordant, 3 discordant pairs: τ = 4/10; Σd² = 8: ρ = 1 - 6·8/(5·24).
    c = correlations([1, 2, 3, 4, 5], [3, 1, 2, 5, 4])
    assert c["kendall_tau"] == pytest.approx(0.4) and c["spearman_rho"] == pytest.approx(0.6)


def test_correlations_with_ties():
    # Pairs: 4 concordant, one tied in x only, one tied in y only: τ-b = 4 / sqrt(5·5).
    assert kendall_tau_b([1, 2, 2, 3], [1, 2, 3, 3]) == pytest.approx(0.8)
    # Average ranks x = 1, 2.5, 2.5, 4 and y = 1, 2, 3.5, 3.5: ρ = 3.75 / 4.5.
    assert spearman_rho([1, 2, 2, 3], [1, 2, 3, 3]) == pytest.approx(3.75 / 4.5)
    # Ties on both sides at once: the pair (0, 1) counts in neither denominator term's C or D.
    assert kendall_tau_b([1, 1, 2], [1, 1, 2]) == pytest.approx(1.0)
    assert math.isnan(kendall_tau_b([1, 1, 1], [1, 2, 3]))
    assert math.isnan(spearman_rho([1, 2, 3], [0.5, 0.5, 0.5]))
    assert math.isnan(kendall_tau_b([1], [1]))
    with pytest.raises(ValueError, match="predictions"):
        kendall_tau_b([1, 2], [1, 2, 3])


def _brute_tau_b(x, y):
    c = d = tx = ty = 0
    for i, j in itertools.combinations(range(len(x)), 2):
        a, b = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
        if a == 0 and b == 0:
            continue
        if a == 0:
            tx += 1
        elif b == 0:
            ty += 1
        elif a * b > 0:
            c += 1
        else:
            d += 1
    return (c - d) / math.sqrt((c + d + tx) * (c + d + ty))


def test_kendall_matches_pair_counting_with_many_ties():
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(3, 30))
        x, y = rng.integers(0, 4, n).astype(float), rng.integers(0, 3, n).astype(float)
        if len(set(x)) > 1 and len(set(y)) > 1:
            assert kendall_tau_b(x, y) == pytest.approx(_brute_tau_b(x, y))


# --------------------------------------------------------------------------- encoding and split

def test_pair_encoding_layout_and_truncation(tiny_policy):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_policy)
    src, cand = "Klicken Sie auf OK.", "Click OK."
    (ids, types), = encode_pairs(tok, [src], [cand], 192)
    s = tok(src, add_special_tokens=False)["input_ids"]
    c = tok(cand, add_special_tokens=False)["input_ids"]
    assert ids == [0, *s, 2, *c, 2]                       # <s> source </s> candidate </s>
    assert types == [0] * (len(s) + 2) + [1] * (len(c) + 1)
    long = " ".join(["Dokument"] * 60)
    (ids, types), = encode_pairs(tok, [long], [cand], 16)
    assert len(ids) == 16 and len(types) == 16
    assert ids[-len(c) - 1:] == [*c, 2]                   # the short candidate is kept whole
    (ids, _), = encode_pairs(tok, [long], [long], 17)
    assert len(ids) == 17 and ids.count(2) == 2


def test_split_is_by_source():
    ids = [f"s{k // 5}" for k in range(500)]              # 100 sources, 5 candidates each
    held = split_by_source(ids, 0.2, seed=3)
    valid = {s for s, h in zip(ids, held) if h}
    train = {s for s, h in zip(ids, held) if not h}
    assert not valid & train and valid | train == set(ids)
    assert 5 <= len(valid) <= 40
    assert (held == split_by_source(ids, 0.2, seed=3)).all()
    # Few sources: still one on each side.
    held = split_by_source(["a", "a", "b"], 0.1, seed=0)
    assert held.any() and not held.all()
    with pytest.raises(ValueError, match="at least 2"):
        split_by_source(["a", "a"], 0.1, seed=0)


def test_selection_and_test_splits_are_disjoint_by_source():
    from rest.rewards.learned import SELECTION, TEST, TRAIN

    ids = [f"s{k // 5}" for k in range(1000)]             # 200 sources, 5 candidates each
    side = split_selection_test(ids, 0.1, seed=3)
    by_side = {k: {s for s, v in zip(ids, side) if v == k} for k in (TRAIN, SELECTION, TEST)}
    assert not (by_side[TRAIN] & by_side[SELECTION] or by_side[TRAIN] & by_side[TEST]
                or by_side[SELECTION] & by_side[TEST])
    assert 8 <= len(by_side[SELECTION]) <= 35 and 8 <= len(by_side[TEST]) <= 35
    # The selection split is the split_by_source hold-out; the test split comes out of its train side.
    assert (split_by_source(ids, 0.1, seed=3) == (side == SELECTION)).all()
    # Three sources: one on each side, whatever the hash says.
    for seed in range(50):
        assert set(split_selection_test(["a", "b", "c", "a"], 0.4, seed)) == {TRAIN, SELECTION, TEST}
    with pytest.raises(ValueError, match="at least 3"):
        split_selection_test(["a", "b", "a"], 0.1, seed=0)


# --------------------------------------------------------------------------- training on synthetic data

def _garbage(rng: random.Random, n_words: int) -> str:
    return " ".join("".join(rng.choice("qxzjkvw") for _ in range(rng.randint(2, 6))) for _ in range(n_words))


def synthetic_scored(path, n_sources=60, seed=0) -> str:
    """Score-step rows whose quality shows in the candidate: reference, damaged, garbage."""
    rng = random.Random(seed)
    rows = []
    for k, (_, de, en) in enumerate(bundled_rows("train", n_sources)):
        words = en.split()
        half = " ".join(words[:max(1, len(words) // 2)])
        cands = [(en, "reference"), (half, "sample"), (half + " " + _garbage(rng, 3), "sample"),
                 (_garbage(rng, len(words)), "sample"), (_garbage(rng, 2), "sample")]
        for j, (c, origin) in enumerate(cands):
            rows.append({"id": f"{k}#{j}", "source_id": f"src{k}", "source": de, "candidate": c,
                         "reference": en, "origin": origin, "reward": 0.0})
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "data.jsonl"), "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return str(path)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_policy):
    d = tmp_path_factory.mktemp("rm")
    scored = synthetic_scored(d / "scored")
    cfg = RewardModelConfig(**TINY, epochs=6, learning_rate=3e-3, valid_fraction=0.3, seed=1)
    out = str(d / "model")
    stats = train_reward_model([scored], cfg, out, tiny_policy)
    return {"stats": stats, "out": out, "scored": scored}


def test_training_learns_a_ranking_and_saves_everything(trained):
    stats, out = trained["stats"], trained["out"]
    assert stats["kendall_tau"] > 0.3 and stats["spearman_rho"] > 0.3
    assert stats["split"] == "test"
    assert stats["train_pairs"] + stats["valid_pairs"] + stats["test_pairs"] == 300
    assert stats["train_sources"] + stats["valid_sources"] + stats["test_sources"] == 60
    assert stats["valid_sources"] >= 5 and stats["test_sources"] >= 5
    assert len(stats["history"]) == 6 and 1 <= stats["best_epoch"] <= 6
    # The epoch is the best by selection τ; the history and the selection field hold selection figures...
    picked = stats["history"][stats["best_epoch"] - 1]["kendall_tau"]
    assert picked == max(h["kendall_tau"] for h in stats["history"])
    assert stats["selection_kendall_tau"] == pytest.approx(picked)
    # ...and the reported τ is measured on other sources: not the selection figure.
    assert stats["kendall_tau"] != pytest.approx(picked, abs=1e-9)
    files = set(os.listdir(out))
    assert {"config.json", "model.safetensors", "rest_reward_model.json", "stats.json", "calibration.png"} <= files
    assert not any(f.endswith(".bin") for f in files)
    info = json.load(open(os.path.join(out, "rest_reward_model.json")))
    assert info["metric"] == "chrf" and info["encoding"]["scheme"] == "rest-pair-v1"
    assert info["kendall_tau"] == pytest.approx(stats["kendall_tau"])
    assert not [f for f in os.listdir(os.path.dirname(out)) if f.startswith(".model.")]  # no temporaries left


def test_saved_model_scores_without_references(trained):
    from rest.rewards.metrics import LearnedReward, compute, get_reward

    fn = get_reward("reward_model", trained["out"])
    assert isinstance(fn, LearnedReward) and getattr(fn, "reference_free", False)
    rows = [json.loads(line) for line in open(os.path.join(trained["scored"], "data.jsonl"))][:40]
    scores = compute(fn, [r["source"] for r in rows], [r["candidate"] for r in rows], [""] * len(rows))
    assert len(scores) == 40 and all(0.0 <= v <= 1.0 for v in scores)
    # Batching and length-sorting do not change a pair's score or the order of the outputs.
    fn.batch_size = 7
    assert fn([r["source"] for r in rows], [r["candidate"] for r in rows]) == pytest.approx(scores, abs=1e-5)
    # References score above garbage on average (the model learnt something that transfers).
    ref = np.mean([s for s, r in zip(scores, rows) if r["origin"] == "reference"])
    assert ref > np.mean([s for s, r in zip(scores, rows) if r["origin"] == "sample"])


def test_max_pairs_and_references_excluded(tmp_path, tiny_policy):
    scored = synthetic_scored(tmp_path / "scored", n_sources=20)
    cfg = RewardModelConfig(**TINY, epochs=1, max_pairs=30, include_references=False, valid_fraction=0.2)
    stats = train_reward_model([scored], cfg, str(tmp_path / "m"), tiny_policy)
    assert stats["train_pairs"] == 30 and stats["train_reference_pairs"] == 0
    assert stats["references_dropped"] == 20


def test_cli_prints_the_figures(tmp_path, tiny_policy, capsys):
    from rest_kfp.cli import main

    scored = synthetic_scored(tmp_path / "scored", n_sources=12)
    rc = main(["reward-model", "--scored", scored, "--tokenizer", tiny_policy, "--out", str(tmp_path / "m"),
               "--reward_model.epochs", "1", "--reward_model.d_model", "32", "--reward_model.layers", "1",
               "--reward_model.heads", "2", "--reward_model.ffn_dim", "64", "--reward_model.valid_fraction", "0.3",
               "--reward_model.threads", "1"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert {"kendall_tau", "spearman_rho", "train_pairs", "valid_pairs"} <= set(out)
    assert main(["reward-model", "--scored", str(tmp_path / "nope"), "--tokenizer", tiny_policy,
                 "--out", str(tmp_path / "m2")]) == 2
    assert "not found" in capsys.readouterr().err


# --------------------------------------------------------------------------- bad inputs, atomic writes

def _write(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    return str(path)


def test_bad_inputs_give_clear_errors(tmp_path, tiny_policy):
    cfg = RewardModelConfig(**TINY, epochs=1)
    out = str(tmp_path / "m")
    with pytest.raises(ValueError, match="no scored rows"):
        train_reward_model([_write(tmp_path / "empty.jsonl", [])], cfg, out, tiny_policy)
    no_refs = [{"source_id": f"s{k}", "source": "Hallo", "candidate": "Hello", "reference": None} for k in range(4)]
    with pytest.raises(ValueError, match="none of the 4 rows has a reference"):
        train_reward_model([_write(tmp_path / "norefs.jsonl", no_refs)], cfg, out, tiny_policy)
    with pytest.raises(FileNotFoundError, match="not found"):
        train_reward_model([str(tmp_path / "missing.jsonl")], cfg, out, tiny_policy)
    os.makedirs(tmp_path / "emptydir")
    with pytest.raises(FileNotFoundError, match="no data.jsonl"):
        load_pairs([str(tmp_path / "emptydir")])
    with pytest.raises(ValueError, match="'source' and 'candidate'"):
        load_pairs([_write(tmp_path / "bad.jsonl", [{"source": "x"}])])
    assert not os.path.exists(out)


def test_failure_leaves_no_half_written_model(tmp_path, tiny_policy, monkeypatch):
    import rest.rewards.learned as rm

    scored = synthetic_scored(tmp_path / "scored", n_sources=10)
    cfg = RewardModelConfig(**TINY, epochs=1, valid_fraction=0.3)
    out = tmp_path / "m"
    os.makedirs(out)
    (out / "old.txt").write_text("previous model")

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(rm, "_plot_calibration", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        train_reward_model([scored], cfg, str(out), tiny_policy)
    assert os.listdir(out) == ["old.txt"]                 # the previous contents, untouched
    assert sorted(os.listdir(tmp_path)) == ["m", "scored"]  # no temporaries left beside it


def test_init_from_a_seq2seq_policy(tmp_path, tiny_policy):
    """``init`` loads a checkpoint as a classifier (the mBART policy itself: no token types; d_model unused)."""
    from rest.rewards.metrics import get_reward

    scored = synthetic_scored(tmp_path / "scored", n_sources=10)
    cfg = RewardModelConfig(**{**TINY, "d_model": 96, "heads": 3}, epochs=1, valid_fraction=0.3, init=tiny_policy)
    stats = train_reward_model([scored], cfg, str(tmp_path / "m"), "")
    assert stats["encoding"]["token_type_ids"] is False and stats["init"] == tiny_policy
    fn = get_reward("reward_model", str(tmp_path / "m"))
    assert all(0.0 <= v <= 1.0 for v in fn(["Hallo Welt."] * 2, ["Hello world.", "qxz"], None))


# --------------------------------------------------------------------------- within-source ranking loss

def test_ranking_loss_counts_only_ordered_pairs_of_one_source():
    import torch

    from rest.rewards.learned import ranking_loss

    target = torch.tensor([0.9, 0.5, 0.1, 0.7, 0.7])
    groups = torch.tensor([0, 0, 0, 1, 1])  # source 1's two candidates tie: no pair from it
    right = torch.tensor([2.0, 1.0, 0.0, 5.0, -5.0])
    # Brute force: pairs (0,1), (0,2), (1,2) of source 0, each -log σ(p_better - p_worse).
    want = np.mean([np.log1p(np.exp(-d)) for d in (1.0, 2.0, 1.0)])
    assert float(ranking_loss(right, target, groups)) == pytest.approx(want, rel=1e-6)
    assert float(ranking_loss(-right, target, groups)) > float(ranking_loss(right, target, groups))
    # Across sources nothing is compared: a huge gap between sources changes nothing.
    shifted = right + torch.tensor([0.0, 0.0, 0.0, 100.0, 100.0])
    assert float(ranking_loss(shifted, target, groups)) == pytest.approx(want, rel=1e-6)
    # No ordered pair at all: 0, and still differentiable.
    pred = torch.zeros(2, requires_grad=True)
    zero = ranking_loss(pred, torch.tensor([0.5, 0.5]), torch.tensor([0, 0]))
    zero.backward()
    assert float(zero.detach()) == 0.0 and pred.grad is not None


def test_source_batches_keep_each_source_whole():
    from rest.rewards.learned import source_batches

    sources = [f"s{k % 13}" for k in range(130)]  # 13 sources x 10 candidates, interleaved
    batches = source_batches(sources, 32, random.Random(0))
    assert sorted(i for b in batches for i in b) == list(range(130))
    for b in batches:
        assert len(b) <= 32
        for s in {sources[i] for i in b}:  # every candidate of a source in this batch
            assert sum(sources[i] == s for i in b) == 10
    assert source_batches(sources, 32, random.Random(0)) == batches  # seeded
    assert [len(b) for b in source_batches(["a"] * 50, 16, random.Random(0))] == [50]  # too big: alone


def test_ranking_weight_trains_a_within_source_ranker(tmp_path, tiny_policy):
    scored = synthetic_scored(tmp_path / "scored")
    cfg = RewardModelConfig(**TINY, epochs=4, learning_rate=3e-3, valid_fraction=0.3, seed=1, ranking_weight=1.0)
    stats = train_reward_model([scored], cfg, str(tmp_path / "m"), tiny_policy)
    assert stats["selected_on"] == "per_source_kendall_tau" and stats["ranking_weight"] == 1.0
    picked = stats["history"][stats["best_epoch"] - 1]["per_source_kendall_tau"]
    assert picked == max(h["per_source_kendall_tau"] for h in stats["history"])
    # Reference > half > half + garbage > garbage within every source: learnable, and learnt.
    assert stats["per_source_kendall_tau"] > 0.3 and stats["kendall_tau"] > 0.3
    with pytest.raises(Exception, match="ranking_weight"):
        RewardModelConfig(ranking_weight=-1.0)
