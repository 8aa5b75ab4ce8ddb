"""Grow: the current policy samples N candidates per source; the references join the set.

The grown set is written in chunks of sources, each chunk atomically, so a re-run of a
killed step redoes only the missing chunks; with the run's object store (``resume_uri``)
each finished chunk is uploaded too, so a retry on a fresh disk (a rescheduled pod) reuses
them (:mod:`rest.services.resume`). Rows keep everything later steps and the
audit trail need: source id, source, candidate, reference, policy id, Grow index.
"""
from __future__ import annotations

import logging
import os
import shutil
import time

from rest.config import SampleConfig
from rest.steps.data import read_rows
from rest.services.files import read_jsonl, sha256_path, write_json, write_jsonl
from rest.services.resume import ResumeStore
from rest.model.backends import generate_with
from rest.model.device import Meter, check_compute_type, place
from rest.model.policy import fingerprint, load_policy

log = logging.getLogger(__name__)

CHUNK_SOURCES = 256  # sources per resumable chunk


def shard_rows(rows: list[dict], shard_index: int, num_shards: int) -> list[dict]:
    """The rows of one shard: every ``num_shards``-th row starting at ``shard_index``."""
    if not 0 <= shard_index < num_shards:
        raise ValueError(f"shard_index {shard_index} outside 0..{num_shards - 1}")
    return rows[shard_index::num_shards]


def grow(policy_dir: str, sources_path: str, cfg: SampleConfig, out_dir: str, grow_step: int,
         shard_index: int = 0, num_shards: int = 1, trust_remote_code: bool = False,
         resume_uri: str | None = None) -> dict:
    """Sample the grown set for one shard of the sources into ``out_dir/data.jsonl``.

    Returns stats (counts, rate, policy id). Chunks already present in ``out_dir/chunks``
    from an earlier, interrupted run with the same inputs are reused. ``resume_uri`` (the
    run's resume root in the object store, ``rest.services.storage.resume_uri``): each
    finished chunk is uploaded under it, keyed by the same fingerprint, and the ones found
    there are downloaded first; they are removed once ``data.jsonl`` is written.
    """
    t0 = time.time()
    rows = shard_rows(read_rows(sources_path), shard_index, num_shards)
    policy_id = sha256_path(policy_dir)[:16]
    model, tokenizer = load_policy(policy_dir, trust_remote_code=trust_remote_code)
    # The model on the step's device (CPU threads only on the CPU); CTranslate2 runs there too.
    device = place(model, cfg.device, cfg.threads, "sample.device")
    if cfg.backend == "ctranslate2":
        check_compute_type(cfg.compute_type, device, "sample.compute_type")
    generate = generate_with(cfg.backend, cfg.compute_type)
    meter, sampled = Meter(device).start(), 0
    chunk_dir = os.path.join(out_dir, "chunks")
    os.makedirs(chunk_dir, exist_ok=True)
    key = fingerprint([policy_id, sha256_path(sources_path), cfg.num_samples, cfg.temperature, cfg.top_k,
                       cfg.max_length_ratio, cfg.seed, cfg.include_references, grow_step, shard_index, num_shards,
                       getattr(cfg, "backend", "hf")])  # another engine samples other candidates
    n_chunks = (len(rows) + CHUNK_SOURCES - 1) // CHUNK_SOURCES
    names = [f"chunk-{c:05d}-{key}.jsonl" for c in range(n_chunks)]
    resume = ResumeStore(chunk_dir, resume_uri, key, label=f"grow {grow_step} shard {shard_index}")
    resume.pull(names)  # a fresh disk: the chunks an earlier attempt of this run finished
    reused = 0
    for c in range(n_chunks):
        path = resume.path(names[c])
        if os.path.exists(path):
            reused += 1
            continue
        part = rows[c * CHUNK_SOURCES:(c + 1) * CHUNK_SOURCES]
        outs = generate(model, tokenizer, [r["source"] for r in part], mode="sample", num_return=cfg.num_samples,
                        temperature=cfg.temperature, top_k=cfg.top_k, batch_sentences=cfg.batch_sentences,
                        max_length_ratio=cfg.max_length_ratio,
                        seed=cfg.seed * 1009 + grow_step * 101 + shard_index + c * 7919)
        sampled += len(part) * cfg.num_samples
        write_jsonl(path, _grown_rows(part, outs, policy_id, grow_step, cfg.include_references))
        # Uploaded before the next chunk starts: a chunk is minutes of sampling and a few kB to send.
        resume.push(names[c])
        done = min(len(rows), (c + 1) * CHUNK_SOURCES)
        elapsed = time.time() - t0
        log.info("grow %d shard %d: %d/%d sources, %.0f candidates/s", grow_step, shard_index, done, len(rows),
                 (done - reused * CHUNK_SOURCES) * cfg.num_samples / max(1e-9, elapsed))
    meter.stop()
    chunks = [resume.path(n) for n in names]
    n = write_jsonl(os.path.join(out_dir, "data.jsonl"), (r for p in chunks for r in read_jsonl(p)))
    # Only finished output stays: chunks (and any temporaries of a killed write) were for resuming.
    shutil.rmtree(chunk_dir)
    wall = time.time() - t0
    stats = {"rows": n, "sources": len(rows), "samples_per_source": cfg.num_samples, "policy_id": policy_id,
             "grow": grow_step, "shard": shard_index, "num_shards": num_shards, "wall_s": wall,
             "candidates_per_s": len(rows) * cfg.num_samples / max(1e-9, wall), "reused_chunks": reused,
             "seed": cfg.seed, "temperature": cfg.temperature, "top_k": cfg.top_k,
             # Peak memory and the sampling rate of this attempt's own chunks (a resumed run reuses some).
             **meter.record(sampling_candidates_per_s=sampled / max(1e-9, meter.wall_s))}
    write_json(os.path.join(out_dir, "stats.json"), stats)
    resume.clear()  # the output is complete: a retry would redo nothing
    return stats


def _grown_rows(part, outs, policy_id, grow_step, include_references):
    for r, cands in zip(part, outs):
        # Source-only text (data.sources) has no reference: null, so no step mistakes "" for one.
        reference = r["target"] or None
        for k, cand in enumerate(cands):
            yield {"id": f"{r['id']}#g{grow_step}s{k}", "source_id": r["id"], "source": r["source"],
                   "candidate": cand, "reference": reference, "origin": "sample",
                   "policy_id": policy_id, "grow": grow_step}
        if include_references and reference is not None:
            yield {"id": f"{r['id']}#ref", "source_id": r["id"], "source": r["source"],
                   "candidate": r["target"], "reference": r["target"], "origin": "reference",
                   "policy_id": "human", "grow": grow_step}


def merge(shard_dirs: list[str], out_dir: str) -> dict:
    """Concatenate sampled shards (in shard order) into one grown set."""
    paths = [os.path.join(d, "data.jsonl") for d in shard_dirs]
    n = write_jsonl(os.path.join(out_dir, "data.jsonl"), (r for p in paths for r in read_jsonl(p)))
    shard_stats = [_read_stats(d) for d in shard_dirs]
    stats = {"rows": n, "shards": len(shard_dirs), "sources": sum(s.get("sources", 0) for s in shard_stats),
             "wall_s": max((s.get("wall_s", 0.0) for s in shard_stats), default=0.0),
             "policy_id": shard_stats[0].get("policy_id") if shard_stats else None}
    write_json(os.path.join(out_dir, "stats.json"), stats)
    return stats


def _read_stats(d: str) -> dict:
    from rest.services.files import read_json

    p = os.path.join(d, "stats.json")
    return read_json(p) if os.path.exists(p) else {}
