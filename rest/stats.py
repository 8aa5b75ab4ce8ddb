"""Paired significance tests of two systems on the same test sentences: one place for all of them.

Corpus BLEU and chrF go through sacrebleu's paired bootstrap resampling (``sacrebleu
--paired-bs``), redone here on sacrebleu's own sufficient statistics with the indices it
draws (``numpy.random.default_rng(seed)``), so its p-value and per-system intervals come out
exactly as ``sacrebleu.significance.PairedTest`` gives them (a test checks it), and the 95 %
interval of the *difference* comes from the same resamples. Done here rather than by calling
``PairedTest``, because the difference's interval needs the resampled scores it keeps to
itself, and so that a system compared with two others is resampled once.
A sentence-level score such as the reward is tested the same way over sentences
(:func:`paired_bootstrap_mean`).

Both also give ``delta_p_value``: the two-sided bootstrap p-value of the difference (how often
a resampled difference, shifted to a true difference of 0, lies as far from 0 as the observed
one). It agrees with the interval (p < 0.05 when the 95 % interval excludes 0, up to resampling
noise) and is 1 for identical systems; sacrebleu's own ``p_value`` is not (it is 1/(n+1) for two
identical systems), which is why the run's verdict reads the interval and ``delta_p_value``.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

N_BOOTSTRAP = 1000
SEED = 12345
LEVEL = 0.95


def _indices(n_items: int, n_bootstrap: int, seed: int) -> np.ndarray:
    # Exactly sacrebleu's draw (significance._paired_bs_test), so our interval and its p-value share resamples.
    return np.random.default_rng(seed).choice(n_items, size=(n_bootstrap, n_items), replace=True)


def _p_value(resampled_delta: np.ndarray, delta: float) -> float:
    # Shifted to the null (a true difference of 0), a resample lies |r - delta| from 0; the +1
    # (as sacrebleu's) keeps the test from ever claiming p = 0 from finitely many resamples.
    far = np.sum(np.abs(resampled_delta - delta) >= abs(delta))
    return float(min(1.0, (far + 1) / (len(resampled_delta) + 1)))


def _interval(resampled_delta: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    lo, hi = np.quantile(resampled_delta, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


_METRICS = ("chrf", "bleu")


def _scorer(metric: str):
    from sacrebleu.metrics import BLEU, CHRF

    if metric not in _METRICS:
        raise ValueError(f"metric {metric!r}: use chrf or bleu")
    return {"chrf": CHRF, "bleu": BLEU}[metric]()


def resample_corpus(hypotheses: Sequence[str], references: Sequence[str], metric: str = "chrf",
                    n_bootstrap: int = N_BOOTSTRAP, seed: int = SEED) -> dict:
    """One system's corpus score and its scores on sacrebleu's bootstrap resamples of the sentences.

    The expensive half of a paired test (sacrebleu's sufficient statistics per sentence), so
    a system compared with several others is resampled once: see :func:`paired_from_resamples`.
    """
    scorer = _scorer(metric)
    if len(hypotheses) != len(references) or not references:
        raise ValueError("paired test needs equally many hypotheses and reference sentences (> 0)")
    suff = scorer._extract_corpus_statistics(list(hypotheses), [list(references)])
    corpus = scorer._compute_score_from_stats(np.array(suff, dtype="float64").sum(0))
    suff32 = np.array(suff, dtype="float32")  # as sacrebleu resamples (float32 sums)
    idx = _indices(len(references), n_bootstrap, seed)
    resampled = np.array([scorer._compute_score_from_stats(x.sum(0)).score for x in suff32[idx]])
    # corpus.name: sacrebleu's own label, e.g. "chrF2" or "BLEU", as its paired test prints it.
    return {"name": corpus.name, "score": float(corpus.score), "resampled": resampled, "n": len(references),
            "n_bootstrap": n_bootstrap, "seed": seed}


def _mean_ci(scores: np.ndarray) -> tuple[float, float]:
    # sacrebleu.significance.estimate_ci: mean and half the 95 % range (1/40 from each end).
    srt = np.sort(scores)
    lo = len(srt) // 40
    return float(srt.mean()), float(0.5 * (srt[len(srt) - lo - 1] - srt[lo]))


def paired_from_resamples(baseline: dict, candidate: dict) -> dict:
    """The paired test of two :func:`resample_corpus` results (same sentences, resamples and seed)."""
    if (baseline["n"], baseline["n_bootstrap"], baseline["seed"]) != (candidate["n"], candidate["n_bootstrap"],
                                                                      candidate["seed"]):
        raise ValueError("paired test: the two systems were resampled differently")
    a, b = baseline["resampled"], candidate["resampled"]
    delta = candidate["score"] - baseline["score"]
    # sacrebleu's p-value (significance._paired_bs_test and _compute_p_value), on the same resamples.
    diffs = np.abs(b - a)
    p_sacrebleu = float((np.sum(diffs - diffs.mean() > abs(delta)) + 1) / (len(diffs) + 1))
    (base_mean, base_ci), (cand_mean, cand_ci) = _mean_ci(a), _mean_ci(b)
    lo, hi = _interval(b - a)
    return {"metric": candidate["name"], "baseline_score": baseline["score"], "candidate_score": candidate["score"],
            "baseline_mean": base_mean, "baseline_ci": base_ci, "candidate_mean": cand_mean, "candidate_ci": cand_ci,
            "delta": delta, "delta_ci": [lo, hi], "delta_p_value": _p_value(b - a, delta),
            "p_value": p_sacrebleu, "n_bootstrap": candidate["n_bootstrap"], "seed": candidate["seed"]}


def paired_bootstrap(baseline: Sequence[str], candidate: Sequence[str], references: Sequence[str],
                     metric: str = "chrf", n_bootstrap: int = N_BOOTSTRAP, seed: int = SEED) -> dict:
    """sacrebleu's paired bootstrap resampling (``sacrebleu --paired-bs``) of two systems.

    Returns corpus scores, bootstrap means and 95% CI half-widths of each system and the
    p-value of the difference, all as sacrebleu's ``PairedTest`` computes them (same seed,
    same resamples: tests/test_summary.py checks they agree), plus ``delta`` (candidate −
    baseline) with its 95 % percentile interval ``delta_ci`` and ``delta_p_value`` over the
    same resamples. sacrebleu's test is two-sided (it resamples |candidate − baseline|), so a
    direction check belongs with it: ``delta_ci`` above 0 says the candidate is better.
    """
    _scorer(metric)
    if not (len(baseline) == len(candidate) == len(references)) or not references:
        raise ValueError("paired test needs equally many baseline, candidate and reference sentences (> 0)")
    return paired_from_resamples(resample_corpus(baseline, references, metric, n_bootstrap, seed),
                                 resample_corpus(candidate, references, metric, n_bootstrap, seed))


def paired_bootstrap_mean(baseline: Sequence[float], candidate: Sequence[float], n_bootstrap: int = N_BOOTSTRAP,
                          seed: int = SEED) -> dict:
    """Paired bootstrap over sentences of the difference in mean of a per-sentence score (e.g. the reward).

    Resamples sentences with replacement (both systems on the same resampled sentences) and
    returns ``delta`` (candidate − baseline mean), its 95 % percentile interval ``delta_ci``
    and the two-sided ``delta_p_value`` (see the module's docstring).
    """
    a, b = np.asarray(baseline, dtype=float), np.asarray(candidate, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError("paired test needs equally many baseline and candidate scores (> 0)")
    diff = b - a
    resampled = diff[_indices(diff.size, n_bootstrap, seed)].mean(axis=1)
    lo, hi = _interval(resampled)
    delta = float(diff.mean())
    return {"baseline_score": float(a.mean()), "candidate_score": float(b.mean()), "delta": delta,
            "delta_ci": [lo, hi], "delta_p_value": _p_value(resampled, delta), "n_bootstrap": n_bootstrap, "seed": seed}


def paired_bootstrap_scores(baseline: Sequence[float], candidate: Sequence[float], metric: str = "reward",
                            n_bootstrap: int = N_BOOTSTRAP, seed: int = SEED) -> dict:
    """:func:`paired_bootstrap`'s result for a per-sentence score (e.g. a verifiable 0/1 reward),
    in points (the mean x 100, an accuracy in %): the systems' means, their 95 % CI half-widths,
    the difference with its interval, and the two-sided p-value of the difference (``p_value``
    here is that ``delta_p_value``)."""
    a, b = 100.0 * np.asarray(baseline, dtype=float), 100.0 * np.asarray(candidate, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError("paired test needs equally many baseline and candidate scores (> 0)")
    idx = _indices(a.size, n_bootstrap, seed)
    ra, rb = a[idx].mean(axis=1), b[idx].mean(axis=1)
    delta = float(b.mean() - a.mean())
    (base_mean, base_ci), (cand_mean, cand_ci) = _mean_ci(ra), _mean_ci(rb)
    lo, hi = _interval(rb - ra)
    p = _p_value(rb - ra, delta)
    return {"metric": metric, "baseline_score": float(a.mean()), "candidate_score": float(b.mean()),
            "baseline_mean": base_mean, "baseline_ci": base_ci, "candidate_mean": cand_mean, "candidate_ci": cand_ci,
            "delta": delta, "delta_ci": [lo, hi], "delta_p_value": p, "p_value": p, "n_bootstrap": n_bootstrap,
            "seed": seed}


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values, in the input order (a family of tests read together).

    The k-th smallest p-value is multiplied by (m − k + 1), capped at 1, and made
    non-decreasing in that order; rejecting where the adjusted value is below α keeps the
    family-wise error rate at α whatever the dependence between the tests.
    """
    p = [float(x) for x in p_values]
    if any(not 0.0 <= x <= 1.0 for x in p):
        raise ValueError(f"holm: p-values must lie in [0, 1], got {p}")
    m, adjusted, running = len(p), [0.0] * len(p), 0.0
    for rank, i in enumerate(sorted(range(m), key=lambda i: p[i])):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted
