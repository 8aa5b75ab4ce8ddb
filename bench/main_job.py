#!/usr/bin/env python
"""The main job, measured: wall time before/after the speed settings, and the spread over seeds.

Runs ``python pipeline.py run-local`` (the same command as ``scripts/main.sh``, fresh output
directory, no task cache) once per arm, one after another so they do not share the CPU:

- ``before``: the settings the main job had when issue #17 was filed (test evaluation and the
  validation checks on Hugging Face ``generate()``, two epochs per Improve step:
  ``--evaluate.backend hf --finetune.valid_backend hf --finetune.epochs 2``, and every sample
  above τ with the references, by chrF: ``--score.reward chrf --filter.max_per_source 0
  --filter.keep_references true``), seed 13 — the
  side-by-side baseline for the wall-time figure;
- ``seed<S>`` for each ``--seeds`` value: today's defaults with every seed that shapes a
  run set to S (``data.seed``: which 3,000 sources Grow samples for; ``sample.seed``;
  ``finetune.seed``). The test and validation files are fixed, so the spread is the
  run-to-run noise of the recipe itself.

It writes ``OUT/main_job.md`` and ``OUT/main_job.json``: per arm the wall and CPU seconds
and the per-task wall times (from each run's ``summary.json``), and for every figure of
the run's table (test BLEU/chrF/reward per step, the verdict's differences and intervals)
the mean and the standard deviation over the seeds.

    python bench/main_job.py                      # before + seeds 13, 14, 15 (about 4 x 10-20 min)
    python bench/main_job.py --no-before --seeds 13 --reuse   # add to / re-read earlier runs
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time

from _common import ROOT, check_run_local_args, machine

# The main job's settings when issue #17 was filed: Hugging Face generate() for the test
# evaluation and the validation checks, two epochs per Improve step.
BEFORE = ["--evaluate.backend", "hf", "--finetune.valid_backend", "hf", "--finetune.epochs", "2",
          # the filter and reward of that time (the defaults until 2026-12-03)
          "--score.reward", "chrf", "--filter.max_per_source", "0", "--filter.keep_references", "true"]


def policy_sha256(policy: str) -> str | None:
    """SHA-256 of a starting policy's weights (``model.safetensors``), None when it is not a local directory
    (trained from scratch, s3://, models:/): a record names the weights it started from, not only their path."""
    from rest.services.files import sha256_file

    path = os.path.join(policy or "", "model.safetensors")
    return sha256_file(path) if policy and os.path.isfile(path) else None


def seed_flags(seed: int) -> list[str]:
    return ["--data.seed", str(seed), "--sample.seed", str(seed), "--finetune.seed", str(seed)]


def run_arm(name: str, flags: list[str], out: str, reuse: bool, extra: list[str]) -> dict:
    """Run one arm (or re-read it with ``reuse``); return its record."""
    arm_dir = os.path.join(out, name)
    record_path = os.path.join(arm_dir, "arm.json")
    if reuse and os.path.exists(record_path):
        with open(record_path, encoding="utf-8") as f:
            print(f"[{name}] reused {record_path}", flush=True)
            record = json.load(f)
        return {**record, "summary": add_significance(record["summary"], arm_dir)}
    cmd = [sys.executable, os.path.join(ROOT, "pipeline.py"), "run-local", "--output-dir", arm_dir, *flags, *extra]
    check_run_local_args(cmd[3:])  # before anything of an earlier run is moved
    # A fresh run gets an empty directory (no embedded MLflow store or artifacts from before); an earlier
    # run stays beside it until this one has finished, and comes back if this one fails.
    previous = arm_dir + ".previous"
    shutil.rmtree(previous, ignore_errors=True)
    if os.path.exists(arm_dir):
        os.rename(arm_dir, previous)
    os.makedirs(arm_dir)
    print(f"[{name}] {' '.join(cmd[1:])}", flush=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load = os.getloadavg()[0]
    t0 = time.time()
    with open(os.path.join(arm_dir, "stdout.log"), "w", encoding="utf-8") as log:
        rc = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT).returncode
    wall = time.time() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if rc != 0:
        failed = arm_dir + ".failed"
        shutil.rmtree(failed, ignore_errors=True)
        os.rename(arm_dir, failed)
        if os.path.exists(previous):
            os.rename(previous, arm_dir)
        raise SystemExit(f"[{name}] failed (exit {rc}); see {os.path.join(failed, 'stdout.log')}"
                         + (f"; the earlier run is back in {arm_dir}" if os.path.exists(arm_dir) else ""))
    shutil.rmtree(previous, ignore_errors=True)
    with open(os.path.join(arm_dir, "summary.json"), encoding="utf-8") as f:
        summary = add_significance(json.load(f), arm_dir)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    record = {"arm": name, "flags": flags + extra, "commit": commit,
              "policy_sha256": policy_sha256(summary["config"]["bootstrap"]["policy"]), "wall_s": round(wall, 1),
              "cpu_s": round((after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime), 1),
              "load_avg_1min_at_start": round(load, 2), "summary": summary}
    with open(record_path, "w", encoding="utf-8") as f:
        json.dump(record, f, indent=1)
    print(f"[{name}] done in {wall:.0f} s wall, {record['cpu_s']:.0f} s CPU", flush=True)
    return record


def add_significance(summary: dict, arm_dir: str) -> dict:
    """The verdict with paired-bootstrap intervals, recomputed from the run's own evaluations.

    A run made before the summary carried intervals (an earlier commit) still has every
    evaluation's per-sentence outputs under ``pipeline_root``: the same
    :func:`rest.steps.summary.verdict` runs on them, so every arm is judged by one rule.
    """
    import glob

    from rest.services.files import read_jsonl
    from rest.steps.summary import sentence_key, verdict

    if summary.get("verdict", {}).get("significance"):
        return summary
    sentences = {}
    for report in glob.glob(os.path.join(arm_dir, "pipeline_root", "*", "evaluate-op*", "report")):
        rows = list(read_jsonl(os.path.join(report, "rows.jsonl")))
        translations = os.path.join(report, "eval", "translations.jsonl")
        if rows and os.path.isfile(translations):
            sentences[sentence_key(rows[-1])] = list(read_jsonl(translations))
    return {**summary, "verdict": verdict(summary["steps"], sentences), "verdict_recomputed": True}


def figures(summary: dict) -> dict[str, float]:
    """Every number of a run's table and verdict, flattened: ``<row label>/<metric>`` and ``verdict/<key>``."""
    out: dict[str, float] = {}
    for row in summary.get("steps", []):
        for key in ("test_bleu", "test_chrf", "test_reward", "valid_reward", "kept_fraction", "threshold",
                    "optimizer_steps"):
            if isinstance(row.get(key), (int, float)):
                out[f"{row['label']}/{key}"] = float(row[key])
    def walk(prefix: str, value):
        if isinstance(value, bool):
            out[prefix] = float(value)
        elif isinstance(value, (int, float)):
            out[prefix] = float(value)
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}/{k}", v)
        elif isinstance(value, list) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value):
            out[f"{prefix}/lo"], out[f"{prefix}/hi"] = float(value[0]), float(value[1])
    for k, v in summary.get("verdict", {}).items():
        if k != "last_step":
            walk(f"verdict/{k}", v)
    return out


def task_times(summary: dict) -> dict[str, float]:
    """Per-task wall seconds from a run's summary (the summary's task table)."""
    rows = (summary.get("timing") or {}).get("tasks") or summary.get("task_times") or summary.get("tasks") or []
    return {r["task"]: float(r["wall_s"]) for r in rows if "task" in r and "wall_s" in r}


def report(records: list[dict], out: str, machine_info: dict) -> str:
    seeds = [r for r in records if r["arm"].startswith("seed")]
    lines = ["# The main job, measured (bench/main_job.py)", "",
             f"Machine: {machine_info['nproc']} cores, {machine_info['cpu']}, torch {machine_info['torch']}.", "",
             "| arm | wall s | CPU s | load at start |", "|---|---|---|---|"]
    for r in records:
        lines.append(f"| {r['arm']} | {r['wall_s']:.0f} | {r['cpu_s']:.0f} | {r['load_avg_1min_at_start']:.2f} |")
    before = next((r for r in records if r["arm"] == "before"), None)
    same_seed = next((r for r in records if r["arm"] == "seed13"), None)
    if before and same_seed:
        lines += ["", f"Same seed, today's settings vs before: **{before['wall_s'] / same_seed['wall_s']:.2f}x** "
                      f"faster in wall time ({before['wall_s']:.0f} s -> {same_seed['wall_s']:.0f} s), "
                      f"{before['cpu_s'] / max(1e-9, same_seed['cpu_s']):.2f}x in CPU seconds."]
    tasks = {r["arm"]: task_times(r["summary"]) for r in records}
    names = sorted({t for tt in tasks.values() for t in tt}, key=lambda t: next(
        (i for tt in tasks.values() for i, k in enumerate(tt) if k == t), 0))
    if names:
        lines += ["", "Per-task wall seconds:", "", "| task | " + " | ".join(tasks) + " |",
                  "|---|" + "---|" * len(tasks)]
        for t in names:
            lines.append(f"| {t} | " + " | ".join(f"{tasks[a].get(t, float('nan')):.1f}" for a in tasks) + " |")
    if seeds:
        per = [figures(r["summary"]) for r in seeds]
        keys = [k for k in per[0] if all(k in p for p in per)]
        lines += ["", f"Spread over {len(seeds)} seeds ({', '.join(r['arm'] for r in seeds)}): mean ± sd "
                      "(sd: sample standard deviation; one value per seed follows).", "",
                  "| figure | mean | sd | per seed |", "|---|---|---|---|"]
        for k in keys:
            vals = [p[k] for p in per]
            sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
            lines.append(f"| {k} | {statistics.mean(vals):.4f} | {sd:.4f} | "
                         + ", ".join(f"{v:.4f}" for v in vals) + " |")
    text = "\n".join(lines) + "\n"
    with open(os.path.join(out, "main_job.md"), "w", encoding="utf-8") as f:
        f.write(text)
    with open(os.path.join(out, "main_job.json"), "w", encoding="utf-8") as f:
        json.dump({"machine": machine_info, "arms": records}, f, indent=1)
    return text


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="13,14,15", help="comma-separated seeds, one run each (default 13,14,15)")
    ap.add_argument("--no-before", action="store_true", help="skip the run with the earlier settings")
    ap.add_argument("--out", default=os.path.join(ROOT, "runs", "bench-main"), help="output directory")
    ap.add_argument("--reuse", action="store_true", help="re-read arms that already finished in --out")
    ap.add_argument("extra", nargs="*", help="more run-local flags for every arm (after --), e.g. --no-tracking")
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    info = machine()
    records = []
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    arms = [(f"seed{s}", seed_flags(s)) for s in seeds]
    if not args.no_before:
        # Right after the first seed's run, so that the two timed runs see the same machine.
        arms.insert(1, ("before", BEFORE + seed_flags(13)))
    for name, flags in arms:
        records.append(run_arm(name, flags, args.out, args.reuse, args.extra))
        report(records, args.out, info)  # a partial report after every arm: nothing is lost if stopped
    print(report(records, args.out, info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
