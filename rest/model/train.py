"""The one NLL training loop behind bootstrap (BC), Improve fine-tuning and the control.

Batches are length-bucketed by tokens; the best state by validation reward is kept; a
resumable checkpoint is written atomically every few steps, so a killed step re-run with
the same inputs continues where it stopped and ends with the same number of steps. With
the run's object store (``resume_uri``), each checkpoint is also uploaded, so a retry on a
fresh disk (a rescheduled pod) continues too (:mod:`rest.services.resume`).
"""
from __future__ import annotations

import copy
import logging
import os
import random
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from rest.services.resume import ResumeStore
from rest.model.policy import lr_at, token_batches, token_lengths
from rest.model.runtime import TrainRuntime

log = logging.getLogger(__name__)


@dataclass
class TrainSpec:
    """What one training call does; the fingerprint of this decides whether a checkpoint resumes."""

    learning_rate: float
    warmup_steps: int
    batch_tokens: int
    max_epochs: int = 1
    max_steps: int = 0            # 0 = run max_epochs; >0 = stop after exactly this many steps
    eval_every: int = 0           # 0 = once per epoch
    patience: int = 0             # 0 = no early stopping
    max_minutes: float = 0.0      # 0 = no time budget
    checkpoint_every: int = 50
    seed: int = 13
    label: str = "train"
    valid_backend: str = "hf"     # generation engine of the validation checks (hf or ctranslate2)
    valid_max_length_ratio: float = 2.0  # validation outputs stop at this many times the source's tokens (+10)


@dataclass
class TrainResult:
    steps: int
    epochs: int
    best_valid_reward: float
    best_step: int
    best_valid_true: float | None = None  # the true metric at the best step, when one was given
    history: list[dict] = field(default_factory=list)   # one row per validation check
    losses: list[dict] = field(default_factory=list)    # loss curve, one row per log interval
    tokens_per_s: float = 0.0
    stopped: str = ""
    skipped_overlong: int = 0  # training pairs left out: source or target over the model's token limit
    step_losses: list[float] = field(default_factory=list)  # the global batch's loss at every step


def validation_scores(model, tokenizer, rows: Sequence[dict], reward_fn: Callable, true_fn: Callable | None = None,
                      batch_sentences: int = 64, backend: str = "hf", max_length_ratio: float = 2.0) -> dict:
    """Mean training reward (and true metric, when given) of greedy translations of the validation rows."""
    from rest.model.backends import generate_with

    sources, refs = [r["source"] for r in rows], [r["target"] for r in rows]
    # CTranslate2 converts the current weights (a fraction of a second for a small policy),
    # then decodes greedily several times faster than torch on CPU.
    hyps = [h[0] for h in generate_with(backend)(model, tokenizer, sources, mode="greedy",
                                                 batch_sentences=batch_sentences, max_length_ratio=max_length_ratio)]
    scores = reward_fn(sources, hyps, refs)
    out = {"valid_reward": float(sum(scores) / max(1, len(scores)))}
    if true_fn is not None:
        true = true_fn(sources, hyps, refs)
        out["valid_true"] = float(sum(true) / max(1, len(true)))
    return out


def _encode(tokenizer, rows):
    # The family's way (rest.model.families): sources with their prefix and language code, targets with
    # text_target (Marian's target SentencePiece model; the target language code first).
    from rest.model.families import encode_sources, encode_targets

    src = encode_sources(tokenizer, [r["source"] for r in rows], add_special_tokens=True, verbose=False)["input_ids"]
    tgt = encode_targets(tokenizer, [r["target"] for r in rows], add_special_tokens=True, verbose=False)["input_ids"]
    return src, tgt


def drop_overlong(rows: Sequence[dict], src_ids, tgt_ids, limit: int | None, label: str) -> list[int]:
    """Indices of the pairs whose source and target both fit ``limit`` tokens; logs the ones left out.

    A pair is left out, not truncated: a cut source with its whole target (or a whole source
    with a cut target) would teach the policy to add or drop content.
    """
    if limit is None:
        return list(range(len(rows)))
    keep, over = [], []
    for k, (s, t) in enumerate(zip(src_ids, tgt_ids)):
        (keep if len(s) <= limit and len(t) <= limit else over).append(k)
    if over:
        shown = ", ".join(f"{rows[k].get('id', k)} ({len(src_ids[k])}/{len(tgt_ids[k])} tokens)" for k in over[:5])
        log.warning("%s: skipped %d of %d training pairs over the model's maximum of %d tokens "
                    "(source/target): %s%s", label, len(over), len(rows), limit, shown,
                    ", ..." if len(over) > 5 else "")
    if not keep:
        raise ValueError(f"{label}: all {len(rows)} training pairs are over the model's maximum of {limit} "
                         "tokens; split the sentences (see `python -m rest validate`)")
    return keep


def _collate(src_ids, tgt_ids, weights, batch, pad_id, start_id):
    s_max = max(len(src_ids[i]) for i in batch)
    t_max = max(len(tgt_ids[i]) for i in batch)
    input_ids = torch.full((len(batch), s_max), pad_id, dtype=torch.long)
    attn = torch.zeros((len(batch), s_max), dtype=torch.long)
    labels = torch.full((len(batch), t_max), -100, dtype=torch.long)
    dec_in = torch.full((len(batch), t_max), pad_id, dtype=torch.long)
    for row, i in enumerate(batch):
        s, t = src_ids[i], tgt_ids[i]
        input_ids[row, :len(s)] = torch.tensor(s)
        attn[row, :len(s)] = 1
        labels[row, :len(t)] = torch.tensor(t)
        # Teacher forcing: the decoder reads the start token then the target shifted right.
        dec_in[row, 0] = start_id
        dec_in[row, 1:len(t)] = torch.tensor(t[:-1])
    w = torch.tensor([weights[i] for i in batch], dtype=torch.float) if weights is not None else None
    return input_ids, attn, dec_in, labels, w


def _loss(model, input_ids, attn, dec_in, labels, w):
    # No decoder input: a causal policy (its labels are already shifted by the collate).
    extra = {} if dec_in is None else {"decoder_input_ids": dec_in}
    logits = model(input_ids=input_ids, attention_mask=attn, **extra).logits
    tok_loss = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=-100, reduction="none"
    ).view(labels.shape)
    mask = (labels != -100).float()
    if w is not None:
        mask = mask * w[:, None]
    return (tok_loss * mask).sum() / (labels != -100).sum().clamp(min=1), int((labels != -100).sum())


CHECKPOINT = "train_state.pt"


def checkpoint_store(checkpoint_dir: str | None, resume_uri: str | None, fingerprint: str,
                     label: str = "train") -> ResumeStore | None:
    """The resumable checkpoint's store: ``checkpoint_dir``, mirrored under ``resume_uri`` when given.

    None without a ``checkpoint_dir`` (no checkpoints at all). The remote copy is keyed by
    the training fingerprint, so only a run with exactly these inputs ever downloads it.
    """
    if not checkpoint_dir:
        return None
    return ResumeStore(checkpoint_dir, resume_uri, fingerprint or "nofingerprint", label=label)


def _read_checkpoint(path: str, fingerprint: str, label: str) -> dict | None:
    """The saved training state at ``path`` when it was made for ``fingerprint``, else None (logged)."""
    if not os.path.exists(path):
        return None
    try:
        saved = torch.load(path, weights_only=False, map_location="cpu")
    except Exception as e:  # unreadable (another torch version, a damaged disk): start afresh
        log.warning("%s: ignoring unreadable checkpoint %s (%s)", label, path, e)
        return None
    if saved.get("fingerprint") != fingerprint:
        log.warning("%s: ignoring checkpoint made for other inputs", label)
        return None
    return saved


def fetch_checkpoint(store: ResumeStore | None, fingerprint: str, label: str) -> dict | None:
    """The usable checkpoint: the local one, else the copy in the object store (downloaded first).

    A local file made for other inputs (or unreadable) is replaced by the remote copy.
    """
    if store is None:
        return None
    path = store.path(CHECKPOINT)
    saved = _read_checkpoint(path, fingerprint, label)
    if saved is None and store.mirrored and store.pull([CHECKPOINT], replace=True):
        saved = _read_checkpoint(path, fingerprint, label)
    return saved


def _stop_reason(spec: TrainSpec, state: dict, start: float) -> str:
    """Why training stops at ``state`` ("" = it goes on): patience, step budget, time budget."""
    if spec.patience and state["bad_checks"] >= spec.patience:
        return f"early stop: no better validation reward in {spec.patience} checks"
    if spec.max_steps and state["step"] >= spec.max_steps:
        return f"reached {spec.max_steps} steps"
    if spec.max_minutes and time.time() - start > spec.max_minutes * 60:
        return f"time budget of {spec.max_minutes} min used"
    return ""


def train_nll(model, tokenizer, rows: Sequence[dict], valid_rows: Sequence[dict], spec: TrainSpec,
              reward_fn: Callable, checkpoint_dir: str | None = None, weights: Sequence[float] | None = None,
              fingerprint: str = "", true_fn: Callable | None = None, runtime=None,
              resume_uri: str | None = None) -> TrainResult:
    """Train ``model`` in place with (optionally reward-weighted) NLL; restore the best state.

    Validation: mean reward of greedy outputs on ``valid_rows``, checked every
    ``eval_every`` steps (or per epoch) and once before training, so the result is never
    worse on validation than the starting policy. ``true_fn`` (a reference-based metric)
    is recorded beside it at every check, for the reward-hacking guard; it does not pick.

    ``runtime`` (:class:`rest.model.runtime.TrainRuntime`) says where it computes: the
    device, mixed precision and, data-parallel, this process's rank (default: this process
    alone, on the CPU, fp32). Only rank 0 validates and writes checkpoints.

    ``resume_uri`` (the run's resume root in the object store, or None): rank 0 uploads each
    checkpoint there (in the background, every ``checkpoint_every`` steps as locally) and,
    finding no usable local checkpoint, starts from the uploaded one. The caller removes
    the uploaded state once its outputs are written (``checkpoint_store(...).clear()``).
    """
    from rest.model.policy import decoder_start_id, max_tokens

    from rest.model import causal as causal_lm

    # A decoder-only policy: prompt ids and completion ids, loss on the completion only.
    causal = causal_lm.is_causal(model)
    pad_id, start_id = model.config.pad_token_id, (None if causal else decoder_start_id(model))
    src_ids, tgt_ids = causal_lm.encode_pairs(model, tokenizer, rows) if causal else _encode(tokenizer, rows)
    collate = causal_lm.collate if causal else _collate
    # Past the model's position table a batch cannot run at all (IndexError in the embeddings);
    # a causal policy reads prompt and completion as one sequence.
    keep = drop_overlong(rows, [s + t for s, t in zip(src_ids, tgt_ids)] if causal else src_ids, tgt_ids,
                         max_tokens(model, tokenizer), spec.label)
    skipped_overlong = len(rows) - len(keep)
    if skipped_overlong:
        src_ids, tgt_ids = [src_ids[k] for k in keep], [tgt_ids[k] for k in keep]
        weights = [weights[k] for k in keep] if weights is not None else None
    lengths = [len(s) + len(t) for s, t in zip(src_ids, tgt_ids)]
    if not causal:  # Marian: the decoder's start row stays zero, as Marian and CTranslate2 define the start
        from rest.model.families import hold_zero_start

        hold_zero_start(model)
    rt = runtime if runtime is not None else TrainRuntime()
    net = rt.prepare(model)  # the model on its device (the DDP wrapper when data-parallel)
    opt = torch.optim.AdamW(model.parameters(), lr=spec.learning_rate, betas=(0.9, 0.98), weight_decay=0.0)
    # Only rank 0 talks to the object store; the other ranks read the local file, which
    # train_parallel fetched before they started.
    store = checkpoint_store(checkpoint_dir, resume_uri if rt.is_main else None, fingerprint, spec.label)

    state = {"step": 0, "epoch": 0, "batch_in_epoch": 0, "best": None, "best_reward": float("-inf"),
             "best_step": 0, "best_true": None, "bad_checks": 0, "history": [], "losses": [], "tokens": 0, "elapsed": 0.0}
    resume_rng = None
    saved = fetch_checkpoint(store, fingerprint, spec.label)
    if saved is not None:
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        state = saved["state"]
        resume_rng = saved.get("rng_state")
        rt.load_extra_state(saved)
        log.info("%s: resuming from checkpoint at step %d", spec.label, state["step"])
    del saved  # the loaded copy of the optimizer state is not needed any more

    def save_checkpoint():
        if store is None or not rt.is_main:
            return
        # The upload runs beside the next steps; the next save waits for it.
        with store.saving(CHECKPOINT, background=True) as tmp:
            # The RNG state too: dropout after a resume draws the masks an unbroken run would.
            torch.save({"fingerprint": fingerprint, "model": model.state_dict(),
                        "optimizer": opt.state_dict(), "state": state, "rng_state": torch.get_rng_state(),
                        **rt.extra_state()}, tmp)

    def check(step):
        if not rt.is_main:
            return  # rank 0 validates; the others follow its decisions
        scores = validation_scores(model, tokenizer, valid_rows, reward_fn, true_fn, backend=spec.valid_backend,
                                   max_length_ratio=spec.valid_max_length_ratio)
        reward = scores["valid_reward"]
        improved = reward > state["best_reward"]
        if improved:
            state.update(best=copy.deepcopy(model.state_dict()), best_reward=reward, best_step=step, bad_checks=0,
                         best_true=scores.get("valid_true"))
        else:
            state["bad_checks"] += 1
        state["history"].append({"step": step, **scores, "epoch": state["epoch"]})
        true = f" (true metric {scores['valid_true']:.4f})" if "valid_true" in scores else ""
        log.info("%s: step %d valid reward %.4f%s%s", spec.label, step, reward, true, " (best)" if improved else "")
        model.train()

    if state["step"] == 0 and not state["history"]:
        check(0)
    model.train()
    start = time.time() - state["elapsed"]
    last_log, log_tokens, log_loss, log_n = time.time(), 0, 0.0, 0
    stopped = ""
    if state["step"]:
        # Resumed from a checkpoint written as training stopped (the step was lost before its
        # output was saved): stop again before any further step, as the unbroken run did.
        stopped = _stop_reason(spec, state, start)
        if rt.distributed and rt.agree(bool(stopped)) and not stopped:
            stopped = "stopped by rank 0"
    while not stopped:
        epoch = state["epoch"]
        if spec.max_steps == 0 and epoch >= spec.max_epochs:
            break
        batches = token_batches(lengths, spec.batch_tokens, random.Random(spec.seed * 7919 + epoch))
        if resume_rng is not None and state["batch_in_epoch"] > 0:
            torch.set_rng_state(resume_rng)  # mid-epoch resume: continue the saved stream
        else:
            torch.manual_seed(spec.seed * 7919 + epoch)
        resume_rng = None
        for b in range(state["batch_in_epoch"], len(batches)):
            part, real = rt.shard(batches[b])  # the whole batch, unless data-parallel
            inputs = rt.to_device(collate(src_ids, tgt_ids, weights, part, pad_id, start_id))
            for g in opt.param_groups:
                g["lr"] = lr_at(state["step"] + 1, spec.learning_rate, spec.warmup_steps)
            with rt.autocast():
                loss, ntok = _loss(net, *inputs)
            loss = rt.global_loss(loss, ntok, sum(len(tgt_ids[i]) for i in batches[b]), real)
            opt.zero_grad(set_to_none=True)
            rt.backward_step(loss, model, opt)
            step_loss = rt.loss_value(loss)
            state.setdefault("step_losses", []).append(step_loss)
            state["step"] += 1
            state["batch_in_epoch"] = b + 1
            state["tokens"] += sum(lengths[i] for i in batches[b])
            log_tokens += sum(lengths[i] for i in batches[b])
            log_loss, log_n = log_loss + step_loss, log_n + 1
            step = state["step"]
            if time.time() - last_log > 15:
                rate = log_tokens / (time.time() - last_log)
                state["losses"].append({"step": step, "loss": log_loss / log_n})
                log.info("%s: step %d epoch %d loss %.3f %.0f tok/s", spec.label, step, epoch, log_loss / log_n, rate)
                last_log, log_tokens, log_loss, log_n = time.time(), 0, 0.0, 0
            if spec.eval_every and step % spec.eval_every == 0:
                check(step)
            stopped = _stop_reason(spec, state, start)
            if rt.distributed and rt.agree(bool(stopped)) and not stopped:
                stopped = "stopped by rank 0"
            state["elapsed"] = time.time() - start
            if stopped or step % spec.checkpoint_every == 0:
                save_checkpoint()
            if stopped:
                break
        else:
            state["epoch"] += 1
            state["batch_in_epoch"] = 0
            if not spec.eval_every:
                check(state["step"])
            if spec.patience and state["bad_checks"] >= spec.patience:
                stopped = f"early stop: no better validation reward in {spec.patience} checks"
            if rt.distributed and rt.agree(bool(stopped)) and not stopped:
                stopped = "stopped by rank 0"
            save_checkpoint()
    if log_n:
        state["losses"].append({"step": state["step"], "loss": log_loss / log_n})
    if spec.eval_every and (not state["history"] or state["history"][-1]["step"] != state["step"]):
        check(state["step"])
    elapsed = time.time() - start
    if store is not None:
        store.wait()  # the last checkpoint is in the object store before the caller goes on
    if state["best"] is not None:
        model.load_state_dict(state["best"])
    model.eval()
    result = TrainResult(steps=state["step"], epochs=state["epoch"],
                         best_valid_reward=state["best_reward"], best_step=state["best_step"],
                         best_valid_true=state.get("best_true"), history=state["history"], losses=state["losses"],
                         tokens_per_s=state["tokens"] / max(1e-9, elapsed), stopped=stopped or "epochs done",
                         skipped_overlong=skipped_overlong, step_losses=list(state.get("step_losses", [])))
    log.info("%s: %s after %d steps; best valid reward %.4f at step %d", spec.label, result.stopped,
             result.steps, result.best_valid_reward, result.best_step)
    return result


def token_count(tokenizer, rows: Sequence[dict]) -> int:
    return sum(token_lengths(tokenizer, [r["source"] for r in rows])) + sum(
        token_lengths(tokenizer, [r["target"] for r in rows], target=True))
