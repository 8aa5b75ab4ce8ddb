"""Score: every (source, candidate) of a grown set gets its reward, once per Grow.

Streams the grown set in batches, so memory stays bounded however large the set is.
"""
from __future__ import annotations

import itertools
import logging
import math
import os
import time

from rest.config import ScoreConfig
from rest.services.files import atomic_path, read_jsonl, write_json
from rest.rewards.metrics import compute
from rest.model.device import Meter
from rest.rewards.spec import RewardSpec

log = logging.getLogger(__name__)

HIST_BINS = 20


def score(grown_dir: str, cfg: ScoreConfig, out_dir: str) -> dict:
    """Write ``out_dir/data.jsonl`` (grown rows + ``reward``) and reward statistics."""
    import json

    fn, _ = RewardSpec.from_config(cfg).functions()
    # A learned reward runs on score.device; a metric reward (chrF, BLEU, code) on the CPU.
    device = fn.place(cfg.device, "score.device") if hasattr(fn, "place") else "cpu"
    meter = Meter(device).start()
    reference_free = getattr(fn, "reference_free", False)
    t0, n, total, total_sq = time.time(), 0, 0.0, 0.0
    by_origin: dict[str, list[float]] = {}
    hist = [0] * HIST_BINS
    lo, hi = float("inf"), float("-inf")
    rows = read_jsonl(os.path.join(grown_dir, "data.jsonl"))
    with atomic_path(os.path.join(out_dir, "data.jsonl")) as tmp, open(tmp, "w", encoding="utf-8") as f:
        while True:
            batch = list(itertools.islice(rows, cfg.batch_size))
            if not batch:
                break
            if not reference_free and any(r.get("reference") is None for r in batch):
                raise ValueError(
                    f"{grown_dir}: the grown set holds samples of source-only text (data.sources), which have no "
                    f"reference, but reward {cfg.reward!r} compares with the reference; score them with a "
                    "reference-free reward: score.reward=reward_model and score.reward_model_path=DIR "
                    "(train one with `python -m rest reward-model`)")
            rewards = compute(fn, [r["source"] for r in batch], [r["candidate"] for r in batch],
                              [r.get("reference") or "" for r in batch])
            for r, v in zip(batch, rewards):
                r["reward"] = v
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
                n += 1
                total += v
                total_sq += v * v
                lo, hi = min(lo, v), max(hi, v)
                origin = r.get("origin", "sample")
                if origin == "sample" and r.get("reference") is None:
                    origin = "source_only"  # reported apart: no reference to compare with
                acc = by_origin.setdefault(origin, [0, 0.0])
                acc[0] += 1
                acc[1] += v
                hist[min(HIST_BINS - 1, max(0, int(v * HIST_BINS)))] += 1
            if n % (cfg.batch_size * 40) < cfg.batch_size:
                log.info("score: %d candidates, %.0f/s", n, n / max(1e-9, time.time() - t0))
    if n == 0:
        raise ValueError(f"{grown_dir}: the grown set is empty; nothing to score")
    mean = total / n
    stats = {"rows": n, "reward": cfg.reward, "mean_reward": mean,
             "std_reward": math.sqrt(max(0.0, total_sq / n - mean * mean)), "min_reward": lo, "max_reward": hi,
             "mean_reward_by_origin": {k: v[1] / v[0] for k, v in by_origin.items()},
             "count_by_origin": {k: v[0] for k, v in by_origin.items()},
             "histogram": {"bins": HIST_BINS, "range": [0.0, 1.0], "counts": hist},
             "wall_s": time.time() - t0}
    stats.update(meter.stop().record(score_candidates_per_s=n / max(1e-9, meter.wall_s)))
    write_json(os.path.join(out_dir, "stats.json"), stats)
    log.info("score: %d candidates, mean %s %.4f (samples %.4f)", n, cfg.reward, mean,
             stats["mean_reward_by_origin"].get("sample", float("nan")))
    return stats
