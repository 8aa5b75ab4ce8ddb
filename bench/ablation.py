#!/usr/bin/env python
"""The quality ablation of issue 15: which lever turns ReST's headroom into a gain over BC and the control.

Each arm is ``python pipeline.py run-local --output-dir OUT/<arm> <flags>`` (the main job,
``scripts/main.sh``, with a few flags changed), run one after another in a fresh output
directory so they do not share the CPU. Every run's own ``summary.json`` already compares
its last ReST step with BC and with its references-only control (the same optimizer steps
on the human references) by paired bootstrap over the test sentences; this script collects
those verdicts, with each arm's wall and CPU seconds, into one table and one plot.

    python bench/ablation.py --list                         # the arms, their flags and why
    python bench/ablation.py                                # every arm (hours: see the cost below)
    python bench/ablation.py --arms baseline,no-references  # some arms
    python bench/ablation.py --reuse                        # continue: finished arms are re-read
    python bench/ablation.py --report-only                  # only the report of the finished arms
    python bench/ablation.py --report-only --any-settings   # also arms run under other defaults/weights
    python bench/ablation.py --quick --output-dir /tmp/abl  # smoke run on tiny data (minutes)
    python bench/ablation.py --arms n16 -- --data.seed 14   # more run-local flags for every arm

``--reuse`` re-reads an arm from its ``OUT/<arm>/arm.json`` when that arm finished with the
same flags (an arm whose flags changed, or that failed, runs again); an interrupted study
continues where it stopped. The report covers every arm of the table that has finished in
OUT with today's flags, not only those named by ``--arms``, so a study run in pieces ends
with one table. ``--quick`` runs each arm on a tiny cut of the bundled data (200 training
pairs, 16 validation, 24 test sentences, 12 Grow sources x 2 samples, one Improve step,
one epoch, no MLflow) from the shipped BC: it checks the plumbing, its numbers mean nothing.
In quick mode an arm's list flags (``--filter.percentiles``) are cut to their first value,
to match the single Improve step.

Output: ``OUT/ablation.md``, ``OUT/ablation.json`` and ``OUT/ablation.png``, rewritten after
every arm so a stopped study loses nothing. Columns of the table, all of the arm's last
ReST step (the verdict's ``last_step``: g=G, i=I) on the test split:

- ``test BLEU / chrF / reward``: corpus BLEU and chrF (points), mean sentence reward;
- ``length (BC)``: output length against the references (BLEU's token counts), BC's in brackets: a
  reward that pays for length (chrF's beta 2) lengthens the outputs, raising chrF while BLEU falls;
- ``kept``: the share of the grown set the last Improve step's filter kept;
- ``steps``: optimizer steps since BC (the control got as many);
- ``wall s`` / ``CPU s``: the whole run-local process (CPU: user + system seconds of it and
  every task process, from ``RUSAGE_CHILDREN``); ``load``: the 1-minute load at its start;
- ``Δ vs BC`` / ``Δ vs control`` for chrF, reward and BLEU: the difference and its 95 %
  paired-bootstrap interval, read from the run's ``summary.json`` (``verdict.significance``;
  recomputed from the run's own per-sentence outputs where an older run lacks it);
- ``mark``: ▲ where the chrF interval over the control lies above 0, ▼ where it lies below
  (the control excluded 0); ``beats`` the run's own rule: both the chrF and the reward
  interval above 0 (against BC / against the control).

The plot shows each arm's chrF gain over BC and over its control with the 95 % intervals.

Cost (measured 2026-12-03, 2 cores): the baseline is the main job, about 365 CPU s and 5 minutes
wall (previous-default about 700 CPU s and 9 minutes, its epochs2 variant 913 CPU s, 10 minutes;
best1-chrf1-g2 about 700 CPU s; all-sources-best1 about 1,000).
The other arms, estimated from what they change: temp-*, the filter arms (no-references,
percentile, best*), no-lr-decay and rest-em about the baseline; epochs2 1.5x; n16 about
1.5x (Grow samples and scores twice as many candidates, and more are kept); n32 about 2.5x;
g2 and rest-em-g2 about 2x (a second Grow and three more Improve steps); grow-all the most by
far (all ~23,500 training sources instead of 3,000: about 8x the sampling, scoring and
fine-tuning, several hours); learned-ranking adds the reward model's training (about 5-10
CPU minutes) and its scoring. Every arm: roughly 5-8 hours on 2 cores; ``--quick``: about a
minute per arm. Extra flags after ``--`` (another seed) go to every arm: give such a study
its own ``--output-dir``, as the arm folders are named by arm only.

Issue-15 levers that are not an arm here:

- a stronger BC policy (a larger model trained until patience stops it): the from-scratch
  settings exist (``--bootstrap.policy '' --bootstrap.d_model/layers/patience``), but as an arm
  it would train the BC inside the run (hours on 2 cores) and move the BC every other arm is
  compared with; it needs its own training run and a shipped model, then ``--policy DIR``;
- the domain-adaptation recipe (continue BC on the user's references until patience stops
  it, then ReST and the control from that converged point) is ``--bootstrap.converge true``,
  measured on a page split of the bundled test modules by ``bench/domain.py``, not here.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from _common import (DATA_DIR, ROOT, SHIPPED_POLICY, check_run_local_args, compared_steps, evaluated_translations,
                     machine)

# The filter and reward of the default until 2026-12-03 (every sample above tau and the references, by chrF
# beta 2): arms measured under it keep their meaning.
PREVIOUS_DEFAULT = ["--score.reward", "chrf", "--filter.max_per_source", "0", "--filter.keep_references", "true"]

# name -> (run-local flags, why the arm is in the study). The flags are only settings that
# already exist in rest/config.py; `--list` checks each arm against it.
ARMS: dict[str, tuple[list[str], str]] = {
    "baseline": ([], "today's defaults (G=1, I=3, 3,000 Grow sources x N=8 at T=0.8; per source the best sample by "
                     "chrF beta 1 if it passes tau, no references; 1 epoch, lr x0.5 per step)"),
    "previous-default": (PREVIOUS_DEFAULT,
                         "the default until 2026-12-03: every sample above tau and the references, chosen by chrF "
                         "(beta 2); from the converged BC it gained nothing significant in 3 seeds"),
    "grow-all": (["--data.grow_sources", "0"],
                 "Grow over all ~23,500 training sources instead of 3,000: more material for the filter"),
    "all-sources": ([*PREVIOUS_DEFAULT, "--data.grow_sources", "0", "--sample.num_samples", "4", "--filter.mode",
                     "percentile", "--filter.thresholds", "0.6", "--filter.percentiles", "75"],
                    "bench/configs/all-sources.yaml as a main job: every training source x N=4, keep each source's "
                    "best sample and its reference, one Improve step (the recipe that moved best-of-N most)"),
    "all-sources-epochs2": ([*PREVIOUS_DEFAULT, "--data.grow_sources", "0", "--sample.num_samples", "4",
                             "--filter.mode", "percentile", "--filter.thresholds", "0.6", "--filter.percentiles", "75",
                             "--finetune.epochs", "2"],
                            "all-sources with two passes, as bench/quality.py measured it (775 steps)"),
    "n16": (["--sample.num_samples", "16"], "N=16: more candidates per source, a better best one to keep"),
    "n32": (["--sample.num_samples", "32"], "N=32: closer to the paper's 25-100 samples per source"),
    "temp-0.6": (["--sample.temperature", "0.6"], "colder sampling: fewer but better candidates pass"),
    "temp-1.0": (["--sample.temperature", "1.0"], "hotter sampling: more diverse candidates, more to filter"),
    "no-references": (["--score.reward", "chrf", "--filter.max_per_source", "0", "--filter.keep_references", "false"],
                      "keep only samples: today about half the kept rows at tau_3 are references (control-like)"),
    "percentile": (["--filter.mode", "percentile", "--filter.percentiles", "50,70,90"],
                   "keep each source's own top share: hard sources keep candidates too"),
    "best2": (["--filter.max_per_source", "2", "--filter.keep_references", "true", "--score.reward", "chrf"],
              "at most the 2 best per source (with references: the reference and the best sample)"),
    "best1-no-references": (["--filter.max_per_source", "1", "--filter.keep_references", "false", "--score.reward",
                             "chrf"],
                            "distil the best sample of each source only: the best-of-N sharpening lever"),
    "all-sources-best1": (["--data.grow_sources", "0", "--sample.num_samples", "4", "--filter.max_per_source", "1",
                           "--filter.keep_references", "false"],
                          "best1-no-references over every training source (x N=4): about eight times the distilled "
                          "samples of the 3,000-source Grow, for twice its sampling"),
    "chrf1": ([*PREVIOUS_DEFAULT, "--score.reward", "chrf1"],
              "reward chrF with beta 1: chrF's beta 2 favours long samples (best-of-8 picks ran 6 % longer than "
              "the references), which lengthens the policy's output and costs BLEU"),
    "best1-chrf1": (["--filter.max_per_source", "1", "--filter.keep_references", "false", "--score.reward", "chrf1"],
                    "best1-no-references picking the best sample by chrF beta 1, so the distilled samples are not "
                    "the longest ones (today's default, spelled out)"),
    "best1-chrf1-g2": (["--filter.max_per_source", "1", "--filter.keep_references", "false", "--score.reward", "chrf1",
                        "--loop.grow_steps", "2"],
                       "best1-chrf1 with a second Grow from the improved policy: does distilling the best sample "
                       "compound?"),
    "epochs1": (["--finetune.epochs", "1"], "one pass per Improve step: steps 2-3 never beat step 1 "
                                            "(the default since 2026-12-03, kept as an arm: its runs stay comparable)"),
    "epochs2": (["--finetune.epochs", "2"], "two passes per Improve step: the default until 2026-12-03"),
    "no-lr-decay": (["--finetune.lr_decay", "1.0"], "the same learning rate in every Improve step"),
    "rest-em": (["--finetune.from_base", "true", "--filter.accumulate", "true"],
                "ReST-EM: each Improve step fine-tunes BC afresh (accumulate acts from G=2 on)"),
    "rest-em-g2": (["--finetune.from_base", "true", "--filter.accumulate", "true", "--loop.grow_steps", "2"],
                   "ReST-EM over two Grow steps: BC fine-tuned on the union of both steps' kept sets"),
    "g2": (["--loop.grow_steps", "2"], "G=2: a fresh Grow from the improved policy (the paper: +17 % at G=2)"),
    "converge": (["--bootstrap.converge", "true", "--bootstrap.eval_every", "200", "--bootstrap.patience", "3",
                  "--bootstrap.max_minutes", "30"],
                 "the paper's BC trained to convergence on D: the shipped BC first continues NLL on all training "
                 "pairs until validation stops improving (3 checks, 200 steps apart; 30 minutes at most), then "
                 "ReST and the control both start there"),
    "learned-ranking": (["--score.reward", "reward_model", "--reward_model.ranking_weight", "1.0",
                         "--reward_model.epochs", "2", "--loop.on_reward_hacking", "rollback"],
                        "the learned reward trained with a within-source ranking loss (the MSE model ranks sources, "
                        "not candidates), guarded by validation chrF"),
}

# Arms with this flag train their own BC from the shipped one before ReST (the paper's converged BC on D).
CONVERGE_FLAG = "--bootstrap.converge"

# Quick mode: one Improve step, so list flags with one value per Improve step keep their first.
QUICK_IMPROVE_STEPS = 1
LIST_FLAGS = ("--filter.thresholds", "--filter.percentiles")
QUICK_ROWS = {"train": 200, "valid": 16, "test": 24}
METRICS = (("test_chrf", "chrF", 2), ("test_reward", "reward", 4), ("test_bleu", "BLEU", 2))


def quick_data(out: str) -> dict[str, str]:
    """Tiny train/valid/test TSVs cut from the bundled corpus (header plus the first rows)."""
    work = os.path.join(out, "quick-data")
    os.makedirs(work, exist_ok=True)
    paths = {}
    for split, n in QUICK_ROWS.items():
        path = os.path.join(work, f"{split}.tsv")
        if not os.path.exists(path):
            with open(os.path.join(DATA_DIR, f"{split}.tsv"), encoding="utf-8", newline="") as f:
                lines = [line for _, line in zip(range(n + 1), f)]
            with open(path + ".tmp", "w", encoding="utf-8", newline="") as g:
                g.writelines(lines)
            os.replace(path + ".tmp", path)
        paths[split] = path
    return paths


def quick_flags(out: str) -> list[str]:
    """The tiny settings every arm starts from in quick mode (the arm's own flags come after and win)."""
    d = quick_data(out)
    # --policy explicitly: with --train alone run-local would train a BC policy from scratch.
    return ["--train", d["train"], "--valid", d["valid"], "--test", d["test"], "--policy", SHIPPED_POLICY,
            "--data.max_valid", "16", "--data.grow_sources", "12", "--sample.num_samples", "2",
            "--filter.thresholds", "0.5", "--filter.percentiles", "50", "--finetune.epochs", "1",
            # Small batches and no warm-up: a few optimizer steps that move the policy, so the
            # differences and their intervals are not all zero (one warm-up step changes nothing).
            "--finetune.batch_tokens", "300", "--finetune.warmup_steps", "0",
            "--loop.register", "false", "--no-tracking"]


def shrink_lists(flags: list[str], steps: int) -> list[str]:
    """``flags`` with every per-Improve-step list (:data:`LIST_FLAGS`) cut to its first ``steps`` values."""
    out = list(flags)
    for k, flag in enumerate(out[:-1]):
        if flag in LIST_FLAGS:
            out[k + 1] = ",".join(out[k + 1].split(",")[:steps])
    return out


def arm_flags(name: str, quick: bool, out: str, extra: list[str]) -> list[str]:
    """The run-local flags of arm ``name``: quick settings (if any), the arm's own, then ``extra``."""
    own = ARMS[name][0]
    if quick:
        return quick_flags(out) + shrink_lists(own, QUICK_IMPROVE_STEPS) + list(extra)
    return own + list(extra)


def check_flags(flags: list[str]):
    """Resolve ``flags`` as run-local would (``--section.field`` pairs) so a bad arm fails before hours of runs;
    returns the resolved run config."""
    from rest.config import load_config

    check_run_local_args(flags)
    overrides, k = {}, 0
    while k < len(flags):
        flag = flags[k]
        if flag.startswith("--") and "." in flag and k + 1 < len(flags):
            overrides[flag[2:]] = flags[k + 1]
            k += 2
        else:  # a run-local option (--train PATH, --no-tracking): parsed above
            k += 1
    return load_config(None, overrides)


def _comparable(value):
    # KFP hands numbers back as floats; lists stay lists. None where a value is a path or a
    # free string (they differ between checkouts without changing what a run computes).
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, (list, tuple)):
        return tuple(_comparable(v) for v in value)
    if isinstance(value, str) and os.sep not in value and len(value) <= 40:
        return value
    return None


def config_drift(recorded: dict, flags: list[str]) -> list[str]:
    """Settings whose value today (the defaults plus ``flags``) differs from what a recorded run used.

    An arm is re-read only with the same flags; when a default changed since (say
    ``finetune.epochs``), the same flags mean another run, and the record must not stand for it.
    """
    from dataclasses import asdict

    today = asdict(check_flags(flags))
    drift = []
    for section, fields in (recorded or {}).items():
        for key, value in (fields or {}).items() if isinstance(fields, dict) else ():
            if section in today and key in today[section]:
                was, now = _comparable(value), _comparable(today[section][key])
                if was is not None and now is not None and was != now:
                    drift.append(f"{section}.{key}: {value} then, {today[section][key]} now")
    return drift


def load_record(name: str, flags: list[str], out: str, any_settings: bool = False) -> dict | None:
    """Arm ``name``'s finished record in ``out`` when it ran with the settings that today's defaults plus
    ``flags`` give, from today's starting weights (else None) — the settings, not the flags' spelling: an
    arm whose flags now pin what used to be the default is still the same run. With ``any_settings`` any
    finished record of the arm."""
    from main_job import add_significance

    path = os.path.join(out, name, "arm.json")
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        record = json.load(f)
    if any_settings:
        return {**record, "summary": add_significance(record["summary"], os.path.join(out, name))}
    drift = config_drift(record.get("summary", {}).get("config", {}), flags)
    from main_job import policy_sha256

    # The shipped BC's weights changed on 2026-12-03 (converged) under the same path: compare the weights.
    start = check_flags(flags).bootstrap.policy
    start = start if os.path.isabs(start) else os.path.join(ROOT, start)
    if record.get("policy_sha256") != policy_sha256(start):
        drift.append("the starting policy's weights differ from " + os.path.relpath(start, ROOT)
                     + "'s today" + ("" if record.get("policy_sha256") else " (the record predates weight hashes)"))
    if drift:
        print(f"[{name}] its record ran under other settings ({'; '.join(drift)}): not reused", flush=True)
        return None
    return {**record, "summary": add_significance(record["summary"], os.path.join(out, name))}


def run_one(name: str, flags: list[str], out: str, reuse: bool, quick: bool) -> dict:
    """Run arm ``name`` (or, with ``reuse``, re-read it); a failed run gives ``{"arm", "failed"}``."""
    from main_job import run_arm

    if reuse:
        record = load_record(name, flags, out)
        if record is not None:
            print(f"[{name}] reused {os.path.join(out, name, 'arm.json')}", flush=True)
            return record
        if os.path.exists(os.path.join(out, name, "arm.json")):
            print(f"[{name}] its arm.json is not of today's settings: running it again", flush=True)
    try:
        # main_job.run_arm: fresh output directory, CPU seconds from RUSAGE_CHILDREN, arm.json.
        record = run_arm(name, flags, out, reuse=False, extra=[])
    except SystemExit as e:  # a failed arm must not end a study of hours: record it and go on
        print(str(e), flush=True)
        return {"arm": name, "flags": flags, "failed": str(e)}
    record.update(why=ARMS[name][1], quick=quick)
    with open(os.path.join(out, name, "arm.json"), "w", encoding="utf-8") as f:
        json.dump(record, f, indent=1)
    return record


def arm_row(record: dict) -> dict:
    """The figures of one arm's last ReST step: metrics, Δ and 95 % intervals vs BC and vs the control, costs."""
    summary = record["summary"]
    v = summary.get("verdict") or {}
    last = v.get("last_step") or {}
    bc, rest, ctrl = compared_steps(summary)
    row = {"arm": record["arm"], "flags": record.get("flags", []), "why": record.get("why", ARMS.get(record["arm"], ("", ""))[1]),
           "last_step": last, "wall_s": record.get("wall_s"), "cpu_s": record.get("cpu_s"),
           "load_avg_1min_at_start": record.get("load_avg_1min_at_start"), "commit": record.get("commit"),
           "kept_fraction": rest.get("kept_fraction"), "optimizer_steps": rest.get("optimizer_steps"),
           "control_optimizer_steps": ctrl.get("optimizer_steps"),
           "beats_bc": v.get("beats_bc"), "beats_control": v.get("beats_control"),
           "bc": {k: bc.get(k) for k, _, _ in METRICS}, "control": {k: ctrl.get(k) for k, _, _ in METRICS}}
    for key, _, _ in METRICS:
        row[key] = rest.get(key)
    sig = v.get("significance") or {}
    for other in ("bc", "control"):
        row[f"vs_{other}"] = {key: {"delta": sig[other][key]["delta"], "ci": list(sig[other][key]["delta_ci"]),
                                    "p_value": sig[other][key].get("p_value")}
                              for key, _, _ in METRICS if key in sig.get(other, {})}
    row["length_ratio"] = {which: length_ratio(summary, which) for which in ("bc", "rest")}
    ci = row["vs_control"].get("test_chrf", {}).get("ci")
    row["mark"] = "" if not ci else "▲" if ci[0] > 0 else "▼" if ci[1] < 0 else ""
    return row


def length_ratio(summary: dict, which: str) -> float | None:
    """Output length against the references (BLEU's tokens) of a run's BC or last ReST step: its evaluation
    reports it (``test_length_ratio``); a run from before that is measured from its test translations."""
    bc, rest, _ = compared_steps(summary)
    step = bc if which == "bc" else rest
    if step.get("test_length_ratio") is not None:
        return step["test_length_ratio"]
    out = evaluated_translations(summary, which)
    if not out:
        return None
    from sacrebleu.metrics import BLEU

    bleu = BLEU().corpus_score([o["hypothesis"] for o in out], [[o["reference"] for o in out]])
    return bleu.sys_len / max(1, bleu.ref_len)


def _num(v, nd: int) -> str:
    return "–" if v is None else f"{v:.{nd}f}"


def _delta(d: dict | None, nd: int) -> str:
    if not d:
        return "–"
    lo, hi = d["ci"]
    return f"{d['delta']:+.{nd}f} [{lo:+.{nd}f}, {hi:+.{nd}f}]"


def _length(row: dict) -> str:
    got = row.get("length_ratio") or {}
    return "–" if got.get("rest") is None else f"{got['rest']:.3f} ({_num(got.get('bc'), 3)})"


def _yes(b) -> str:
    return "–" if b is None else "yes" if b else "no"


def markdown(rows: list[dict], failed: list[dict], quick: bool, info: dict) -> str:
    """``ablation.md``: the results table, the differences table, the arms' flags and the failures."""
    lines = ["# ReST quality ablation (bench/ablation.py)", ""]
    if quick:
        lines += ["**Quick smoke run on tiny data: the numbers mean nothing.**", ""]
    lines += [f"Machine: {info.get('nproc')} cores, {info.get('cpu')}, torch {info.get('torch')}. "
              "Every figure is of the arm's last ReST step on the test split; Δ is against BC and against "
              "the arm's own references-only control (same optimizer steps), with the 95 % paired-bootstrap "
              "interval from the run's summary.json. ▲/▼: the chrF interval over the control lies above/below 0.", ""]
    bc = next((r["bc"] for r in rows if r["bc"].get("test_chrf") is not None), None)
    if bc:
        lines += [f"BC: test BLEU {_num(bc['test_bleu'], 2)}, chrF {_num(bc['test_chrf'], 2)}, "
                  f"reward {_num(bc['test_reward'], 4)}.", ""]
    lines += ["| arm | mark | last step | test BLEU | test chrF | test reward | length (BC) | kept | steps | wall s |"
              " CPU s | load | beats BC | beats control |", "|---" * 14 + "|"]
    for r in rows:
        s = r["last_step"]
        kept = "–" if r["kept_fraction"] is None else f"{100 * r['kept_fraction']:.1f}%"
        lines.append(f"| {r['arm']} | {r['mark']} | g{s.get('g', '?')} i{s.get('i', '?')} | {_num(r['test_bleu'], 2)} | "
                     f"{_num(r['test_chrf'], 2)} | {_num(r['test_reward'], 4)} | {_length(r)} | {kept} | "
                     f"{r['optimizer_steps']} | "
                     f"{_num(r['wall_s'], 0)} | {_num(r['cpu_s'], 0)} | {_num(r['load_avg_1min_at_start'], 2)} | "
                     f"{_yes(r['beats_bc'])} | {_yes(r['beats_control'])} |")
    head = " | ".join(f"{label} Δ vs {other}" for other in ("BC", "control") for _, label, _ in METRICS)
    lines += ["", "Differences, Δ [95 % interval]:", "", f"| arm | {head} |", "|---" * 7 + "|"]
    for r in rows:
        cells = [_delta(r[f"vs_{other}"].get(key), nd) for other in ("bc", "control") for key, _, nd in METRICS]
        lines.append(f"| {r['arm']}{' ' + r['mark'] if r['mark'] else ''} | " + " | ".join(cells) + " |")
    converged = [r for r in rows if r.get("vs_shipped_bc")]
    if converged:
        lines += ["", "Arms that converge their own BC first, against the shipped BC (Δ [95 % interval]):", "",
                  "| arm | policy | " + " | ".join(f"{label} Δ vs shipped BC" for _, label, _ in METRICS) + " |",
                  "|---|---|" + "---|" * len(METRICS)]
        for r in converged:
            for which, label in (("bc", "its converged BC"), ("rest", "its last ReST step")):
                d = r["vs_shipped_bc"].get(which)
                if d:
                    lines.append(f"| {r['arm']} | {label} | "
                                 + " | ".join(_delta(d.get(key), nd) for key, _, nd in METRICS) + " |")
    lines += ["", "The arms (their own flags; --quick puts tiny settings before them):", "",
              "| arm | flags | why |", "|---|---|---|"]
    for name, (flags, why) in ARMS.items():
        lines.append(f"| {name} | `{' '.join(flags) or '(none)'}` | {why} |")
    if failed:
        lines += ["", "Failed arms (run again with --reuse to retry only these):", ""]
        lines += [f"- {f['arm']}: {f['failed']}" for f in failed]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: str, quick: bool) -> None:
    """``ablation.png``: left, each arm's chrF gain over BC and over its control with 95 % interval bars;
    right, the same gains against the arm's CPU seconds (the curve of gain against compute)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, cost) = plt.subplots(1, 2, figsize=(13, max(3.2, 1.4 + 0.45 * len(rows))),
                                   gridspec_kw={"width_ratios": [1.2, 1]})
    sides = (("bc", 0.12, "tab:blue", "o", "vs BC"), ("control", -0.12, "tab:orange", "s", "vs its control"),
             ("shipped", 0.3, "tab:green", "D", "vs the shipped BC (arms that converge their own)"))
    labelled: set[str] = set()
    for k, r in enumerate(rows):
        y = len(rows) - 1 - k  # the table's order, top to bottom
        for other, dy, color, marker, label in sides:
            d = (r.get("vs_shipped_bc") or {}).get("rest", {}).get("test_chrf") if other == "shipped" \
                else r[f"vs_{other}"].get("test_chrf")
            if not d:
                continue
            lo, hi = d["ci"]
            err = [[d["delta"] - lo], [hi - d["delta"]]]
            first = other not in labelled
            labelled.add(other)
            ax.errorbar(d["delta"], y + dy, xerr=err, fmt=marker, color=color, capsize=3, label=label if first else None)
            if r.get("cpu_s"):
                cost.errorbar(r["cpu_s"], d["delta"], yerr=err, fmt=marker, color=color, capsize=3, alpha=0.8,
                              label=label if first else None)
                if other == "bc":
                    cost.annotate(r["arm"], (r["cpu_s"], d["delta"]), textcoords="offset points", xytext=(4, 4),
                                  fontsize=7)
    ax.axvline(0.0, color="grey", linewidth=0.8)
    ax.set_yticks(range(len(rows)))
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.set_yticklabels([r["arm"] + (f" {r['mark']}" if r["mark"] else "") for r in reversed(rows)])
    for label, r in zip(ax.get_yticklabels(), reversed(rows)):
        if r["mark"]:
            label.set_fontweight("bold")
    ax.set_xlabel("test chrF gain of the last ReST step (points, 95 % paired-bootstrap interval)")
    ax.set_title("ReST ablation" + (" — quick smoke run, numbers mean nothing" if quick else ""))
    cost.axhline(0.0, color="grey", linewidth=0.8)
    cost.set_xlabel("CPU seconds of the whole run (ReST and its control)")
    cost.set_ylabel("test chrF gain (points)")
    cost.set_title("gain against compute")
    if rows:  # one legend for both panels, below them: inside, it hides interval bars
        handles, labels = ax.get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def collect(out: str, quick: bool, extra: list[str], any_settings: bool = False) -> list[dict]:
    """Every arm of the table that finished in ``out`` with today's settings and starting weights (any,
    with ``any_settings``), in table order, each named by its folder (a main-job run linked in as an arm
    keeps the arm's name)."""
    records = []
    for name in ARMS:
        record = load_record(name, arm_flags(name, quick, out, extra), out, any_settings)
        if record is not None:
            records.append({**record, "arm": name})
    return records


def add_shipped_bc_comparison(records: list[dict], rows: list[dict]) -> None:
    """Arms that train their own BC first (``--bootstrap.converge``) are compared by their summary with *that*
    BC; this adds their BC and their last ReST step against the shipped BC (paired bootstrap over the same test
    sentences, taken from another arm's BC evaluation) as ``vs_shipped_bc`` = {"bc": .., "rest": ..}."""
    from rest.steps.summary import compare

    own_bc = [r for r in records if CONVERGE_FLAG in r.get("flags", [])]
    shipped = next((evaluated_translations(r["summary"], "bc") for r in records if CONVERGE_FLAG not in r.get("flags", [])), None)
    if not own_bc or not shipped:
        return
    by_arm = {row["arm"]: row for row in rows}
    cache: dict = {}  # the shipped BC's resamples, drawn once for every comparison
    for record in own_bc:
        found = {}
        for which in ("bc", "rest"):
            got = evaluated_translations(record["summary"], which)
            if got:
                sig = compare(shipped, got, 1000, 12345, cache)
                found[which] = {key: {"delta": sig[key]["delta"], "ci": list(sig[key]["delta_ci"])}
                                for key, _, _ in METRICS}
        by_arm[record["arm"]]["vs_shipped_bc"] = found


def write_report(out: str, quick: bool, extra: list[str], failed: list[dict], info: dict,
                 any_settings: bool = False) -> list[dict]:
    """Write ``ablation.md``, ``ablation.json`` and ``ablation.png`` for the finished arms; return their rows."""
    records = collect(out, quick, extra, any_settings)
    rows = [arm_row(r) for r in records]
    add_shipped_bc_comparison(records, rows)
    with open(os.path.join(out, "ablation.md"), "w", encoding="utf-8") as f:
        f.write(markdown(rows, failed, quick, info))
    with open(os.path.join(out, "ablation.json"), "w", encoding="utf-8") as f:
        json.dump({"machine": info, "quick": quick, "extra_flags": extra, "arms": rows, "failed": failed}, f, indent=1)
    plot(rows, os.path.join(out, "ablation.png"), quick)
    return rows


def arm_table() -> str:
    """The arm table as plain text (``--list``)."""
    width = max(map(len, ARMS))
    return "\n".join(f"{name:<{width}}  {' '.join(flags) or '(defaults)'}\n{'':<{width}}  {why}"
                     for name, (flags, why) in ARMS.items())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--output-dir", "--out", dest="out", default=os.path.join(ROOT, "runs", "bench-ablation"),
                    help="output directory: one folder per arm and the report (default runs/bench-ablation)")
    ap.add_argument("--arms", default="", help="comma-separated arms to run (default: all; see --list)")
    ap.add_argument("--list", action="store_true", help="print the arm table and exit")
    ap.add_argument("--quick", action="store_true", help="tiny smoke run of each arm (numbers mean nothing)")
    ap.add_argument("--reuse", action="store_true", help="re-read arms that already finished in the output directory")
    ap.add_argument("--report-only", action="store_true",
                    help="run nothing: write the report from the arms that finished in the output directory")
    ap.add_argument("--any-settings", action="store_true",
                    help="with --report-only: also report arms that ran under other defaults or starting weights "
                         "(a study that spans a change; each row keeps the commit it ran at)")
    ap.add_argument("extra", nargs="*", help="more run-local flags for every arm (after --), e.g. --data.seed 14")
    args = ap.parse_args(argv)
    out = os.path.abspath(args.out)  # run-local runs from the repository root
    names = [a.strip() for a in args.arms.split(",") if a.strip()] or list(ARMS)
    unknown = [a for a in names if a not in ARMS]
    if unknown:
        ap.error(f"unknown arm(s) {', '.join(unknown)}; the arms: {', '.join(ARMS)}")
    from rest.config import ConfigError

    for name in ARMS:  # every arm, so a typo in the table shows before the first hour is spent
        try:
            check_flags(ARMS[name][0] + args.extra)
        except ConfigError as e:
            ap.error(f"arm {name}: {e}")
    if args.list:
        print(arm_table())
        return 0
    os.makedirs(out, exist_ok=True)
    info = machine()
    failed = []
    if args.report_only:
        names = []
        write_report(out, args.quick, args.extra, failed, info, any_settings=args.any_settings)
    for name in names:
        record = run_one(name, arm_flags(name, args.quick, out, args.extra), out, args.reuse, args.quick)
        if "failed" in record:
            failed.append(record)
        write_report(out, args.quick, args.extra, failed, info)  # after every arm: nothing is lost if stopped
    with open(os.path.join(out, "ablation.md"), encoding="utf-8") as f:
        print(f.read())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
