"""Bootstrap: the starting BC policy — a given model directory, or one trained from scratch.

No pretrained translation model can be downloaded here, so the default path trains a
joint BPE tokenizer and a tiny pre-LN mBART-style model with NLL on the training split,
until validation reward stops improving or the time budget (``bootstrap.max_minutes``)
runs out, whichever comes first. The shipped policy stopped on its budget, with its best
checkpoint at its last step: it was still improving, slowly.
"""
from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import asdict

from .config import BootstrapConfig
from .data import read_rows
from .io import copy_tree, sha256_path
from .policy import (build_model, check_policy_dir, fingerprint, policy_info, save_policy,
                     set_threads, train_tokenizer)
from .rewards import get_reward
from .train import TrainSpec, train_nll

log = logging.getLogger(__name__)


def resolve_policy(uri: str, workdir: str | None = None, tracking_uri: str | None = None) -> str:
    """A local directory for a policy given as a path, an s3:// prefix or ``models:/NAME@alias``.

    ``models:/`` URIs (e.g. ``models:/rest-de-en@champion``, what a scheduled run starts
    from) are downloaded from the MLflow registry at ``tracking_uri``.
    """
    workdir = workdir or tempfile.mkdtemp(prefix="rest-policy-")
    if uri.startswith("s3://"):
        from . import storage

        return storage.fetch_dir_to_local(uri, workdir)
    if uri.startswith("models:/"):
        import mlflow.artifacts

        if not tracking_uri:
            raise ValueError(f"{uri}: a registry model needs MLFLOW_TRACKING_URI (the MLflow server holding it)")
        local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=workdir, tracking_uri=tracking_uri)
        # The pyfunc model keeps the save_pretrained directory among its artifacts.
        for root, _, files in os.walk(local):
            if "config.json" in files and any(f.endswith(".safetensors") for f in files):
                return root
        raise ValueError(f"{uri}: the registered model holds no seq2seq policy directory")
    return uri


# Settings that only decide when training stops: a run resumed with a larger or smaller
# budget continues the same trajectory, so they stay out of the checkpoint's fingerprint.
_STOPPING_FIELDS = ("max_minutes", "max_epochs", "patience", "eval_every", "policy", "trust_remote_code")


def training_fingerprint(cfg: BootstrapConfig, train_path: str, valid_path: str) -> str:
    """What a resumable bootstrap checkpoint must match: model, optimisation and data."""
    fields = {k: v for k, v in asdict(cfg).items() if k not in _STOPPING_FIELDS}
    return fingerprint([fields, sha256_path(train_path), sha256_path(valid_path)])


def bootstrap(cfg: BootstrapConfig, train_path: str, valid_path: str, out_dir: str,
              reward: str = "chrf", checkpoint_dir: str | None = None, threads: int = 0,
              tracking_uri: str | None = None) -> dict:
    """Write the starting policy to ``out_dir``; returns its info (lineage, training record)."""
    if cfg.policy:
        src = resolve_policy(cfg.policy, tracking_uri=tracking_uri)
        check_policy_dir(src)
        copy_tree(src, out_dir)
        info = policy_info(out_dir)
        log.info("bootstrap: using given policy %s", cfg.policy)
        return {**info, "source": cfg.policy, "sha256": sha256_path(out_dir), "trained": False}
    set_threads(threads)
    t0 = time.time()
    train_rows, valid_rows = read_rows(train_path), read_rows(valid_path)
    log.info("bootstrap: training a %d-token BPE tokenizer on %d pairs", cfg.vocab_size, len(train_rows))
    tokenizer = train_tokenizer((t for r in train_rows for t in (r["source"], r["target"])), cfg.vocab_size)
    model = build_model(tokenizer, cfg.d_model, cfg.ffn_dim, cfg.layers, cfg.heads, cfg.dropout, cfg.seed)
    n_params = sum(p.numel() for p in model.parameters())
    log.info("bootstrap: model with %.2fM parameters", n_params / 1e6)
    spec = TrainSpec(learning_rate=cfg.learning_rate, warmup_steps=cfg.warmup_steps, batch_tokens=cfg.batch_tokens,
                     max_epochs=cfg.max_epochs, eval_every=cfg.eval_every, patience=cfg.patience,
                     max_minutes=cfg.max_minutes, seed=cfg.seed, label="bootstrap")
    result = train_nll(model, tokenizer, train_rows, valid_rows, spec, get_reward(reward),
                       checkpoint_dir=checkpoint_dir,
                       fingerprint=training_fingerprint(cfg, train_path, valid_path))
    info = {"kind": "bc", "optimizer_steps_since_bc": 0, "parameters": n_params,
            "bootstrap_config": asdict(cfg), "train_sha256": sha256_path(train_path),
            "bc_training": {"steps": result.steps, "epochs": result.epochs, "stopped": result.stopped,
                            "best_valid_reward": result.best_valid_reward, "best_step": result.best_step,
                            "tokens_per_s": result.tokens_per_s, "wall_s": time.time() - t0,
                            "skipped_overlong": result.skipped_overlong,
                            "history": result.history}}
    save_policy(model, tokenizer, out_dir, info)
    return {**info, "sha256": sha256_path(out_dir), "trained": True}

