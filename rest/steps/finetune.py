"""Improve: behaviour cloning (NLL) on the filtered set, continuing from the previous policy.

Each Improve step lowers the learning rate (``finetune.lr_decay``) and keeps the
checkpoint with the best validation reward. The references-only control runs through the
same code on the human references, for the same number of optimizer steps.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, replace

from rest.config import FinetuneConfig
from rest.steps.data import read_rows
from rest.services.files import read_jsonl, sha256_file, sha256_path
from rest.model.device import Meter, cpu_threads, is_cuda
from rest.model.distributed import plan, train_parallel
from rest.model.policy import fingerprint, load_policy, policy_info, save_policy
from rest.rewards.spec import RewardSpec, is_reward_hacking
from rest.model.train import TrainSpec, checkpoint_store

log = logging.getLogger(__name__)


class RewardHackingError(ValueError):
    """An Improve step raised the training reward while the true metric fell (loop.on_reward_hacking=stop)."""


def _train_and_save(policy_dir, rows, data_digest, valid_path, spec, cfg, out_dir, reward, checkpoint_dir, weights,
                    lineage, trust_remote_code, init_dir: str | None = None, resume_uri: str | None = None):
    """Train from ``init_dir`` (default: ``policy_dir``, the previous policy) and save with lineage.

    ``policy_dir`` is the policy this step follows (its step count carries on, and a rollback
    returns to it); ``init_dir`` is where the weights start (the BC policy under
    ``finetune.from_base``). ``resume_uri``: the run's resume root in the object store;
    checkpoints are mirrored there, and removed once the policy is saved.
    """
    from rest.model import lora as lora_lib

    rspec = reward if isinstance(reward, RewardSpec) else RewardSpec(reward=reward)
    start_dir = init_dir or policy_dir
    lora = lora_lib.settings(cfg)
    # Device, mixed precision and data-parallel processes (one per visible GPU under auto).
    device, amp, processes = plan(cfg.device, cfg.precision, cfg.processes)
    cpu_threads(device, cfg.threads)
    t0 = time.time()
    model, tokenizer = load_policy(start_dir, trust_remote_code=trust_remote_code)
    if lora:
        if processes > 1:
            raise ValueError(f"finetune.lora_r={cfg.lora_r} with {processes} data-parallel processes: LoRA trains in "
                             "one process; set finetune.processes=1")
        model = lora_lib.wrap(model, lora)
    valid_rows = read_rows(valid_path)
    parent = policy_info(policy_dir)
    # A resumable checkpoint is only reused for exactly the same policy, data and settings.
    key = fingerprint([sha256_path(policy_dir), data_digest, asdict(spec), weights is not None, lineage]
                      + ([sha256_path(start_dir)] if init_dir else []) + ([lora] if lora else []))
    reward_fn, true_fn = rspec.functions()
    with Meter(device) as meter:
        result = train_parallel(model, tokenizer, rows, valid_rows, spec, reward_fn, device=device, amp=amp,
                                processes=processes, policy_dir=start_dir, trust_remote_code=trust_remote_code,
                                threads=cfg.threads, checkpoint_dir=checkpoint_dir, weights=weights, fingerprint=key,
                                true_fn=true_fn, resume_uri=resume_uri)
    if is_cuda(device):
        model.to("cpu")  # saved from the CPU, as on a CPU run
    if lora:
        model = lora_lib.merge(model)  # sampling, evaluation and the registry see a plain policy
    steps_before = int(parent.get("optimizer_steps_since_bc", 0))
    start = result.history[0] if result.history else {}
    info = {**lineage, "kind": lineage.get("kind", "rest"), "parent_sha256": sha256_path(policy_dir),
            # Where the weights started: the previous policy, or the BC policy (finetune.from_base).
            "initialized_from": "base" if init_dir else "previous", "init_sha256": sha256_path(start_dir),
            "lora": {**lora, "merged": True} if lora else None,
            "optimizer_steps": result.steps, "optimizer_steps_since_bc": steps_before + result.steps,
            "best_valid_reward": result.best_valid_reward, "best_step": result.best_step,
            "start_valid_reward": start.get("valid_reward"),
            "true_metric": rspec.true_metric if true_fn is not None else None,
            "start_valid_true": start.get("valid_true"), "best_valid_true": result.best_valid_true,
            "train_rows": len(rows), "tokens_per_s": result.tokens_per_s, "wall_s": time.time() - t0,
            "history": result.history, "losses": result.losses, "finetune_config": asdict(cfg),
            "processes": processes, "precision": amp.name, **meter.record(tokens_per_s=result.tokens_per_s)}
    info["reward_hacking"] = is_reward_hacking(info.get("start_valid_reward"), info.get("best_valid_reward"),
                                               info.get("start_valid_true"), info.get("best_valid_true"),
                                               rspec.hacking_tolerance)
    if info["reward_hacking"]:
        what = (f"{lineage.get('kind', 'rest')} step: validation reward {info['start_valid_reward']:.4f} -> "
                f"{info['best_valid_reward']:.4f} while the true metric ({rspec.true_metric}) fell "
                f"{info['start_valid_true']:.4f} -> {info['best_valid_true']:.4f}: reward hacking")
        if rspec.on_reward_hacking == "stop":
            raise RewardHackingError(what + "; stopping (loop.on_reward_hacking=stop). The earlier steps' "
                                     "policies are intact; set loop.on_reward_hacking=rollback to keep going")
        log.warning("%s (loop.on_reward_hacking=%s)", what, rspec.on_reward_hacking)
        if rspec.on_reward_hacking == "rollback":
            # Keep the parent (better by the true metric); record what was thrown away.
            model, tokenizer = load_policy(policy_dir, trust_remote_code=trust_remote_code)
            info.update(rolled_back=True, discarded_steps=result.steps, optimizer_steps=0,
                        optimizer_steps_since_bc=steps_before, best_valid_reward=info["start_valid_reward"],
                        best_valid_true=info["start_valid_true"], best_step=0)
    save_policy(model, tokenizer, out_dir, info)
    # The policy is written: a retry now redoes nothing, so the uploaded checkpoint has served.
    # (The local one stays, as before: it lies beside the output and goes with the task.)
    store = checkpoint_store(checkpoint_dir, resume_uri, key, spec.label)
    if store is not None:
        store.clear()
    return info


def improve(policy_dir: str, filtered_dir: str, valid_path: str, cfg: FinetuneConfig, improve_step: int,
            out_dir: str, reward: "str | RewardSpec" = "chrf", checkpoint_dir: str | None = None, lineage: dict | None = None,
            trust_remote_code: bool = False, base_dir: str | None = None, train_path: str | None = None,
            resume_uri: str | None = None) -> dict:
    """Fine-tune on the filtered candidates of Improve step ``improve_step`` (1-based).

    ``reward`` is a reward name or a :class:`RewardSpec` (learned reward, true metric and
    the reward-hacking guard: warn, roll back to the input policy, or stop). ``base_dir``
    (``finetune.from_base``): start from these weights (the BC policy) instead of
    ``policy_dir``'s. ``train_path`` (``finetune.include_train``): also train on these
    pairs (the BC training data). ``resume_uri``: the run's resume root in the object store
    (``rest.services.storage.resume_uri``), so a retry on a fresh disk resumes from the last
    uploaded checkpoint.
    """
    if cfg.from_base and not base_dir:
        raise ValueError("finetune.from_base needs the base (BC) policy directory (base_dir)")
    data = os.path.join(filtered_dir, "data.jsonl")
    rows = [{"source": r["source"], "target": r["candidate"], "reward": r["reward"]} for r in read_jsonl(data)]
    if not rows:
        raise ValueError(f"{filtered_dir}: the filtered set is empty; nothing to fine-tune on")
    digest = sha256_file(data)
    if cfg.include_train:
        if not train_path:
            raise ValueError("finetune.include_train needs the training pairs (train_path)")
        train = [{"source": r["source"], "target": r["target"], "reward": 1.0} for r in read_rows(train_path)
                 if r["target"]]
        rows += train
        digest = fingerprint([digest, sha256_file(train_path)])
        log.info("improve %d: %d filtered rows + %d training pairs", improve_step, len(rows) - len(train), len(train))
    weights = [r["reward"] for r in rows] if cfg.loss == "reward_weighted" else None
    spec = TrainSpec(learning_rate=cfg.learning_rate_for(improve_step), warmup_steps=cfg.warmup_steps,
                     batch_tokens=cfg.batch_tokens, max_epochs=cfg.epochs, max_steps=cfg.max_steps,
                     eval_every=cfg.eval_every,
                     checkpoint_every=cfg.checkpoint_every, seed=cfg.seed + improve_step,
                     label=f"improve {improve_step}", valid_backend=cfg.valid_backend,
                     valid_max_length_ratio=cfg.valid_max_length_ratio)
    lineage = {"kind": "rest", "improve_step": improve_step, **(lineage or {})}
    return _train_and_save(policy_dir, rows, digest, valid_path, spec, cfg, out_dir, reward, checkpoint_dir, weights,
                           lineage, trust_remote_code, init_dir=base_dir if cfg.from_base else None,
                           resume_uri=resume_uri)


def control(bc_dir: str, references_path: str, valid_path: str, cfg: FinetuneConfig, total_steps: int,
            out_dir: str, reward: "str | RewardSpec" = "chrf", checkpoint_dir: str | None = None,
            trust_remote_code: bool = False, rest_checks: int = 0, guard: bool = False,
            resume_uri: str | None = None) -> dict:
    """The references-only control: BC continued on the human references for ``total_steps`` steps.

    Same optimizer, batch size, first-step learning rate and best-checkpoint rule as the
    Improve steps: a ReST gain that this control also gets is just more training. The
    control gets as many validation checks as ReST had (``rest_checks``, spread evenly):
    picking the best of many noisy checks would favour it.

    By default the control is measured, never stopped or rolled back. ``guard=True``
    applies ``reward``'s reward-hacking guard to it as to a ReST step (rolled back to
    ``bc_dir`` when its validation reward rose while the true metric fell): a comparison
    with a guarded ReST run then holds both arms to the same selection rule.
    ``resume_uri``: as for :func:`improve`.
    """
    # Source-only text in the Grow set has no reference to continue BC on.
    rows = [r for r in read_rows(references_path) if r["target"]]
    if isinstance(reward, RewardSpec) and not guard:
        reward = replace(reward, on_reward_hacking="warn")
    eval_every = cfg.eval_every or (max(1, total_steps // rest_checks) if rest_checks else
                                    _epoch_steps_hint(rows, cfg))
    spec = TrainSpec(learning_rate=cfg.learning_rate, warmup_steps=cfg.warmup_steps, batch_tokens=cfg.batch_tokens,
                     max_steps=max(1, total_steps), eval_every=eval_every,
                     checkpoint_every=cfg.checkpoint_every, seed=cfg.seed, label="control",
                     valid_backend=cfg.valid_backend, valid_max_length_ratio=cfg.valid_max_length_ratio)
    return _train_and_save(bc_dir, rows, sha256_file(references_path), valid_path, spec, cfg, out_dir, reward, checkpoint_dir, None,
                           {"kind": "control", "target_steps": total_steps, "guarded": guard}, trust_remote_code,
                           resume_uri=resume_uri)


def run_steps(start_info: dict, last_info: dict) -> int:
    """Optimizer steps this run's Improve steps took: the last policy's since-BC count minus the start's.

    ``optimizer_steps_since_bc`` accumulates over a policy's whole lineage, so a run that
    starts from an already fine-tuned policy (``models:/NAME@champion``) would otherwise
    hand its control the earlier runs' steps too. A rolled-back step adds nothing to the
    count, so it adds nothing here either.
    """
    start = int(start_info.get("optimizer_steps_since_bc", 0))
    last = int(last_info.get("optimizer_steps_since_bc", 0))
    if last < start:
        raise ValueError(f"the last policy records {last} optimizer steps since BC, fewer than the starting "
                         f"policy's {start}: it does not descend from the starting policy")
    return last - start


def _epoch_steps_hint(rows, cfg) -> int:
    """Validation interval for the control: about once per pass over its (small) data."""
    words = sum(len(r["source"].split()) + len(r["target"].split()) for r in rows)
    # ~1.6 tokens per word with a 4k BPE; batches hold batch_tokens padded tokens.
    return max(10, int(words * 1.6 / cfg.batch_tokens))
