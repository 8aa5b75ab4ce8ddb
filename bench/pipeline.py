"""Pipeline overhead: the share of a local run's wall time spent outside the steps' own work.

1. Runs a tiny ``python pipeline.py run-local`` (tiny data and an untrained d=32 policy,
   as in tests/test_pipeline.py) as a subprocess and compares its wall time with the sum
   of the steps' own work: every component logs ``<step>: done in X s`` (rest_kfp.runtime),
   timed from inside the component, so process start, imports, kfp.local's executor and
   artifact copies are the rest.
2. Caching: kfp.local 2.17 has a file-backed task cache (``kfp.local.init(enable_caching=
   True)``; off by default, and pipeline.py's run-local leaves it off). This script runs the
   same ``pipeline.py run-local`` entry point with that cache switched on, once with the
   thresholds A and once with only the last threshold changed, and reports the second
   run's wall time and which tasks came from the cache.

    python bench/pipeline.py
"""
from __future__ import annotations

import argparse
import csv
import os
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import DATA_DIR, ROOT, emit, machine  # noqa: E402

DONE = re.compile(r"(?P<label>[\w/.-]+): done in (?P<s>[\d.]+) s")
HIT = re.compile(r"Task '?(?P<task>[\w.-]+)'? cache hit")
EXEC = re.compile(r"Executing task '?(?P<task>[\w.-]+)'?")


def make_tiny_inputs(work: str) -> dict:
    """Tiny train/valid/test TSVs from the bundled corpus and an untrained d=32 policy."""
    from rest.model.policy import build_model, save_policy, train_tokenizer

    os.makedirs(work, exist_ok=True)
    paths = {}
    for split, n in (("train", 300), ("valid", 16), ("test", 16)):
        out = os.path.join(work, f"{split}.tsv")
        with open(os.path.join(DATA_DIR, f"{split}.tsv"), encoding="utf-8", newline="") as f, \
                open(out, "w", encoding="utf-8", newline="") as g:
            for k, line in enumerate(f):
                if k > n:
                    break
                g.write(line)
        paths[split] = out
    policy = os.path.join(work, "policy")
    if not os.path.isfile(os.path.join(policy, "config.json")):
        with open(paths["train"], encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
        tok = train_tokenizer((t for r in rows for t in (r["de"], r["en"])), vocab_size=300)
        model = build_model(tok, d_model=32, ffn_dim=64, layers=1, heads=2, dropout=0.0, seed=0)
        save_policy(model, tok, policy, {"kind": "bc", "optimizer_steps_since_bc": 0})
    paths["policy"] = policy
    return paths


def run_args(inputs: dict, out_dir: str, thresholds: str) -> list[str]:
    return ["run-local", "--no-tracking", "--output-dir", out_dir, "--train", inputs["train"],
            "--valid", inputs["valid"], "--test", inputs["test"], "--source-column", "de", "--target-column", "en",
            "--policy", inputs["policy"], "--data.grow_sources", "12", "--sample.num_samples", "2",
            "--sample.max_length_ratio", "0.5", "--filter.thresholds", thresholds, "--finetune.epochs", "1"]


def timed_run(cmd: list[str], log_path: str) -> dict:
    env = dict(os.environ)
    env.pop("MLFLOW_TRACKING_URI", None)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    text = proc.stdout + proc.stderr
    with open(log_path, "w", encoding="utf-8") as f:
        f.write(text)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} ... failed ({proc.returncode}); log: {log_path}\n{text[-3000:]}")
    return {**summarize_log(text, wall), "log": log_path}


def summarize_log(text: str, wall: float) -> dict:
    """Steps' own work (their ``done in`` lines; a label may repeat, e.g. two evaluates) vs wall time."""
    steps = [(m["label"], float(m["s"])) for m in DONE.finditer(text)]
    work = sum(s for _, s in steps)
    return {"wall_s": round(wall, 2), "steps": len(steps), "steps_work_s": round(work, 2),
            "outside_steps_s": round(wall - work, 2), "overhead_share": round(1 - work / wall, 3),
            "step_times": [[k, round(v, 2)] for k, v in steps],
            "cache_hits": sorted(set(m["task"] for m in HIT.finditer(text)))}


def cached_main(argv: list[str]) -> int:
    """``pipeline.main(argv)`` with kfp.local's task cache switched on (a child process of this bench)."""
    cache_root = argv.pop(0)
    import logging

    from kfp import local

    logging.basicConfig(level=logging.INFO)
    real_init = local.init

    def init_with_cache(*a, **kw):
        kw.update(enable_caching=True, cache_root=cache_root)
        return real_init(*a, **kw)

    local.init = init_with_cache
    import pipeline

    return pipeline.main(argv)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work-dir", default=os.path.join(tempfile.gettempdir(), "rest-bench-pipeline"), help="tiny inputs, run outputs and logs")
    ap.add_argument("--thresholds", default="0.05,0.1", help="thresholds of the first runs")
    ap.add_argument("--changed-thresholds", default="0.05,0.15", help="the same with only the last one changed")
    ap.add_argument("--skip-cache", action="store_true", help="only the overhead run")
    ap.add_argument("--skip-plain", action="store_true", help="only the two cached runs")
    ap.add_argument("--out", default="")
    args = ap.parse_args(argv)

    import shutil

    info = machine()
    inputs = make_tiny_inputs(os.path.join(args.work_dir, "inputs"))
    runs = os.path.join(args.work_dir, "runs")
    shutil.rmtree(runs, ignore_errors=True)
    os.makedirs(runs)
    py = sys.executable
    cmd = [py, "pipeline.py", *run_args(inputs, os.path.join(runs, "plain"), args.thresholds)]
    result = {"bench": "pipeline", "machine": info, "command": " ".join(cmd)}
    if not args.skip_plain:
        print("running:", " ".join(cmd), flush=True)
        result["plain"] = plain = timed_run(cmd, os.path.join(runs, "plain.log"))
    if not args.skip_cache:
        cache_root = os.path.join(runs, "kfp-cache")
        me = os.path.abspath(__file__)
        first = timed_run([py, me, "_cached", cache_root, *run_args(inputs, os.path.join(runs, "cached-a"),
                                                                     args.thresholds)],
                          os.path.join(runs, "cached-a.log"))
        second = timed_run([py, me, "_cached", cache_root, *run_args(inputs, os.path.join(runs, "cached-b"),
                                                                      args.changed_thresholds)],
                           os.path.join(runs, "cached-b.log"))
        result["cache"] = {"kfp_local_caches": True, "first_run": first, "last_threshold_changed": second,
                           "thresholds": [args.thresholds, args.changed_thresholds],
                           "rerun_share_of_first": round(second["wall_s"] / first["wall_s"], 3)}
    emit(result, args.out)
    if not args.skip_plain:
        print(f"\nplain run: wall {plain['wall_s']} s, steps' own work {plain['steps_work_s']} s over {plain['steps']} "
              f"steps -> {plain['overhead_share']:.0%} of the wall time is outside the steps")
    if "cache" in result:
        c = result["cache"]
        print(f"cached re-run after changing only the last threshold: {c['last_threshold_changed']['wall_s']} s vs "
              f"{c['first_run']['wall_s']} s; executed steps: {[k for k, _ in c['last_threshold_changed']['step_times']]}; "
              f"cache hits: {c['last_threshold_changed']['cache_hits']}")
    return result


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_cached":
        sys.path.insert(0, ROOT)
        os.chdir(ROOT)
        sys.exit(cached_main(sys.argv[2:]))
    main()
