"""A learned, reference-free reward: a small cross-encoder that predicts a reference-based metric.

ReST needs a reward for every sample. Sources that come without a human translation can
only be scored by a model that looks at the (source, candidate) pair alone. This module
trains one: a BERT-style cross-encoder regressing the sentence metric (chrF or BLEU, in
[0, 1]) that the scored candidates got against their references, and keeps the epoch that
*ranks* held-out candidates best (Kendall τ), since filtering and ranking are what ReST
uses the reward for. The epoch is picked on a selection split and the reported τ / ρ come
from a separate test split of other sources: a figure picked as the best of several epochs
on one split is biased upward on that split.

This module is the training (data, splits, loop, calibration plot, stats). Loading a
trained model and scoring with it is :mod:`rest.rewards.reward_model`, whose pair encoding
(:func:`encode_pairs` + :func:`collate`) training uses too, so a saved model is scored
exactly as it was trained.
"""
from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import random
import time
from dataclasses import asdict
from typing import Sequence

import numpy as np

from rest.config import RewardModelConfig
from rest.model.device import Meter, cpu_threads, model_device, resolve
from rest.rewards.metrics import get_reward
from rest.rewards.reward_model import (ENCODING, INFO_FILE, accepts_token_types, collate, encode_pairs,
                                       length_batches, pair_special_ids, read_info)
from rest.services.files import atomic_path, read_jsonl

__all__ = ["ENCODING", "INFO_FILE", "SELECTION", "TEST", "TRAIN", "accepts_token_types", "collate", "correlations",
           "encode_pairs", "kendall_tau_b", "length_batches", "load_pairs", "pair_special_ids", "predict",
           "read_info", "spearman_rho", "split_by_source", "split_selection_test", "train_reward_model"]

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- correlations

def kendall_tau_b(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's τ-b (tie-corrected, scipy); NaN when either side is constant or has < 2 items."""
    return _scipy_correlation("kendalltau", x, y)


def spearman_rho(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's ρ (scipy: Pearson correlation of average ranks); NaN when either side is constant."""
    return _scipy_correlation("spearmanr", x, y)


def _scipy_correlation(name: str, x: Sequence[float], y: Sequence[float]) -> float:
    import warnings

    from scipy import stats

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"{name}: {len(x)} predictions for {len(y)} truths")
    if len(x) < 2:
        return float("nan")
    with warnings.catch_warnings():  # constant input: scipy warns and returns NaN, which callers handle
        warnings.simplefilter("ignore")
        return float(getattr(stats, name)(x, y).statistic)


def correlations(pred: Sequence[float], true: Sequence[float]) -> dict[str, float]:
    """``{"kendall_tau": τ-b, "spearman_rho": ρ}`` of predictions against truths (NaN if undefined)."""
    return {"kendall_tau": kendall_tau_b(pred, true), "spearman_rho": spearman_rho(pred, true)}


def _finite_or_none(v):
    return None if v is None or v != v else float(v)


def predict(model, encoded, pad_id: int, batch_size: int = 128, token_types: bool = True) -> np.ndarray:
    """Raw regression outputs for encoded pairs, in input order (no clamping)."""
    import torch

    device = model_device(model)
    out = np.empty(len(encoded), dtype=float)
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for batch in length_batches([len(e[0]) for e in encoded], batch_size, None):
            inputs = collate(encoded, batch, pad_id, token_types)
            logits = model(**{k: v.to(device) for k, v in inputs.items()}).logits[:, 0]
            out[batch] = logits.float().cpu().numpy()
    model.train(was_training)
    return out


# --------------------------------------------------------------------------- data

def _data_file(path: str) -> str:
    f = os.path.join(path, "data.jsonl") if os.path.isdir(path) else path
    if not os.path.isfile(f):
        what = "scored directory holds no data.jsonl" if os.path.isdir(path) else "scored file not found"
        raise FileNotFoundError(f"{f}: {what}; pass the score step's output directory or its data.jsonl")
    return f


def load_pairs(scored_paths: Sequence[str], include_references: bool = True) -> tuple[list[dict], dict]:
    """(source_id, source, candidate, reference) rows usable for training, and what was skipped."""
    if not scored_paths:
        raise ValueError("no scored data given; pass at least one score step output (--scored DIR)")
    rows, seen, no_ref, refs_dropped = [], 0, 0, 0
    for path in scored_paths:
        f = _data_file(path)
        for lineno, r in enumerate(read_jsonl(f), 1):
            seen += 1
            if "source" not in r or "candidate" not in r:
                raise ValueError(f"{f}:{lineno}: a scored row needs 'source' and 'candidate'")
            if not r.get("reference"):
                no_ref += 1
                continue
            if not include_references and r.get("origin") == "reference":
                refs_dropped += 1
                continue
            rows.append({"source_id": str(r.get("source_id") or r["source"]), "source": r["source"],
                         "candidate": r["candidate"], "reference": r["reference"],
                         "origin": r.get("origin", "sample")})
    if seen == 0:
        raise ValueError(f"{', '.join(scored_paths)}: no scored rows; nothing to train the reward model on")
    if not rows:
        why = (f"none of the {seen} rows has a reference" if no_ref == seen else
               f"{no_ref} rows have no reference and {refs_dropped} are references (include_references=false)")
        raise ValueError(f"{', '.join(scored_paths)}: no usable rows ({why}); the reward model learns a "
                         "reference-based metric, so it needs candidates of sources with references")
    return rows, {"rows_read": seen, "rows_without_reference": no_ref, "references_dropped": refs_dropped}


def _source_hash(unique: Sequence[str], seed: int) -> dict[str, float]:
    """A seeded uniform number in [0, 1) per source id."""
    return {s: int.from_bytes(hashlib.sha256(f"{seed}:{s}".encode()).digest()[:8], "big") / 2.0 ** 64
            for s in unique}


def split_by_source(source_ids: Sequence[str], valid_fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of held-out rows: a seeded hash puts all rows of a source on one side.

    At least one source lands on each side whenever there are two or more.
    """
    unique = sorted(set(source_ids))
    if len(unique) < 2:
        raise ValueError(f"the scored rows hold {len(unique)} source(s); a held-out split needs at least 2")
    u = _source_hash(unique, seed)
    held = {s for s, v in u.items() if v < valid_fraction}
    if not held:
        held = {min(unique, key=u.get)}
    if len(held) == len(unique):
        held.discard(max(unique, key=u.get))
    return np.array([s in held for s in source_ids])


TRAIN, SELECTION, TEST = 0, 1, 2


def split_selection_test(source_ids: Sequence[str], fraction: float, seed: int) -> np.ndarray:
    """Per row: ``TRAIN``, ``SELECTION`` (picks the epoch) or ``TEST`` (reported figures), by source.

    Sources hashed below ``fraction`` are the selection split (the same sources
    :func:`split_by_source` holds out), those in [fraction, 2·fraction) the test split; all
    rows of a source share one side. With three or more sources each side gets at least one.
    """
    unique = sorted(set(source_ids))
    if len(unique) < 3:
        raise ValueError(f"the scored rows hold {len(unique)} source(s); train, selection and test splits "
                         "need at least 3")
    u = _source_hash(unique, seed)
    side = {s: SELECTION if v < fraction else TEST if v < 2 * fraction else TRAIN for s, v in u.items()}
    # Tiny inputs: an empty side takes a source from the largest side (which then has >= 2).
    for want in (SELECTION, TEST, TRAIN):
        members = {k: [s for s in unique if side[s] == k] for k in (TRAIN, SELECTION, TEST)}
        if not members[want]:
            donor = max(members.values(), key=len)
            side[min(donor, key=u.get)] = want
    return np.array([side[s] for s in source_ids], dtype=int)


# --------------------------------------------------------------------------- model

def _build_model(cfg: RewardModelConfig, tokenizer_dir: str):
    """(model, tokenizer, max_length): a from-scratch BERT regressor, or ``cfg.init`` loaded."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertConfig, \
        BertForSequenceClassification

    from rest.model.policy import check_policy_dir

    if cfg.init:
        from rest.model.policy import resolve_policy

        path = resolve_policy(cfg.init)
        check_policy_dir(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
        torch.manual_seed(cfg.seed)   # the new regression head is initialised from this
        model = AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=1, problem_type="regression", use_safetensors=True, trust_remote_code=False,
            ignore_mismatched_sizes=True)
        positions = getattr(model.config, "max_position_embeddings", None) or cfg.max_length
        # Two positions spare: RoBERTa-style models reserve the first ones for padding.
        return model, tokenizer, min(cfg.max_length, positions - 2)
    if not os.path.isdir(tokenizer_dir):
        raise FileNotFoundError(f"{tokenizer_dir}: tokenizer directory not found (normally the policy's directory)")
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    sp = pair_special_ids(tokenizer)
    torch.manual_seed(cfg.seed)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=cfg.d_model, num_hidden_layers=cfg.layers,
                        num_attention_heads=cfg.heads, intermediate_size=cfg.ffn_dim,
                        max_position_embeddings=cfg.max_length, type_vocab_size=2, pad_token_id=sp["pad_id"],
                        num_labels=1, problem_type="regression")
    return BertForSequenceClassification(config), tokenizer, cfg.max_length


def _lr(step: int, total: int, peak: float) -> float:
    """Linear warm-up over the first 6 % of steps, then linear decay to zero."""
    warmup = max(1, int(0.06 * total))
    if step <= warmup:
        return peak * step / warmup
    return peak * max(0.0, (total - step) / max(1, total - warmup))


def source_batches(source_ids: Sequence[str], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Batches of whole sources (all of a source's candidates in one batch), about ``batch_size`` rows each.

    The ranking loss compares candidates of the same source, so they must meet in a batch;
    a source with more candidates than ``batch_size`` gets a batch of its own.
    """
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(source_ids):
        groups.setdefault(s, []).append(i)
    order = list(groups.values())
    rng.shuffle(order)
    batches, current = [], []
    for group in order:
        if current and len(current) + len(group) > batch_size:
            batches.append(current)
            current = []
        current = current + group
    if current:
        batches.append(current)
    return batches


def ranking_loss(pred, target, groups):
    """RankNet loss within groups: mean of -log σ(pred_i - pred_j) over pairs of one group where target_i > target_j.

    ``groups``: an integer tensor, equal for rows of the same source. Pairs with equal targets
    carry no order and are left out; a batch without any ordered pair gives 0 (with a graph).
    """
    import torch

    ordered = (groups[:, None] == groups[None, :]) & (target[:, None] > target[None, :] + 1e-9)
    if not bool(ordered.any()):
        return pred.sum() * 0.0
    return torch.nn.functional.softplus(-(pred[:, None] - pred[None, :])[ordered]).mean()


def _per_source_tau(pred: np.ndarray, true: np.ndarray, sources: Sequence[str]) -> tuple[float | None, int]:
    """Mean Kendall τ within sources (what a per-source filter sees); sources with τ undefined are left out."""
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(sources):
        groups.setdefault(s, []).append(i)
    taus = [kendall_tau_b(pred[g], true[g]) for g in groups.values() if len(g) >= 2]
    taus = [t for t in taus if t == t]
    return (float(np.mean(taus)) if taus else None), len(taus)


def _evaluate(model, encoded, true: np.ndarray, sources, is_reference: np.ndarray, pad_id: int,
              batch_size: int) -> tuple[dict, np.ndarray]:
    raw = predict(model, encoded, pad_id, batch_size, accepts_token_types(model))
    pred = np.clip(raw, 0.0, 1.0)   # what LearnedReward returns
    c = correlations(pred, true)
    per_source, n_sources = _per_source_tau(pred, true, sources)
    # Without the references (whose metric is the maximum and which are easy to tell apart):
    # how well the model ranks the policy's own samples, which is what filtering decides on.
    samples = ~is_reference
    cs = correlations(pred[samples], true[samples]) if samples.sum() >= 2 else {}
    return {"kendall_tau": _finite_or_none(c["kendall_tau"]), "spearman_rho": _finite_or_none(c["spearman_rho"]),
            "samples_kendall_tau": _finite_or_none(cs.get("kendall_tau")),
            "samples_spearman_rho": _finite_or_none(cs.get("spearman_rho")),
            "per_source_kendall_tau": per_source, "per_source_count": n_sources,
            "mse": float(np.mean((pred - true) ** 2)), "mean_prediction": float(pred.mean()),
            "mean_truth": float(true.mean())}, pred


def _plot_calibration(pred: np.ndarray, true: np.ndarray, stats: dict, path: str) -> None:
    """Predicted vs true metric: hexbin of all test-split pairs, binned means, the diagonal."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5))
    try:
        hb = ax.hexbin(true, pred, gridsize=30, extent=(0, 1, 0, 1), mincnt=1, cmap="Blues", bins="log")
        fig.colorbar(hb, ax=ax, label="pairs (log)")
        edges = np.linspace(0, 1, 11)
        which = np.clip(np.digitize(pred, edges) - 1, 0, 9)
        xs, ys = [], []
        for b in range(10):
            m = which == b
            if m.any():
                xs.append(true[m].mean())
                ys.append(pred[m].mean())
        ax.plot(xs, ys, "o-", color="tab:red", label="mean truth per prediction bin")
        ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
        metric = stats["metric"]
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel=f"true {metric}", ylabel=f"predicted {metric}")
        tau, rho = stats["kendall_tau"], stats["spearman_rho"]
        fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
        ax.set_title(f"reward model, test split, {stats['test_pairs']} pairs\nτ={fmt(tau)}  ρ={fmt(rho)}")
        ax.legend(loc="upper left", fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)


# --------------------------------------------------------------------------- training

def train_reward_model(scored_paths: list[str], cfg: RewardModelConfig, out_dir: str, tokenizer_dir: str) -> dict:
    """Train the cross-encoder on scored candidates; save it to ``out_dir``; return its stats.

    ``scored_paths`` are score step outputs (directories holding ``data.jsonl``) or JSONL
    files. The target is ``cfg.metric`` recomputed against each row's reference, whatever
    reward the rows were scored with. ``out_dir`` appears complete or not at all.
    """
    import torch


    t0 = time.time()
    device = resolve(cfg.device, "reward_model.device")
    cpu_threads(device, cfg.threads)  # CPU threads only when training on the CPU
    rows, skipped = load_pairs(scored_paths, cfg.include_references)
    # Three sides, by source: train; selection (picks the epoch); test (the reported figures,
    # never looked at before the epoch is chosen, so τ is not the maximum of several draws).
    side = split_selection_test([r["source_id"] for r in rows], cfg.valid_fraction, cfg.seed)
    train_idx = [i for i in range(len(rows)) if side[i] == TRAIN]
    valid_idx = [i for i in range(len(rows)) if side[i] == SELECTION]
    test_idx = [i for i in range(len(rows)) if side[i] == TEST]
    if cfg.max_pairs and len(train_idx) > cfg.max_pairs:
        train_idx = sorted(random.Random(cfg.seed).sample(train_idx, cfg.max_pairs))
    used = train_idx + valid_idx + test_idx
    t_metric = time.time()
    targets = np.asarray(get_reward(cfg.metric)([rows[i]["source"] for i in used],
                                                [rows[i]["candidate"] for i in used],
                                                [rows[i]["reference"] for i in used]), dtype=float)
    log.info("reward model: %s of %d pairs in %.1f s; %d train / %d selection / %d test pairs "
             "(%d / %d / %d sources)", cfg.metric, len(used), time.time() - t_metric, len(train_idx),
             len(valid_idx), len(test_idx), len({rows[i]["source_id"] for i in train_idx}),
             len({rows[i]["source_id"] for i in valid_idx}), len({rows[i]["source_id"] for i in test_idx}))
    n_tr, n_va = len(train_idx), len(valid_idx)
    y_train, y_valid, y_test = targets[:n_tr], targets[n_tr:n_tr + n_va], targets[n_tr + n_va:]
    valid_sources = [rows[i]["source_id"] for i in valid_idx]
    valid_is_ref = np.array([rows[i]["origin"] == "reference" for i in valid_idx], dtype=bool)
    test_sources = [rows[i]["source_id"] for i in test_idx]
    test_is_ref = np.array([rows[i]["origin"] == "reference" for i in test_idx], dtype=bool)

    model, tokenizer, max_length = _build_model(cfg, tokenizer_dir)
    sp = pair_special_ids(tokenizer)
    enc_train = encode_pairs(tokenizer, [rows[i]["source"] for i in train_idx],
                             [rows[i]["candidate"] for i in train_idx], max_length)
    enc_valid = encode_pairs(tokenizer, [rows[i]["source"] for i in valid_idx],
                             [rows[i]["candidate"] for i in valid_idx], max_length)
    enc_test = encode_pairs(tokenizer, [rows[i]["source"] for i in test_idx],
                            [rows[i]["candidate"] for i in test_idx], max_length)
    n_params = sum(p.numel() for p in model.parameters())
    log.info("reward model: %s with %.2fM parameters, pairs of at most %d tokens",
             cfg.init or "BERT from scratch", n_params / 1e6, max_length)

    lengths = [len(e[0]) for e in enc_train]
    token_types = accepts_token_types(model)
    train_sources = [rows[i]["source_id"] for i in train_idx]
    source_number = {s: k for k, s in enumerate(dict.fromkeys(train_sources))}
    source_t = torch.tensor([source_number[s] for s in train_sources], device=device)

    def batches(rng: random.Random) -> list[list[int]]:
        # The ranking loss compares one source's candidates: they must share a batch.
        if cfg.ranking_weight:
            return source_batches(train_sources, cfg.batch_size, rng)
        return length_batches(lengths, cfg.batch_size, rng)

    # Which selection figure picks the epoch: within-source τ when the model is trained to rank within sources.
    select_on = "per_source_kendall_tau" if cfg.ranking_weight else "kendall_tau"
    steps_per_epoch = len(batches(random.Random(cfg.seed * 7919 + 1)))
    total_steps = steps_per_epoch * cfg.epochs
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=0.01)
    model.to(device)
    y_t = torch.tensor(y_train, dtype=torch.float, device=device)
    history, best, best_tau, best_epoch = [], None, float("-inf"), 0
    step, train_start = 0, time.time()
    meter = Meter(device).start()
    model.train()
    for epoch in range(1, cfg.epochs + 1):
        torch.manual_seed(cfg.seed * 7919 + epoch)   # dropout masks: the same run gives the same model
        epoch_start, loss_sum, loss_n = time.time(), 0.0, 0
        last_log, log_pairs = time.time(), 0
        for batch in batches(random.Random(cfg.seed * 7919 + epoch)):
            step += 1
            for g in opt.param_groups:
                g["lr"] = _lr(step, total_steps, cfg.learning_rate)
            inputs = collate(enc_train, batch, sp["pad_id"], token_types)
            pred = model(**{k: v.to(device) for k, v in inputs.items()}).logits[:, 0]
            mse = torch.nn.functional.mse_loss(pred, y_t[batch])
            loss = mse + cfg.ranking_weight * ranking_loss(pred, y_t[batch], source_t[batch]) \
                if cfg.ranking_weight else mse
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            loss_sum, loss_n, log_pairs = loss_sum + float(mse.detach()) * len(batch), loss_n + len(batch), \
                log_pairs + len(batch)
            if time.time() - last_log > 15:
                log.info("reward model: epoch %d step %d/%d train MSE %.4f, %.0f pairs/s", epoch, step,
                         total_steps, loss_sum / loss_n, log_pairs / (time.time() - last_log))
                last_log, log_pairs = time.time(), 0
        train_s = time.time() - epoch_start
        ev, _ = _evaluate(model, enc_valid, y_valid, valid_sources, valid_is_ref, sp["pad_id"], cfg.batch_size * 2)
        tau = ev[select_on] if ev[select_on] is not None else float("-inf")
        improved = tau > best_tau
        if improved or best is None:
            best, best_tau, best_epoch = copy.deepcopy(model.state_dict()), tau, epoch
        history.append({"epoch": epoch, "step": step, "train_mse": loss_sum / max(1, loss_n),
                        "train_pairs_per_s": len(enc_train) / max(1e-9, train_s), **ev})
        log.info("reward model: epoch %d train MSE %.4f (%.0f pairs/s); selection τ %s ρ %s (samples only τ %s) "
                 "MSE %.4f%s", epoch, loss_sum / max(1, loss_n), len(enc_train) / max(1e-9, train_s),
                 _fmt(ev["kendall_tau"]), _fmt(ev["spearman_rho"]), _fmt(ev["samples_kendall_tau"]), ev["mse"],
                 " (best)" if improved else "")
    model.load_state_dict(best)
    model.eval()
    selected = history[best_epoch - 1]
    # The reported figures: the chosen epoch on the test split, looked at once.
    final, pred = _evaluate(model, enc_test, y_test, test_sources, test_is_ref, sp["pad_id"], cfg.batch_size * 2)
    train_wall = time.time() - train_start
    meter.stop()
    model.to("cpu")  # saved from the CPU, as on a CPU run

    stats = {
        "split": "test", "kendall_tau": final["kendall_tau"], "spearman_rho": final["spearman_rho"],
        "metric": cfg.metric,
        "selection_kendall_tau": selected["kendall_tau"], "selection_spearman_rho": selected["spearman_rho"],
        "samples_kendall_tau": final["samples_kendall_tau"], "samples_spearman_rho": final["samples_spearman_rho"],
        "per_source_kendall_tau": final["per_source_kendall_tau"],
        "per_source_kendall_tau_sources": final["per_source_count"], "mse": final["mse"],
        "mean_prediction": final["mean_prediction"], "mean_truth": final["mean_truth"],
        # valid_* is the selection split (as data.valid is the pipeline's selection split); test_* is reported.
        "train_pairs": len(train_idx), "valid_pairs": len(valid_idx), "test_pairs": len(test_idx),
        "train_sources": len({rows[i]["source_id"] for i in train_idx}), "valid_sources": len(set(valid_sources)),
        "test_sources": len(set(test_sources)),
        "train_reference_pairs": sum(rows[i]["origin"] == "reference" for i in train_idx),
        "best_epoch": best_epoch, "selected_on": select_on, "ranking_weight": cfg.ranking_weight,
        "epochs": cfg.epochs, "optimizer_steps": step, "parameters": n_params,
        "train_pairs_per_s": len(enc_train) * cfg.epochs / max(1e-9, train_wall),
        "wall_s": time.time() - t0, "history": history, **skipped,
        "encoding": {"scheme": ENCODING, "max_length": max_length, **sp, "token_type_ids": token_types,
                     "layout": "<s> source </s> candidate </s>; token_type_ids 0 then 1; longer side cut first"},
        "init": cfg.init, "tokenizer": cfg.init or tokenizer_dir, "scored": list(scored_paths),
        "reward_model_config": asdict(cfg),
        **meter.record(),  # device and peak memory (train_pairs_per_s above is the throughput)
    }
    with atomic_path(out_dir) as tmp:
        os.makedirs(tmp)
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        _plot_calibration(pred, y_test, stats, os.path.join(tmp, "calibration.png"))
        for name in (INFO_FILE, "stats.json"):
            with open(os.path.join(tmp, name), "w", encoding="utf-8") as f:
                json.dump(stats, f, indent=2, sort_keys=True, ensure_ascii=False)
                f.write("\n")
    log.info("reward model: saved to %s; test τ %s ρ %s (epoch %d, picked by selection τ %s) in %.0f s", out_dir,
             _fmt(stats["kendall_tau"]), _fmt(stats["spearman_rho"]), best_epoch,
             _fmt(stats["selection_kendall_tau"]), stats["wall_s"])
    return stats


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"
