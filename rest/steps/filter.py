"""Improve's filter: keep the grown candidates whose reward passes this step's threshold.

Global mode keeps reward >= τ_i. The paper's guard: τ_1 must exceed the grown set's mean
reward, otherwise the "filter" keeps most of the set and ReST degrades into plain
self-distillation. Per-source percentile mode keeps each source's candidates at or above
that source's own percentile (the paper's appendix variant). Streams in two passes.
"""
from __future__ import annotations

import heapq
import itertools
import json
import logging
import os
import random

import numpy as np

from rest.config import FilterConfig
from rest.services.files import atomic_path, read_json, read_jsonl, write_json

log = logging.getLogger(__name__)
GUARD_MARGIN = 1e-3


class FilterError(ValueError):
    """Nothing passed the filter, or the threshold schedule breaks the paper's rule."""


def effective_threshold(cfg: FilterConfig, step: int, mean_reward: float) -> float:
    """τ for Improve step ``step`` (1-based) after the guard against τ_1 <= mean reward.

    ``guard=raise`` lifts the whole schedule by the same amount, so that τ_1 sits just above
    the mean and the later thresholds still rise by the steps the user chose (clipping each
    at the reward's maximum, 1.0, where only perfect candidates and the references pass).
    """
    tau = cfg.thresholds[step - 1]
    first = cfg.thresholds[0]
    if first <= mean_reward:
        if cfg.guard == "error":
            raise FilterError(f"filter.thresholds[0]={first} is not above the grown set's mean reward "
                              f"{mean_reward:.4f}; raise it above the mean or set filter.guard=raise")
        if cfg.guard == "raise":
            tau = min(1.0, tau + (mean_reward + GUARD_MARGIN - first))
    return tau


def _groups(rows):
    """Consecutive rows of the same source (the grown set keeps a source's rows together)."""
    return itertools.groupby(rows, key=lambda r: r["source_id"])


def filter_scored(scored_dir: str, cfg: FilterConfig, step: int, out_dir: str, previous_dir: str | None = None) -> dict:
    """Write the rows that pass Improve step ``step`` into ``out_dir/data.jsonl``; return stats.

    ``previous_dir`` (``filter.accumulate``): the previous Grow step's kept set, merged in per
    source (this Grow's rows first, then the earlier ones not already kept, then the
    ``max_per_source`` cap); sources only the earlier set holds are kept as they were.
    """
    previous: dict[str, list[dict]] = {}
    if cfg.accumulate and previous_dir:
        for r in read_jsonl(os.path.join(previous_dir, "data.jsonl")):
            previous.setdefault(r["source_id"], []).append(r)
    if not 1 <= step <= len(cfg.thresholds):
        raise FilterError(f"Improve step {step} has no threshold: filter.thresholds has {len(cfg.thresholds)}")
    data = os.path.join(scored_dir, "data.jsonl")
    mean = read_json(os.path.join(scored_dir, "stats.json"))["mean_reward"]
    tau = effective_threshold(cfg, step, mean)
    pct = cfg.percentiles[step - 1] if cfg.mode == "percentile" else None
    total = kept = kept_refs = 0
    sum_all = sum_kept = 0.0
    examples: dict[str, list] = {"best": [], "worst": [], "borderline": []}
    rng = random.Random(step)
    # Per-source rules need each source's rows together (sample/merge write them so); a
    # source seen again later would be cut twice, on part of its rows each time.
    per_source = pct is not None or cfg.max_per_source > 0 or cfg.dedupe or bool(previous)
    kept_previous = sources_kept = 0
    done_sources: set[str] = set()
    with atomic_path(os.path.join(out_dir, "data.jsonl")) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for source_id, group in _groups(read_jsonl(data)):
            if per_source:
                if source_id in done_sources:
                    raise FilterError(f"{data}: rows of source {source_id!r} are not contiguous; per-source "
                                      "filtering (filter.mode=percentile, filter.max_per_source) needs each "
                                      "source's rows together, as rest.steps.sample writes them")
                done_sources.add(source_id)
            group = list(group)
            cut = tau if pct is None else _percentile([r["reward"] for r in group], pct)
            passed = [r for r in group if r["reward"] >= cut and (cfg.keep_references or r.get("origin") != "reference")]
            if previous:
                passed += previous.pop(source_id, [])  # newest first: a tie under the cap keeps the new ones
            if cfg.dedupe:
                passed = _distinct(passed)
            if cfg.max_per_source and len(passed) > cfg.max_per_source:
                passed = heapq.nlargest(cfg.max_per_source, passed, key=lambda r: r["reward"])
            for r in group:
                total += 1
                sum_all += r["reward"]
                _collect_examples(examples, r, cut, rng)
            sources_kept += bool(passed)
            for r in passed:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
                kept += 1
                sum_kept += r["reward"]
                kept_refs += r.get("origin") == "reference"
                kept_previous += r.get("grow") is not None and r["grow"] != group[0].get("grow")
        for rows in previous.values():  # sources this Grow step did not sample: their earlier kept rows stay
            sources_kept += 1
            for r in (_distinct(rows) if cfg.dedupe else rows)[:cfg.max_per_source or None]:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
                kept += 1
                kept_previous += 1
                sum_kept += r["reward"]
        if kept == 0:  # raised inside the atomic write: no empty set is ever published
            raise FilterError(f"Improve step {step}: no candidate passed threshold {tau:.4f} "
                              f"(mean reward {mean:.4f}); lower filter.thresholds or sample more (sample.num_samples)")
    stats = {"step": step, "threshold": cfg.thresholds[step - 1], "threshold_used": tau, "mode": cfg.mode,
             "percentile": pct, "total": total, "kept": kept, "kept_fraction": kept / total,
             "kept_references": kept_refs, "kept_samples": kept - kept_refs, "kept_from_previous": kept_previous,
             "sources_kept": sources_kept,
             "mean_reward_all": sum_all / total, "mean_reward_kept": sum_kept / kept,
             "examples": {k: [e[1] for e in sorted(v, key=lambda e: e[0], reverse=True)] for k, v in examples.items()}}
    write_json(os.path.join(out_dir, "stats.json"), stats)
    log.info("filter step %d: τ=%.4f kept %d/%d (%.1f%%), mean reward kept %.4f vs all %.4f", step, tau, kept,
             total, 100 * kept / total, stats["mean_reward_kept"], stats["mean_reward_all"])
    return stats


def _distinct(rows: list[dict]) -> list[dict]:
    """The first row of each distinct candidate text (order kept)."""
    seen, out = set(), []
    for r in rows:
        if r["candidate"] not in seen:
            seen.add(r["candidate"])
            out.append(r)
    return out


def _percentile(values: list[float], p: float) -> float:
    return float(np.percentile(values, p))  # linear interpolation between closest ranks


def _collect_examples(examples, row, cut, rng, keep=5):
    """Keep a few best, worst and borderline samples for the audit table (bounded memory)."""
    if row.get("origin") == "reference":
        return
    item = {k: row[k] for k in ("source", "candidate", "reference", "reward")}
    for name, key in (("best", -row["reward"]), ("worst", row["reward"]), ("borderline", abs(row["reward"] - cut))):
        heap = examples[name]
        entry = (-key, rng.random(), item)  # max-heap on key via negation: keep the `keep` smallest keys
        if len(heap) < keep:
            heapq.heappush(heap, entry)
        elif entry > heap[0]:
            heapq.heapreplace(heap, entry)

