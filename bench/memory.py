"""Memory under load: score and filter a synthetic grown set of millions of candidates.

    python bench/memory.py                      # 5,000,000 candidates (about 1.4 GB of JSONL)
    python bench/memory.py --rows 200000        # a quick check

The parent process streams a synthetic grown set to disk (625,000 sources x 7 samples +
the reference, so 8 rows per source); a *child* process then runs ``rest.steps.score.score``
and ``rest.steps.filter.filter_scored`` (global and per-source percentile with a cap) on it and
reports its peak resident set size (VmHWM / ru_maxrss). The generator runs in the parent
so its memory does not count.

The reward is a cheap one registered here (unigram F1 against the reference): sentence
chrF through sacrebleu costs ~0.2 ms per candidate, i.e. ~20 min for 5M on one core, and
what this measures is the streaming of score/filter, not the reward's speed.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

LIMIT_BYTES = 1 << 30  # the budget: 1 GiB peak RSS
PER_SOURCE = 8         # 7 samples + the reference


def generate(path: str, rows: int, seed: int = 0) -> int:
    """Stream ``rows`` grown-set rows to ``path``; returns the file size."""
    rng = random.Random(seed)
    vocab = [f"w{k}" for k in range(5000)]
    with open(path, "w", encoding="utf-8") as f:
        n, src = 0, 0
        while n < rows:
            sid = f"help/file{src // 50}.xhp:par_{src}"
            ref_words = rng.choices(vocab, k=rng.randint(6, 24))
            reference = " ".join(ref_words)
            source = " ".join(rng.choices(vocab, k=len(ref_words)))
            for k in range(PER_SOURCE):
                if n >= rows:
                    break
                if k == PER_SOURCE - 1:
                    cand, origin, ident, policy = reference, "reference", f"{sid}#ref", "human"
                else:
                    words = [w if rng.random() > 0.3 else rng.choice(vocab) for w in ref_words]
                    cand, origin, ident, policy = " ".join(words), "sample", f"{sid}#g1s{k}", "0123456789abcdef"
                f.write(json.dumps({"id": ident, "source_id": sid, "source": source, "candidate": cand,
                                    "reference": reference, "origin": origin, "policy_id": policy,
                                    "grow": 1}) + "\n")
                n += 1
            src += 1
    return os.path.getsize(path)


def peak_rss() -> int:
    """Peak resident set size of this process in bytes (VmHWM; ru_maxrss as a fallback)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def child(work: str) -> None:
    """Run score + filter on ``work/grown`` and print one JSON line of measurements."""
    from rest.rewards import metrics as rewards
    from rest.config import FilterConfig, ScoreConfig
    from rest.steps.filter import filter_scored
    from rest.steps.score import score

    @rewards.register("bench_unigram_f1")
    def unigram_f1(sources, candidates, references):
        out = []
        for c, r in zip(candidates, references):
            cw, rw = c.split(), r.split()
            common = len(set(cw) & set(rw))
            out.append(0.0 if not common else 2 * common / (len(cw) + len(rw)))
        return out

    after_import = peak_rss()
    res = {"rss_after_import": after_import}
    t0 = time.time()
    st = score(os.path.join(work, "grown"), ScoreConfig(reward="bench_unigram_f1", batch_size=1024),
               os.path.join(work, "scored"))
    res.update(score_s=time.time() - t0, rss_after_score=peak_rss(), rows=st["rows"], mean_reward=st["mean_reward"])
    t0 = time.time()
    fs = filter_scored(os.path.join(work, "scored"), FilterConfig(thresholds=[0.5, 0.6, 0.7]), 2,
                       os.path.join(work, "filtered-global"))
    res.update(filter_global_s=time.time() - t0, kept_global=fs["kept"])
    t0 = time.time()
    fp = filter_scored(os.path.join(work, "scored"),
                       FilterConfig(thresholds=[0.5, 0.6, 0.7], mode="percentile", percentiles=[50, 70, 90],
                                    max_per_source=3), 2, os.path.join(work, "filtered-percentile"))
    res.update(filter_percentile_s=time.time() - t0, kept_percentile=fp["kept"], peak_rss=peak_rss(),
               scored_bytes=os.path.getsize(os.path.join(work, "scored", "data.jsonl")))
    print(json.dumps(res))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=5_000_000, help="candidates in the grown set")
    ap.add_argument("--work", default="", help="working directory (default: a temporary one, removed)")
    ap.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child)
        return 0
    work = args.work or tempfile.mkdtemp(prefix="rest-bench-memory-")
    os.makedirs(os.path.join(work, "grown"), exist_ok=True)
    try:
        t0 = time.time()
        size = generate(os.path.join(work, "grown", "data.jsonl"), args.rows)
        gen_s = time.time() - t0
        print(f"generated {args.rows:,} candidates ({size / 2**20:,.0f} MiB) in {gen_s:.0f} s", flush=True)
        out = subprocess.run([sys.executable, __file__, "--child", work], check=True, capture_output=True,
                             text=True, env={**os.environ, "PYTHONPATH": ROOT})
        res = json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    mib = 2 ** 20
    print("| candidates | grown set | scored set | peak RSS (score + 2 filters) | RSS after imports "
          "| score | filter global | filter percentile |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {res['rows']:,} | {size / mib:,.0f} MiB | {res['scored_bytes'] / mib:,.0f} MiB "
          f"| {res['peak_rss'] / mib:,.0f} MiB | {res['rss_after_import'] / mib:,.0f} MiB "
          f"| {res['score_s']:.0f} s | {res['filter_global_s']:.0f} s | {res['filter_percentile_s']:.0f} s |")
    ok = res["peak_rss"] < LIMIT_BYTES
    print(f"peak RSS {res['peak_rss'] / mib:,.0f} MiB {'<' if ok else '>='} 1024 MiB budget: {'OK' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
