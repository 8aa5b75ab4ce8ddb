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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir")
    ap.add_argument("--n-bootstrap", type=int, default=1000)
    args = ap.parse_args(argv)
    print(table(args.run_dir, args.n_bootstrap))
    return 0


if __name__ == "__main__":
    sys.exit(main())
