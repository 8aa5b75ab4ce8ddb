"""Evaluate a policy on the held-out test split: corpus BLEU/chrF, mean reward, best-of-N."""
from __future__ import annotations

import logging
import math
import os
import time

import numpy as np

from sacrebleu.metrics import BLEU, CHRF

from rest.config import EvaluateConfig
from rest.steps.data import read_rows
from rest.services.files import write_json, write_jsonl
from rest.model.backends import generate_with
from rest.model.device import Meter, check_compute_type, place
from rest.model.policy import load_policy
from rest.rewards.metrics import compute
from rest.rewards.spec import RewardSpec

log = logging.getLogger(__name__)


def evaluate(policy_dir: str, test_path: str, cfg: EvaluateConfig, out_dir: str,
             reward: "RewardSpec | str" = "chrf", seed: int = 0, trust_remote_code: bool = False,
             threads: int = 0, hard_test_path: str | None = None) -> dict:
    """Translate the test split; write translations and metrics into ``out_dir``; return metrics.

    ``reward``: the run's :class:`RewardSpec` (or a reward name). With a true metric other
    than the reward (a learned reward judged against the references), its sentence mean is
    reported too, as ``test_true``. A verifiable (0/1) reward's mean is reported as
    ``test_accuracy`` too, and best-of-N as ``pass_at_k``. ``hard_test_path`` (data.hard_test):
    a second held-out set, reported as ``hard_reward`` / ``hard_accuracy`` with its outputs in
    ``hard_translations.jsonl``.
    """
    spec = RewardSpec.of(reward)
    t0 = time.time()
    rows = read_rows(test_path)
    model, tokenizer = load_policy(policy_dir, trust_remote_code=trust_remote_code)
    device = place(model, cfg.device, threads or cfg.threads, "evaluate.device")  # CPU threads only on the CPU
    if cfg.backend == "ctranslate2":
        check_compute_type(cfg.compute_type, device, "evaluate.compute_type")
    meter = Meter(device).start()
    sources, refs = [r["source"] for r in rows], [r["target"] for r in rows]
    hyps = [h[0] for h in generate_with(cfg.backend, cfg.compute_type)(
        model, tokenizer, sources, mode=cfg.decode, beam_size=cfg.beam_size, batch_sentences=cfg.batch_sentences,
        max_length_ratio=cfg.max_length_ratio, progress="evaluate")]
    translate_s = meter.elapsed()
    fn, true_fn = spec.functions()
    rewards = compute(fn, sources, hyps, refs)
    bleu = BLEU().corpus_score(hyps, [refs])
    metrics = {
        "test_bleu": bleu.score,
        "test_chrf": CHRF().corpus_score(hyps, [refs]).score,
        "test_reward": sum(rewards) / len(rewards),
        "test_sentences": len(rows),
        # Output length against the references (BLEU's tokens): a reward that pays for length (chrF's beta 2
        # weighs recall twice precision) shows up here first; the summary says so when it drifts.
        "test_length_ratio": bleu.sys_len / max(1, bleu.ref_len),
        "reward": spec.reward,
    }
    binary = bool(getattr(fn, "binary", False))
    if binary:
        metrics["test_accuracy"] = metrics["test_reward"]  # a 0/1 reward: its mean is the accuracy
    if true_fn is not None:
        true = compute(true_fn, sources, hyps, refs)
        metrics.update(test_true=sum(true) / len(true), true_metric=spec.true_metric)
    if cfg.best_of_n:
        bon = best_of_n(model, tokenizer, rows, fn, cfg.best_of_n, cfg.batch_sentences, seed, cfg.backend,
                        temperature=cfg.best_of_n_temperature, compute_type=cfg.compute_type, keep_rewards=True,
                        max_length_ratio=cfg.max_length_ratio)
        per_source = bon.pop("best_of_n_rewards")
        metrics.update(bon)
        if binary:
            metrics["pass_at_k"] = pass_at_k_curve(per_source)
    if hard_test_path:
        hard_rows = read_rows(hard_test_path)
        h_sources, h_refs = [r["source"] for r in hard_rows], [r["target"] for r in hard_rows]
        h_hyps = [h[0] for h in generate_with(cfg.backend, cfg.compute_type)(
            model, tokenizer, h_sources, mode=cfg.decode, beam_size=cfg.beam_size,
            batch_sentences=cfg.batch_sentences, max_length_ratio=cfg.max_length_ratio, progress="evaluate hard")]
        h_rewards = compute(fn, h_sources, h_hyps, h_refs)
        metrics.update(hard_reward=sum(h_rewards) / len(h_rewards), hard_sentences=len(hard_rows))
        if binary:
            metrics["hard_accuracy"] = metrics["hard_reward"]
        write_jsonl(os.path.join(out_dir, "hard_translations.jsonl"),
                    ({"id": r["id"], "source": s, "hypothesis": h, "reference": t, "reward": v}
                     for r, s, h, t, v in zip(hard_rows, h_sources, h_hyps, h_refs, h_rewards)))
    meter.stop()
    metrics["eval_wall_s"] = time.time() - t0
    metrics.update(meter.record(eval_sentences_per_s=len(rows) / max(1e-9, translate_s)))
    write_jsonl(os.path.join(out_dir, "translations.jsonl"),
                ({"id": r["id"], "source": s, "hypothesis": h, "reference": t, "reward": v}
                 for r, s, h, t, v in zip(rows, sources, hyps, refs, rewards)))
    write_json(os.path.join(out_dir, "metrics.json"), metrics)
    log.info("evaluate: BLEU %.2f chrF %.2f reward %.4f on %d sentences", metrics["test_bleu"], metrics["test_chrf"],
             metrics["test_reward"], len(rows))
    return metrics


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased pass@k estimate from ``n`` samples of which ``c`` are correct (Chen et al. 2021):
    the chance that a random ``k``-subset of the samples holds at least one correct one,
    1 - C(n-c, k) / C(n, k), computed as a product (no huge binomials)."""
    if not (0 <= c <= n and 1 <= k <= n):
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n (n={n}, c={c}, k={k})")
    if n - c < k:
        return 1.0
    return 1.0 - float(np.prod(1.0 - k / np.arange(n - c + 1, n + 1, dtype=float)))


def pass_at_k_curve(per_source: list[list[float]]) -> dict[str, float]:
    """Mean pass@k over sources for k = 1, 2, 4, .. and n, from each source's 0/1 sample rewards."""
    n = len(per_source[0])
    ks, k = [], 1
    while k <= n:
        ks.append(k)
        k *= 2
    if ks[-1] != n:
        ks.append(n)
    counts = [int(round(sum(r))) for r in per_source]
    return {str(k): float(np.mean([pass_at_k(n, c, k) for c in counts])) for k in ks}


def expected_best_of(rewards: list[float], m: int) -> float:
    """Expected best reward among ``m`` of the ``n`` samples drawn without replacement (unbiased).

    With the rewards sorted ascending, the i-th smallest (0-based) is the best of a random
    m-subset in C(i, m-1) of the C(n, m) subsets. Taking "the first m" instead would depend
    on the order a backend returns its samples in (CTranslate2 returns them sorted by
    likelihood, which inflates small m).
    """
    n = len(rewards)
    if not 1 <= m <= n:
        raise ValueError(f"best-of-{m} needs 1 <= m <= {n} samples")
    return float(best_of_table([rewards])[0, m - 1])


def best_of_table(per_source: list[list[float]]) -> np.ndarray:
    """Matrix [source, m-1] of :func:`expected_best_of` for every m = 1 .. n (n samples per source)."""
    rewards = np.sort(np.asarray(per_source, dtype=float), axis=1)
    n = rewards.shape[1]
    # weights[m-1, i] = C(i, m-1) / C(n, m): the chance the i-th smallest is the best of an m-subset.
    weights = np.array([[math.comb(i, m - 1) / math.comb(n, m) for i in range(n)] for m in range(1, n + 1)])
    return rewards @ weights.T


def smallest_n_reaching(per_source, target: float) -> int | None:
    """The smallest N (1 .. samples per source) whose mean best-of-N reward reaches ``target``; None if none does.

    ``per_source`` is a list of reward lists or a :func:`best_of_table` matrix.
    """
    table = per_source if isinstance(per_source, np.ndarray) else best_of_table(per_source)
    reached = np.flatnonzero(table.mean(axis=0) >= target)
    return int(reached[0]) + 1 if reached.size else None


def best_of_n(model, tokenizer, rows, reward_fn, n: int, batch_sentences: int = 64, seed: int = 0,
              backend: str = "hf", temperature: float = 1.0, keep_rewards: bool = False,
              compute_type: str = "default", max_length_ratio: float = 2.0) -> dict:
    """Mean over sources of the best reward among ``n`` samples, and the curve for 1, 2, 4, .. and n.

    Each point of the curve is the unbiased estimate from all ``n`` samples of a source
    (:func:`expected_best_of`), so the curve is smooth and does not depend on sample order.
    ``keep_rewards`` also returns every sample's reward per source (``best_of_n_rewards``),
    for comparisons at any N and bootstrap intervals.
    """
    sources, refs = [r["source"] for r in rows], [r["target"] for r in rows]
    outs = generate_with(backend, compute_type)(model, tokenizer, sources, mode="sample", num_return=n,
                                                temperature=temperature, batch_sentences=batch_sentences, seed=seed,
                                                max_length_ratio=max_length_ratio, progress=f"best-of-{n}")
    flat = compute(reward_fn, [s for s in sources for _ in range(n)], [c for cs in outs for c in cs],
                   [t for t in refs for _ in range(n)])
    per_source = [flat[k * n:(k + 1) * n] for k in range(len(sources))]
    table, curve, m = best_of_table(per_source).mean(axis=0), {}, 1
    while m <= n:
        curve[str(m)] = float(table[m - 1])
        m *= 2
    curve[str(n)] = float(table[n - 1])  # N itself when it is not a power of two
    out = {"best_of_n": n, "best_of_n_reward": curve[str(n)], "best_of_n_curve": curve,
           "best_of_n_temperature": temperature}
    if keep_rewards:
        out["best_of_n_rewards"] = per_source
    return out
