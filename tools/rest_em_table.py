#!/usr/bin/env python
"""The ReST-EM table of a run: held-out and hard accuracy per policy, with paired-bootstrap intervals.

Reads ``OUTPUT_DIR/summary.json`` of ``python pipeline.py run-local --config
configs/rest-em-arithmetic.yaml --output-dir OUTPUT_DIR`` and every evaluation's per-problem
outputs (``eval_path`` of each row: ``translations.jsonl``, ``hard_translations.jsonl``), and
prints a Markdown table: each policy's accuracy with its 95 % bootstrap interval, and every
ReST-EM iteration's difference from BC and from the references-only control with the 95 %
paired-bootstrap interval of the difference (problems resampled; rest.stats).

    python tools/rest_em_table.py runs/rest-em-arithmetic
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def _rewards(eval_path: str, name: str) -> dict[str, float]:
    path = os.path.join(eval_path, name)
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return {r["id"]: float(r["reward"]) for r in map(json.loads, f)}


def _ci(values: list[float], n_bootstrap: int, seed: int) -> tuple[float, float]:
    a = np.asarray(values, dtype=float)
    idx = np.random.default_rng(seed).choice(a.size, size=(n_bootstrap, a.size), replace=True)
    lo, hi = np.quantile(a[idx].mean(axis=1), [0.025, 0.975])
    return float(lo), float(hi)


def _paired(base: dict, cand: dict, n_bootstrap: int, seed: int) -> tuple[float, float, float]:
    from rest.stats import paired_bootstrap_mean

    ids = sorted(base)
    r = paired_bootstrap_mean([base[i] for i in ids], [cand[i] for i in ids], n_bootstrap, seed)
    return 100 * r["delta"], 100 * r["delta_ci"][0], 100 * r["delta_ci"][1]


def table(run_dir: str, n_bootstrap: int = 1000, seed: int = 12345) -> str:
    with open(os.path.join(run_dir, "summary.json"), encoding="utf-8") as f:
        summary = json.load(f)
    rows = summary["steps"]
    data = {}
    for r in rows:
        key = "control" if r.get("control") else ("bc" if r["g"] == 0 else f"g{r['g']}")
        data[key] = (r, _rewards(r["eval_path"], "translations.jsonl"), _rewards(r["eval_path"], "hard_translations.jsonl"))
    order = ["bc"] + sorted(k for k in data if k.startswith("g")) + (["control"] if "control" in data else [])
    lines = ["| policy | optimizer steps | kept samples | test accuracy [95 % CI] | vs BC | vs control | "
             "hard (5-digit) accuracy [95 % CI] | hard vs BC | hard vs control |", "|---" * 9 + "|"]

    def fmt_acc(values):
        if not values:
            return "–"
        lo, hi = _ci(list(values.values()), n_bootstrap, seed)
        return f"{100 * np.mean(list(values.values())):.1f} % [{100 * lo:.1f}, {100 * hi:.1f}]"

    def fmt_delta(base_key, key, which):
        if base_key not in data or key in (base_key, "bc"):
            return "–"
        base, cand = data[base_key][which], data[key][which]
        if not base or not cand:
            return "–"
        d, lo, hi = _paired(base, cand, n_bootstrap, seed)
        return f"{d:+.1f} [{lo:+.1f}, {hi:+.1f}]"

    for key in order:
        r, test, hard = data[key]
        label = {"bc": "BC (worked solutions only)", "control": "control: BC + worked solutions only"}.get(
            key, f"ReST-EM iteration {key[1:]}")
        kept = str(r["kept"]) if r.get("kept") is not None else "–"
        lines.append("| " + " | ".join([
            label, str(r.get("optimizer_steps", 0)), kept, fmt_acc(test), fmt_delta("bc", key, 1),
            fmt_delta("control", key, 1), fmt_acc(hard), fmt_delta("bc", key, 2), fmt_delta("control", key, 2)]) + " |")
    n_test = len(data["bc"][1])
    n_hard = len(data["bc"][2])
    lines += ["", f"Accuracy: greedy decoding, exact answer after `|` with working shown, on {n_test} held-out "
                  f"problems (2-4 digits) and {n_hard} hard ones (5 digits, more than any worked solution). Intervals: "
                  f"{n_bootstrap} bootstrap resamples of the problems (seed {seed}); differences in points, paired."]
    return "\n".join(lines) + "\n"


def _task_dir(model_path: str | None) -> str | None:
    """The pipeline task directory an evaluated policy came from (``.../finetune-op-2/improved``)."""
    return os.path.dirname(model_path) if model_path else None


def self_training(run_dir: str) -> str:
    """What each iteration found: pool accuracy of its samples, problems solved, kept set, wrong steps, pass@k.

    Read from the run's own artifacts: the scored Grow set of each iteration (``scored/data.jsonl``),
    its filtered set (``filtered/data.jsonl``) and the evaluation rows in ``summary.json``. "Wrong steps"
    counts kept solutions whose answer is right but whose working is not the correct
    procedure (``rest.tasks.arithmetic.steps_are_correct``): the outcome-only verifier keeps them.
    """
    from rest.tasks.arithmetic import steps_are_correct

    def read(path):
        with open(path, encoding="utf-8") as f:
            return [json.loads(line) for line in f]

    with open(os.path.join(run_dir, "summary.json"), encoding="utf-8") as f:
        rows = json.load(f)["steps"]
    # Each iteration's scored Grow set and filtered (kept) set, found by content rather than by
    # task directory names: every row carries the Grow iteration it was sampled in, and the
    # kept set of iteration g (a union over iterations with filter.accumulate) reaches g.
    scored_by_g, kept_by_g = {}, {}
    for dirpath, _, files in os.walk(os.path.join(run_dir, "pipeline_root")):
        kind = os.path.basename(dirpath)
        if "data.jsonl" in files and kind in ("scored", "filtered"):
            rows_here = read(os.path.join(dirpath, "data.jsonl"))
            g_max = max((x.get("grow", 0) for x in rows_here), default=0)
            (scored_by_g if kind == "scored" else kept_by_g)[g_max] = rows_here

    lines = ["| policy | pool samples correct | pool problems solved (of which 5-digit) | 5-digit samples with 5+ steps | "
             "kept (union) | kept with wrong steps | pass@1 | pass@2 | pass@4 | pass@8 |", "|---" * 10 + "|"]
    for r in rows:
        g = r["g"]
        k = {int(a): b for a, b in (r.get("pass_at_k") or {}).items()}
        passes = [f"{100 * k[n]:.1f} %" if n in k else "–" for n in (1, 2, 4, 8)]
        if r.get("control") or g == 0:
            label = "control" if r.get("control") else "BC"
            lines.append(f"| {label} | – | – | – | – | – | " + " | ".join(passes) + " |")
            continue
        scored = scored_by_g.get(g, [])
        samples = [x for x in scored if x.get("origin") == "sample"]
        solved = {x["source_id"] for x in samples if x["reward"] >= 0.5}
        long_solved = {x["source_id"] for x in samples if x["reward"] >= 0.5 and
                       max(len(t) for t in x["source"].rstrip("=").split("+")) >= 5}
        # How many steps the policy writes for a problem longer than any worked solution.
        long_samples = [x for x in samples if max(len(t) for t in x["source"].rstrip("=").split("+")) >= 5]
        five_steps = sum(len(x["candidate"].split("|")[0].split()) >= 5 for x in long_samples)
        kept = [x for x in kept_by_g.get(g, []) if x.get("origin") == "sample"]
        wrong = sum(not steps_are_correct(x["source"], x["candidate"]) for x in kept)
        lines.append(f"| ReST-EM iteration {g} | {100 * sum(x['reward'] for x in samples) / max(1, len(samples)):.1f} % "
                     f"| {len(solved):,} ({len(long_solved):,}) | {five_steps} of {len(long_samples):,} | {len(kept):,} | {wrong} ({100 * wrong / max(1, len(kept)):.1f} %) | "
                     + " | ".join(passes) + " |")
    lines += ["", "Pool: each iteration's samples of the answer-only problems, scored by the verifier. pass@k: "
                  "the unbiased estimate from 8 samples per test problem at the evaluation's temperature."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir")
    ap.add_argument("--n-bootstrap", type=int, default=1000)
    args = ap.parse_args(argv)
    print(table(args.run_dir, args.n_bootstrap))
    print(self_training(args.run_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
