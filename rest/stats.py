"""Paired significance tests of two systems on the same test sentences: one place for all of them.

Corpus BLEU and chrF go through sacrebleu's paired bootstrap resampling (``sacrebleu
--paired-bs``): its p-value and per-system intervals come from sacrebleu itself, and the
95 % interval of the *difference* comes from the same resamples (sacrebleu draws its indices
with ``numpy.random.default_rng(seed)``, as done here, so both describe one bootstrap).
A sentence-level score such as the reward is tested the same way over sentences
(:func:`paired_bootstrap_mean`).

Both also give ``delta_p_value``: the two-sided bootstrap p-value of the difference (how often
a resampled difference, shifted to a true difference of 0, lies as far from 0 as the observed
one). It agrees with the interval (p < 0.05 when the 95 % interval excludes 0, up to resampling
noise) and is 1 for identical systems; sacrebleu's own ``p_value`` is not (it is 1/(n+1) for two
identical systems), which is why the run's verdict reads the interval and ``delta_p_value``.
"""
from __future__ import annotations

import contextlib
import os
from typing import Sequence

import numpy as np

N_BOOTSTRAP = 1000
SEED = 12345
LEVEL = 0.95


@contextlib.contextmanager
def _sacrebleu_seed(seed: int):
    # sacrebleu's paired tests take their seed only from this variable.
    old = os.environ.get("SACREBLEU_SEED")
    os.environ["SACREBLEU_SEED"] = str(seed)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("SACREBLEU_SEED", None)
        else:
            os.environ["SACREBLEU_SEED"] = old


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


def paired_bootstrap(baseline: Sequence[str], candidate: Sequence[str], references: Sequence[str],
                     metric: str = "chrf", n_bootstrap: int = N_BOOTSTRAP, seed: int = SEED) -> dict:
    """sacrebleu's paired bootstrap resampling (``sacrebleu --paired-bs``) of two systems.

    Returns corpus scores, bootstrap means and 95% CI half-widths of each system, the
    p-value of the difference (sacrebleu's), and ``delta`` (candidate − baseline) with its
    95 % percentile interval ``delta_ci`` and ``delta_p_value`` over the same resamples. sacrebleu's test is
    two-sided (it resamples |candidate − baseline|), so a direction check belongs with it:
    ``delta_ci`` above 0 says the candidate is better.
    """
    from sacrebleu.metrics import BLEU, CHRF
    from sacrebleu.significance import PairedTest

    metrics = {"chrf": CHRF, "bleu": BLEU}
    if metric not in metrics:
        raise ValueError(f"metric {metric!r}: use chrf or bleu")
    if not (len(baseline) == len(candidate) == len(references)) or not references:
        raise ValueError("paired test needs equally many baseline, candidate and reference sentences (> 0)")
    with _sacrebleu_seed(seed):
        test = PairedTest([("baseline", list(baseline)), ("candidate", list(candidate))],
                          {metric: metrics[metric]()}, [list(references)], test_type="bs",
                          n_samples=n_bootstrap, n_jobs=1)
        _, scores = test()
    key = next(k for k in scores if k != "System")
    base, cand = scores[key]
    # The difference's interval: the corpus score of each resample from sacrebleu's sufficient statistics.
    scorer = metrics[metric]()
    idx = _indices(len(references), n_bootstrap, seed)
    resampled = []
    for hyps in (baseline, candidate):
        suff = np.array(scorer._extract_corpus_statistics(list(hyps), [list(references)]), dtype="float32")
        resampled.append(np.array([scorer._compute_score_from_stats(s.sum(0)).score for s in suff[idx]]))
    delta = float(cand.score) - float(base.score)
    lo, hi = _interval(resampled[1] - resampled[0])
    return {"metric": key, "baseline_score": float(base.score), "candidate_score": float(cand.score),
            "baseline_mean": float(base.mean), "baseline_ci": float(base.ci),
            "candidate_mean": float(cand.mean), "candidate_ci": float(cand.ci),
            "delta": delta, "delta_ci": [lo, hi], "delta_p_value": _p_value(resampled[1] - resampled[0], delta),
            "p_value": float(cand.p_value), "n_bootstrap": n_bootstrap, "seed": seed}


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
