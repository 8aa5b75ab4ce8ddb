#!/usr/bin/env python
"""Digests of a tiny ReST run: the grown, scored and filtered sets and the summary figures.

A refactor that changes no behaviour must print the same lines before and after (same
machine, same seeds). Builds the tiny policy and data of tests/conftest.py, runs the
pipeline through kfp.local, prints one ``name sha256`` line per set and the figures.

    python tools/refactor_check.py OUT_DIR > before.txt   # ... refactor ...
    python tools/refactor_check.py OUT_DIR2 > after.txt && diff before.txt after.txt
"""
from __future__ import annotations

import hashlib
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))


def digests(run_dir: str, out_dir: str) -> list[str]:
    """``relative-name sha256`` for every data file the Grow and Improve steps wrote."""
    lines = []
    for dirpath, _, files in sorted(os.walk(os.path.join(run_dir, "pipeline_root"))):
        for name in sorted(files):
            if not name.endswith((".jsonl", ".json")) or name.startswith("executor"):
                continue
            path = os.path.join(dirpath, name)
            parts = os.path.relpath(path, run_dir).split(os.sep)
            # pipeline_root/<run>/<task>/<output>/<file>: drop the run id, which differs per run
            task = "/".join(p for p in parts[2:] if p)
            if not any(k in task for k in ("sample", "score", "filter", "merge")):
                continue
            if name in ("metrics.json", "report.json") or "timing" in name:
                continue
            with open(path, "rb") as f:
                lines.append(f"{task} {hashlib.sha256(f.read()).hexdigest()[:16]}")
    return sorted(lines)


def main() -> int:
    import conftest
    import pipeline

    out = os.path.abspath(sys.argv[1])
    os.makedirs(out, exist_ok=True)
    data = os.path.join(out, "data")
    os.makedirs(data, exist_ok=True)
    tiny = {s: conftest.write_tsv(os.path.join(data, f"{s}.tsv"), conftest.bundled_rows(s, n))
            for s, n in (("train", 300), ("valid", 16), ("test", 16))}
    policy = os.path.join(out, "policy")
    if not os.path.isdir(policy):
        conftest.tiny_policy.__wrapped__(type("F", (), {"mktemp": lambda self, name: __import__("pathlib").Path(out)})())
    run = os.path.join(out, "run")
    rc = pipeline.main([
        "run-local", "--no-tracking", "--output-dir", run, "--train", tiny["train"], "--valid", tiny["valid"],
        "--test", tiny["test"], "--source-column", "de", "--target-column", "en", "--policy", policy,
        "--data.grow_sources", "12", "--sample.num_samples", "2", "--sample.max_length_ratio", "0.5",
        "--filter.thresholds", "0.05,0.1", "--finetune.epochs", "1", "--sample.num_shards", "2"])
    if rc:
        return rc
    with open(os.path.join(run, "summary.json"), encoding="utf-8") as f:
        summary = json.load(f)
    for line in digests(run, out):
        print(line)
    for s in summary["steps"]:
        print("step", s["g"], s["i"], s["control"], *(f"{s[k]:.6f}" for k in ("test_bleu", "test_chrf", "test_reward")),
              f"{s['kept_fraction'] or 0:.6f}", s["optimizer_steps"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
