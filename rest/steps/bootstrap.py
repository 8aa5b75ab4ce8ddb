"""Bootstrap: the starting BC policy — a given model directory, or one trained from scratch.

No pretrained translation model can be downloaded here, so the default path trains a
joint BPE tokenizer and a tiny pre-LN mBART-style model with NLL on the training split,
until validation reward stops improving or the time budget (``bootstrap.max_minutes``)
runs out, whichever comes first. The shipped policy stopped on its budget, with its best
checkpoint at its last step: it was still improving, slowly.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict

from rest.config import BootstrapConfig
from rest.steps.data import read_rows
from rest.services.files import copy_tree, sha256_path
from rest.model.device import Meter, amp_for, cpu_threads, is_cuda, resolve
from rest.model.distributed import TrainRuntime
from rest.model.causal import record_prompt
from rest.model.families import record as record_translation
from rest.model.policy import (resolve_policy, build_model, check_policy_dir, fingerprint, load_policy, policy_info,
                               save_policy, train_tokenizer)
from rest.rewards.metrics import get_reward
from rest.model.train import TrainSpec, checkpoint_store, train_nll

log = logging.getLogger(__name__)


# Settings that only decide when training stops: a run resumed with a larger or smaller
# budget continues the same trajectory, so they stay out of the checkpoint's fingerprint.
_STOPPING_FIELDS = ("max_minutes", "max_epochs", "patience", "eval_every", "policy", "trust_remote_code", "threads")


def training_fingerprint(cfg: BootstrapConfig, train_path: str, valid_path: str) -> str:
    """What a resumable bootstrap checkpoint must match: model, optimisation and data."""
    fields = {k: v for k, v in asdict(cfg).items() if k not in _STOPPING_FIELDS}
    return fingerprint([fields, sha256_path(train_path), sha256_path(valid_path)])


def bootstrap(cfg: BootstrapConfig, train_path: str, valid_path: str, out_dir: str,
              reward: str = "chrf", checkpoint_dir: str | None = None, threads: int = 0,
              tracking_uri: str | None = None, languages=None, resume_uri: str | None = None) -> dict:
    """Write the starting policy to ``out_dir``; returns its info (lineage, training record).

    ``languages``: the ``data`` config (or a dict of its language fields: source_lang, target_lang,
    their ``_code`` overrides, source_prefix and the column names). A given seq2seq policy gets
    its translation settings resolved from them once, here, and recorded in its directory
    (``rest.model.families``); every later step translates the way it says. ``resume_uri``:
    the run's resume root in the object store; training checkpoints are mirrored there
    (``rest.model.train.train_nll``) and removed once the policy is saved.
    """
    if cfg.policy:
        src = resolve_policy(cfg.policy, tracking_uri=tracking_uri)
        check_policy_dir(src)
        copy_tree(src, out_dir)
        # A causal policy reads its prompt from its lineage: record the configured one (auto keeps its own).
        record_prompt(out_dir, cfg.prompt, cfg.trust_remote_code)
        translation = record_translation(out_dir, languages, cfg.trust_remote_code)
        extra = {"translation": translation.to_dict()} if translation is not None else {}
        if cfg.converge:
            return {**converge(cfg, out_dir, train_path, valid_path, reward, checkpoint_dir, threads, resume_uri,
                               source_sha256=sha256_path(src)), **extra}
        info = policy_info(out_dir)
        log.info("bootstrap: using given policy %s", cfg.policy)
        return {**info, "source": cfg.policy, "sha256": sha256_path(out_dir), "trained": False, **extra}
    device = resolve(cfg.device, "bootstrap.device")
    cpu_threads(device, threads or cfg.threads)  # CPU threads only when training on the CPU
    t0 = time.time()
    train_rows, valid_rows = read_rows(train_path), read_rows(valid_path)
    if cfg.architecture == "causal":
        tokenizer, model = _causal_policy(cfg, train_rows)
    else:
        log.info("bootstrap: training a %d-token BPE tokenizer on %d pairs", cfg.vocab_size, len(train_rows))
        tokenizer = train_tokenizer((t for r in train_rows for t in (r["source"], r["target"])), cfg.vocab_size)
        model = build_model(tokenizer, cfg.d_model, cfg.ffn_dim, cfg.layers, cfg.heads, cfg.dropout, cfg.seed)
    n_params = sum(p.numel() for p in model.parameters())
    log.info("bootstrap: model with %.2fM parameters", n_params / 1e6)
    spec = TrainSpec(learning_rate=cfg.learning_rate, warmup_steps=cfg.warmup_steps, batch_tokens=cfg.batch_tokens,
                     max_epochs=cfg.max_epochs, eval_every=cfg.eval_every, patience=cfg.patience,
                     max_minutes=cfg.max_minutes, seed=cfg.seed, label="bootstrap",
                     valid_max_length_ratio=cfg.valid_max_length_ratio, valid_backend=cfg.valid_backend)
    # On a GPU: bf16 autocast where it has bf16 (else fp16, loss-scaled); fp32 on the CPU.
    runtime = TrainRuntime(device=device, amp=amp_for(device, "auto", "bootstrap.precision"))
    key = training_fingerprint(cfg, train_path, valid_path)
    with Meter(device) as meter:
        result = train_nll(model, tokenizer, train_rows, valid_rows, spec, get_reward(reward),
                           checkpoint_dir=checkpoint_dir, fingerprint=key, runtime=runtime,
                           resume_uri=resume_uri)
    if is_cuda(device):
        model.to("cpu")  # saved from the CPU, as on a CPU run
    info = {"kind": "bc", "optimizer_steps_since_bc": 0, "parameters": n_params,
            "bootstrap_config": asdict(cfg), "train_sha256": sha256_path(train_path),
            "bc_training": {"steps": result.steps, "epochs": result.epochs, "stopped": result.stopped,
                            "best_valid_reward": result.best_valid_reward, "best_step": result.best_step,
                            "tokens_per_s": result.tokens_per_s, "wall_s": time.time() - t0,
                            "skipped_overlong": result.skipped_overlong,
                            "history": result.history, "precision": runtime.amp.name,
                            **meter.record(tokens_per_s=result.tokens_per_s)}}
    save_policy(model, tokenizer, out_dir, info)
    store = checkpoint_store(checkpoint_dir, resume_uri, key, "bootstrap")
    if store is not None:
        store.clear()  # the policy is saved: the uploaded checkpoint has served
    return {**info, "sha256": sha256_path(out_dir), "trained": True}


def converge(cfg: BootstrapConfig, policy_dir: str, train_path: str, valid_path: str, reward: str = "chrf",
             checkpoint_dir: str | None = None, threads: int = 0, resume_uri: str | None = None,
             source_sha256: str = "") -> dict:
    """Continue the given policy in ``policy_dir`` on the training split until patience stops it; save it there.

    The result is this run's BC policy (``optimizer_steps_since_bc`` 0, the given policy's
    lineage kept under ``converged_from``): the control continues from it exactly as ReST
    does, so neither arm is credited with supervised training the given model still lacked
    on the user's data. Stops on ``patience`` checks without a better validation reward
    (every ``eval_every`` steps), ``max_epochs`` or ``max_minutes``; the best checkpoint is kept,
    so the policy is never worse on validation than the given one.
    """
    device = resolve(cfg.device, "bootstrap.device")
    cpu_threads(device, threads or cfg.threads)
    t0 = time.time()
    given = policy_info(policy_dir)
    model, tokenizer = load_policy(policy_dir, trust_remote_code=cfg.trust_remote_code)
    spec = TrainSpec(learning_rate=cfg.converge_learning_rate, warmup_steps=cfg.converge_warmup_steps,
                     batch_tokens=cfg.batch_tokens, max_epochs=cfg.max_epochs, eval_every=cfg.eval_every,
                     patience=cfg.patience, max_minutes=cfg.max_minutes, seed=cfg.seed, label="bootstrap (converge)",
                     valid_max_length_ratio=cfg.valid_max_length_ratio, valid_backend=cfg.valid_backend)
    runtime = TrainRuntime(device=device, amp=amp_for(device, "auto", "bootstrap.precision"))
    # The given weights are part of what a resumable checkpoint must match (policy is a stopping field above).
    key = fingerprint([training_fingerprint(cfg, train_path, valid_path), source_sha256])
    log.info("bootstrap: continuing the given policy %s on the training split until patience stops it "
             "(bootstrap.converge)", cfg.policy)
    with Meter(device) as meter:
        result = train_nll(model, tokenizer, read_rows(train_path), read_rows(valid_path), spec, get_reward(reward),
                           checkpoint_dir=checkpoint_dir, fingerprint=key, runtime=runtime, resume_uri=resume_uri)
    if is_cuda(device):
        model.to("cpu")
    start = result.history[0]["valid_reward"] if result.history else None
    info = {**{k: v for k, v in given.items() if k not in ("bc_training", "converged_from")},
            "kind": "bc", "optimizer_steps_since_bc": 0, "bootstrap_config": asdict(cfg),
            "train_sha256": sha256_path(train_path),
            "converged_from": {"source": cfg.policy, "sha256": source_sha256, "kind": given.get("kind"),
                               "optimizer_steps_since_bc": given.get("optimizer_steps_since_bc"),
                               "start_valid_reward": start},
            "bc_training": {"steps": result.steps, "epochs": result.epochs, "stopped": result.stopped,
                            "best_valid_reward": result.best_valid_reward, "best_step": result.best_step,
                            "start_valid_reward": start, "tokens_per_s": result.tokens_per_s,
                            "wall_s": time.time() - t0, "skipped_overlong": result.skipped_overlong,
                            "history": result.history, "precision": runtime.amp.name,
                            **meter.record(tokens_per_s=result.tokens_per_s)}}
    save_policy(model, tokenizer, policy_dir, info)
    store = checkpoint_store(checkpoint_dir, resume_uri, key, spec.label)
    if store is not None:
        store.clear()
    log.info("bootstrap: converged the given policy: valid reward %s -> %.4f (best at step %d of %d; %s)",
             f"{start:.4f}" if start is not None else "?", result.best_valid_reward, result.best_step, result.steps,
             result.stopped)
    return {**info, "source": cfg.policy, "sha256": sha256_path(policy_dir), "trained": True}


def _causal_policy(cfg: BootstrapConfig, train_rows: list[dict]):
    """(tokenizer, model) of a from-scratch decoder-only policy, the model carrying its prompt.

    The tokenizer learns from the prompts as the model will read them (template included),
    so the template's own words and characters are in its vocabulary.
    """
    from rest.model import causal

    template = causal.resolve_prompt(cfg.prompt if cfg.prompt != "chat" else "translation")
    texts = [template.text(None, r["source"]) for r in train_rows] + [r["target"] for r in train_rows]
    if cfg.tokenizer == "char":
        tokenizer = causal.char_tokenizer(texts)
        log.info("bootstrap: a character tokenizer of %d tokens", len(tokenizer))
    else:
        log.info("bootstrap: training a %d-token BPE tokenizer on %d pairs", cfg.vocab_size, len(train_rows))
        tokenizer = causal.bpe_tokenizer(texts, cfg.vocab_size)
    model = causal.build_model(tokenizer, cfg.d_model, cfg.ffn_dim, cfg.layers, cfg.heads, cfg.dropout, cfg.seed,
                               max_positions=cfg.max_positions)
    causal.set_prompt(model, template)
    return tokenizer, model
