#!/usr/bin/env python
"""Domain adaptation, measured: ReST vs the references-only control, from the given model or from BC converged on the domain.

What most users do: take a trained model and improve it on their own domain's parallel
data. The bundled corpus is split by help module (README of the data), so its test modules
(Math and Draw help) are a domain the shipped BC never trained on. This script splits their
pages three ways, by a hash of the page (no page on two sides): ``train`` (about half: the
user's parallel data), ``valid`` (a fifth) and ``test`` (the rest), and runs the main job
(``python pipeline.py run-local``) on them twice from the shipped BC:

- ``given``: ReST and the control start from the shipped BC as it is (``--policy``);
- ``converge``: ``--bootstrap.converge true``: the shipped BC first continues on the domain's
  training pairs until validation stops improving (``patience`` checks), and ReST and the
  control start from that converged policy (the paper's BC trained to convergence on D);
- ``converge-lr1e-4``: the same with the Improve steps' (and the control's) learning rate at
  1e-4 instead of 5e-4 (``--arms converge-lr1e-4``; not run by default).

Each run's ``summary.json`` already compares its last ReST step with its BC and its control
(same optimizer steps on the domain's references) by paired bootstrap over the test
sentences; this script puts both runs side by side, adds the converged BC against the given
one (paired, the same test sentences), and writes ``OUT/domain.md`` and ``OUT/domain.json``.

    python bench/domain.py                      # both arms (about 10-20 min on 2 cores)
    python bench/domain.py --reuse              # re-read finished arms
    python bench/domain.py --quick --out /tmp/d # tiny smoke run (a minute or two; numbers mean nothing)
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys

from _common import DATA_DIR, ROOT, SHIPPED_POLICY, compared_steps, evaluated_translations, machine

# Page shares by hash: train [0, 0.5), valid [0.5, 0.7), test [0.7, 1).
SHARES = (("train", 0.5), ("valid", 0.7), ("test", 1.0))
ARMS = {
    # Measured with the filter and reward of the default until 2026-12-03 (every sample above tau and the
    # references, by chrF), pinned so its figures stay reproducible.
    "given": ["--score.reward", "chrf", "--filter.max_per_source", "0", "--filter.keep_references", "true"],
    # Once per pass over ~580 pairs (about 6 steps of 6,000 tokens), stop after 4 checks without gain.
    "converge": ["--score.reward", "chrf", "--filter.max_per_source", "0", "--filter.keep_references", "true",
                 "--bootstrap.converge", "true", "--bootstrap.eval_every", "6", "--bootstrap.patience", "4",
                 "--bootstrap.valid_backend", "ctranslate2"],
}
# From the converged point the default Improve rate (5e-4, warmed up again) overshoots: a fifth of it.
ARMS["converge-lr1e-4"] = ARMS["converge"] + ["--finetune.learning_rate", "1e-4"]
QUICK = {"rows": {"train": 40, "valid": 8, "test": 12},
         "flags": ["--data.grow_sources", "12", "--sample.num_samples", "2", "--filter.thresholds", "0.5",
                   "--finetune.epochs", "1", "--finetune.batch_tokens", "300", "--finetune.warmup_steps", "0",
                   "--bootstrap.max_epochs", "3", "--bootstrap.batch_tokens", "300"]}


def page_share(row_id: str) -> float:
    """Where a row's page falls in [0, 1): the same page always lands on the same side."""
    page = row_id.split("#", 1)[0]
    return int(hashlib.sha256(page.encode()).hexdigest()[:8], 16) / 16**8


def domain_split(work: str, quick: bool = False) -> dict[str, str]:
    """Write the domain's train/valid/test TSVs (the bundled test modules split by page); return their paths."""
    os.makedirs(work, exist_ok=True)
    with open(os.path.join(DATA_DIR, "test.tsv"), encoding="utf-8") as f:
        header, *lines = f.read().splitlines()
    parts: dict[str, list[str]] = {name: [] for name, _ in SHARES}
    for line in lines:
        share = page_share(line.split("\t", 1)[0])
        parts[next(name for name, hi in SHARES if share < hi)].append(line)
    # The help repeats short sentences across pages: a source already on an earlier side
    # (train, then valid) is dropped from the later one, as `validate` demands.
    seen: set[str] = set()
    for name, _ in SHARES:
        parts[name] = [line for line in parts[name] if line.split("\t")[1] not in seen]
        seen |= {line.split("\t")[1] for line in parts[name]}
    paths = {}
    for name, rows in parts.items():
        if quick:
            rows = rows[:QUICK["rows"][name]]
        path = os.path.join(work, f"{name}.tsv")
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            f.write("\n".join([header, *rows]) + "\n")
        os.replace(path + ".tmp", path)
        paths[name] = path
    return paths


def arm_flags(name: str, data: dict[str, str], quick: bool, extra: list[str]) -> list[str]:
    flags = ["--train", data["train"], "--valid", data["valid"], "--test", data["test"], "--policy", SHIPPED_POLICY]
    if quick:
        flags += QUICK["flags"] + ["--loop.register", "false", "--no-tracking"]
    return flags + ARMS[name] + list(extra)


def bc_comparison(given: dict, converge: dict) -> dict | None:
    """Converged BC vs the given BC on the test split (two arms' run summaries): paired bootstrap over
    the same sentences."""
    from rest.steps.summary import compare

    a, b = evaluated_translations(given, "bc"), evaluated_translations(converge, "bc")
    return compare(a, b, 1000, 12345, {}) if a and b else None


def converged_training(arm_dir: str) -> dict | None:
    """The converge training record of an arm's BC policy (its lineage, ``bc_training``)."""
    import glob

    for path in glob.glob(os.path.join(arm_dir, "pipeline_root", "*", "bootstrap-op", "*", "rest_policy.json")):
        with open(path, encoding="utf-8") as f:
            info = json.load(f)
        if info.get("converged_from"):
            return info.get("bc_training")
    return None


def _row(summary: dict, which: str) -> dict:
    bc, rest, ctrl = compared_steps(summary)
    return {"bc": bc, "rest": rest, "control": ctrl}[which]


def _ci(sig: dict | None, key: str, nd: int) -> str:
    if not sig or key not in sig:
        return "–"
    r = sig[key]
    lo, hi = r["delta_ci"]
    mark = "**" if lo > 0 or hi < 0 else ""
    return f"{mark}{r['delta']:+.{nd}f}{mark} [{lo:+.{nd}f}, {hi:+.{nd}f}]"


def report(records: dict[str, dict], out: str, info: dict, data: dict, bc_sig: dict | None) -> str:
    sizes = {k: sum(1 for _ in open(p, encoding="utf-8")) - 1 for k, p in data.items()}
    lines = ["# Domain adaptation: ReST vs the control, from the given model and from BC converged on the domain",
             "", f"Machine: {info['nproc']} cores, {info['cpu']}, torch {info['torch']}. Data: the bundled test "
             f"modules (Math, Draw help) split by page: train {sizes['train']}, valid {sizes['valid']}, "
             f"test {sizes['test']} pairs. Start: the shipped BC.", "",
             "| arm | policy | test BLEU | test chrF | test reward | opt. steps | wall s | CPU s |",
             "|---|---|---|---|---|---|---|---|"]
    for name, rec in records.items():
        s = rec["summary"]
        for which, label in (("bc", "BC"), ("rest", "ReST (last step)"), ("control", "control")):
            r = _row(s, which)
            if not r:
                continue
            extra = ""
            if which == "bc" and name.startswith("converge"):
                bt = converged_training(os.path.join(out, name))
                extra = (f" (continued {bt['steps']} steps, best at {bt['best_step']}: {bt['stopped']})"
                         if bt else " (converged)")
            lines.append(f"| {name} | {label}{extra} | {r['test_bleu']:.2f} | {r['test_chrf']:.2f} | "
                         f"{r['test_reward']:.4f} | {r.get('optimizer_steps', 0)} | "
                         + (f"{rec['wall_s']:.0f} | {rec['cpu_s']:.0f} |" if which == "bc" else " | |"))
    lines += ["", "Differences of the last ReST step (95 % paired-bootstrap interval; bold where it excludes 0):", "",
              "| arm | vs | chrF | reward | BLEU | verdict |", "|---|---|---|---|---|---|"]
    for name, rec in records.items():
        v = rec["summary"].get("verdict", {})
        for other in ("bc", "control"):
            sig = (v.get("significance") or {}).get(other)
            beat = v.get(f"beats_{other}")
            word = "beats" if beat else ("control better" if other == "control" and v.get("control_better_on")
                                          else "not better")
            lines.append(f"| {name} | {'BC' if other == 'bc' else 'control'} | {_ci(sig, 'test_chrf', 2)} | "
                         f"{_ci(sig, 'test_reward', 4)} | {_ci(sig, 'test_bleu', 2)} | {word} |")
    if bc_sig:
        lines += ["", "Converged BC vs the given BC (the same test sentences): chrF "
                  f"{_ci(bc_sig, 'test_chrf', 2)}, reward {_ci(bc_sig, 'test_reward', 4)}, BLEU "
                  f"{_ci(bc_sig, 'test_bleu', 2)}."]
    text = "\n".join(lines) + "\n"
    with open(os.path.join(out, "domain.md"), "w", encoding="utf-8") as f:
        f.write(text)
    with open(os.path.join(out, "domain.json"), "w", encoding="utf-8") as f:
        json.dump({"machine": info, "data": sizes, "arms": records, "converged_vs_given_bc": bc_sig}, f, indent=1)
    return text


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", "--output-dir", dest="out", default=os.path.join(ROOT, "runs", "bench-domain"),
                    help="output directory (default runs/bench-domain)")
    ap.add_argument("--arms", default="given,converge", help="comma-separated arms (default given,converge)")
    ap.add_argument("--reuse", action="store_true", help="re-read arms that already finished in --out")
    ap.add_argument("--quick", action="store_true", help="tiny smoke run (numbers mean nothing)")
    ap.add_argument("extra", nargs="*", help="more run-local flags for every arm (after --)")
    args = ap.parse_args(argv)
    from main_job import run_arm

    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    names = [a.strip() for a in args.arms.split(",") if a.strip()]
    unknown = [a for a in names if a not in ARMS]
    if unknown:
        ap.error(f"unknown arm(s) {', '.join(unknown)}; the arms: {', '.join(ARMS)}")
    data = domain_split(os.path.join(out, "data"), args.quick)
    info = machine()
    records = {}
    for name in ARMS:  # table order; arms not asked for but finished in OUT are re-read into the report
        if name in names:
            records[name] = run_arm(name, arm_flags(name, data, args.quick, args.extra), out, args.reuse, [])
        elif os.path.exists(os.path.join(out, name, "arm.json")):
            records[name] = run_arm(name, [], out, True, [])
        else:
            continue
        bc_sig = bc_comparison(records["given"]["summary"], records["converge"]["summary"]) \
            if {"given", "converge"} <= set(records) else None
        text = report(records, out, info, data, bc_sig)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
