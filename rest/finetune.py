"""Improve: behaviour cloning (NLL) on the filtered set, continuing from the previous policy.

Each Improve step lowers the learning rate (``finetune.lr_decay``) and keeps the
checkpoint with the best validation reward. The references-only control runs through the
same code on the human references, for the same number of optimizer steps.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict

from .config import FinetuneConfig
from .data import read_rows
from .io import read_jsonl, sha256_file, sha256_path
from .policy import fingerprint, load_policy, policy_info, save_policy, set_threads
from .rewards import get_reward
from .train import TrainSpec, train_nll

log = logging.getLogger(__name__)


def _train_and_save(policy_dir, rows, data_digest, valid_path, spec, cfg, out_dir, reward, checkpoint_dir, weights,
                    lineage, trust_remote_code):
    set_threads(cfg.threads)
    t0 = time.time()
    model, tokenizer = load_policy(policy_dir, trust_remote_code=trust_remote_code)
    valid_rows = read_rows(valid_path)
    parent = policy_info(policy_dir)
    # A resumable checkpoint is only reused for exactly the same policy, data and settings.
    key = fingerprint([sha256_path(policy_dir), data_digest, asdict(spec), weights is not None, lineage])
    result = train_nll(model, tokenizer, rows, valid_rows, spec, get_reward(reward), checkpoint_dir=checkpoint_dir,
                       weights=weights, fingerprint=key)
    steps_before = int(parent.get("optimizer_steps_since_bc", 0))
    info = {**lineage, "kind": lineage.get("kind", "rest"), "parent_sha256": sha256_path(policy_dir),
            "optimizer_steps": result.steps, "optimizer_steps_since_bc": steps_before + result.steps,
            "best_valid_reward": result.best_valid_reward, "best_step": result.best_step,
            "start_valid_reward": result.history[0]["valid_reward"] if result.history else None,
            "train_rows": len(rows), "tokens_per_s": result.tokens_per_s, "wall_s": time.time() - t0,
            "history": result.history, "losses": result.losses, "finetune_config": asdict(cfg)}
    save_policy(model, tokenizer, out_dir, info)
    return info


def improve(policy_dir: str, filtered_dir: str, valid_path: str, cfg: FinetuneConfig, improve_step: int,
            out_dir: str, reward: str = "chrf", checkpoint_dir: str | None = None, lineage: dict | None = None,
            trust_remote_code: bool = False) -> dict:
    """Fine-tune on the filtered candidates of Improve step ``improve_step`` (1-based)."""
    data = os.path.join(filtered_dir, "data.jsonl")
    rows = [{"source": r["source"], "target": r["candidate"], "reward": r["reward"]} for r in read_jsonl(data)]
    if not rows:
        raise ValueError(f"{filtered_dir}: the filtered set is empty; nothing to fine-tune on")
    weights = [r["reward"] for r in rows] if cfg.loss == "reward_weighted" else None
    spec = TrainSpec(learning_rate=cfg.learning_rate_for(improve_step), warmup_steps=cfg.warmup_steps,
                     batch_tokens=cfg.batch_tokens, max_epochs=cfg.epochs, eval_every=cfg.eval_every,
                     checkpoint_every=cfg.checkpoint_every, seed=cfg.seed + improve_step,
                     label=f"improve {improve_step}")
    lineage = {"kind": "rest", "improve_step": improve_step, **(lineage or {})}
    return _train_and_save(policy_dir, rows, sha256_file(data), valid_path, spec, cfg, out_dir, reward, checkpoint_dir, weights,
                           lineage, trust_remote_code)


def control(bc_dir: str, references_path: str, valid_path: str, cfg: FinetuneConfig, total_steps: int,
            out_dir: str, reward: str = "chrf", checkpoint_dir: str | None = None,
            trust_remote_code: bool = False, rest_checks: int = 0) -> dict:
    """The references-only control: BC continued on the human references for ``total_steps`` steps.

    Same optimizer, batch size, first-step learning rate and best-checkpoint rule as the
    Improve steps: a ReST gain that this control also gets is just more training. The
    control gets as many validation checks as ReST had (``rest_checks``, spread evenly):
    picking the best of many noisy checks would favour it.
    """
    rows = read_rows(references_path)
    eval_every = cfg.eval_every or (max(1, total_steps // rest_checks) if rest_checks else
                                    _epoch_steps_hint(rows, cfg))
    spec = TrainSpec(learning_rate=cfg.learning_rate, warmup_steps=cfg.warmup_steps, batch_tokens=cfg.batch_tokens,
                     max_steps=max(1, total_steps), eval_every=eval_every,
                     checkpoint_every=cfg.checkpoint_every, seed=cfg.seed, label="control")
    return _train_and_save(bc_dir, rows, sha256_file(references_path), valid_path, spec, cfg, out_dir, reward, checkpoint_dir, None,
                           {"kind": "control", "target_steps": total_steps}, trust_remote_code)


def _epoch_steps_hint(rows, cfg) -> int:
    """Validation interval for the control: about once per pass over its (small) data."""
    words = sum(len(r["source"].split()) + len(r["target"].split()) for r in rows)
    # ~1.6 tokens per word with a 4k BPE; batches hold batch_tokens padded tokens.
    return max(10, int(words * 1.6 / cfg.batch_tokens))
