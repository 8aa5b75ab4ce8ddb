"""The policy: any Hugging Face seq2seq model + tokenizer, and a tiny one built from scratch.

Loading is safe by default: weights load from safetensors only and a model directory's
own code never runs unless ``trust_remote_code`` is set.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import tempfile
from typing import Sequence

import torch

from rest.model import causal, families
# Shared with the causal policy, in rest.model.base; callers import them from here too.
from rest.model.base import (POLICY_INFO, SPECIAL_TOKENS, UNSET_MODEL_MAX_LENGTH, Progress, hf_search,  # noqa: F401
                             length_buckets, max_tokens, policy_info, report_truncation, train_tokenizer)
from rest.model.device import set_threads  # noqa: F401  (lives with the device code; callers import it here too)
from rest.services.files import atomic_path

log = logging.getLogger(__name__)


class PolicyError(ValueError):
    """A model directory cannot be used as a policy; the message says why."""


def check_policy_dir(path: str) -> None:
    """Fail early and clearly when ``path`` is not a usable model directory."""
    if not os.path.isdir(path):
        raise PolicyError(f"{path}: policy directory not found")
    files = set(os.listdir(path))
    if "config.json" not in files:
        raise PolicyError(f"{path}: no config.json; save the model with save_pretrained()")
    if not any(f.endswith(".safetensors") for f in files):
        hint = " (found PyTorch .bin weights: re-save with safe_serialization=True)" if any(
            f.endswith(".bin") for f in files) else ""
        raise PolicyError(f"{path}: no *.safetensors weights{hint}")
    if not ({"tokenizer.json", "tokenizer_config.json"} & files or any(f.endswith(".model") for f in files)):
        raise PolicyError(f"{path}: no tokenizer files; save the tokenizer into the same directory")
    for name in sorted(f for f in files if f.endswith(".safetensors")):
        check_safetensors(os.path.join(path, name))


def check_safetensors(path: str) -> None:
    """Parse a weights file's safetensors header (cheap: the tensors are not read); fail clearly.

    A truncated upload, an interrupted copy or a placeholder file passes a file-name check
    but not this one.
    """
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, framework="pt") as f:
            n = len(list(f.keys()))
    except (SafetensorError, OSError, ValueError) as e:
        raise PolicyError(f"{path}: not a readable safetensors file ({os.path.getsize(path)} bytes: {e}); "
                          "the file is truncated or not weights: copy or save the model again with "
                          "save_pretrained(safe_serialization=True)") from None
    if n == 0:
        raise PolicyError(f"{path}: a safetensors file with no tensors; save the model again with save_pretrained()")


def load_policy(path: str, trust_remote_code: bool = False, languages=None, warnings: list[str] | None = None):
    """Load (model, tokenizer) from a local directory (safetensors only).

    The tokenizer comes back carrying the policy's translation settings (family, language
    codes, source prefix: :mod:`rest.model.families`), from the directory's record or, for
    a directory without one, from ``languages`` (the ``data`` config) and the model's own config.
    """
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    check_policy_dir(path)
    if causal.is_causal_dir(path):  # decoder-only: AutoModelForCausalLM, with the prompt it was trained with
        return causal.load(path, trust_remote_code)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    # float32 weights whatever dtype the checkpoint was saved in (transformers 5 keeps the saved
    # one): they are the master weights of training; bf16/fp16 only inside autocast.
    model = AutoModelForSeq2SeqLM.from_pretrained(path, use_safetensors=True, trust_remote_code=trust_remote_code,
                                                  dtype=torch.float32)
    model.eval()
    families.attach(model, tokenizer, families.for_policy(model, tokenizer, path, languages, warnings))
    return model, tokenizer


def save_policy(model, tokenizer, out_dir: str, info: dict) -> None:
    """Atomically save model, tokenizer and lineage info into ``out_dir``."""
    info = causal.info_with_prompt(model, info)  # a causal policy's prompt is part of its lineage
    with atomic_path(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        save_translation(tokenizer, tmp)
        with open(os.path.join(tmp, POLICY_INFO), "w", encoding="utf-8") as f:
            json.dump(info, f, indent=2, sort_keys=True)


def build_model(tokenizer, d_model: int, ffn_dim: int, layers: int, heads: int, dropout: float, seed: int):
    """A tiny pre-LN mBART-style encoder-decoder (post-LN Marian collapsed at high learning rates)."""
    from transformers import GenerationConfig, MBartConfig, MBartForConditionalGeneration

    torch.manual_seed(seed)
    config = MBartConfig(
        vocab_size=len(tokenizer), d_model=d_model, encoder_layers=layers, decoder_layers=layers,
        encoder_attention_heads=heads, decoder_attention_heads=heads, encoder_ffn_dim=ffn_dim,
        decoder_ffn_dim=ffn_dim, dropout=dropout, attention_dropout=0.0, activation_dropout=0.0,
        max_position_embeddings=256, scale_embedding=True, pad_token_id=1, bos_token_id=0,
        eos_token_id=2, decoder_start_token_id=2, forced_eos_token_id=None, tie_word_embeddings=True,
    )
    model = MBartForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        decoder_start_token_id=2, bos_token_id=0, eos_token_id=2, pad_token_id=1, max_length=256)
    return model


def decoder_start_id(model) -> int:
    gc = model.generation_config
    sid = gc.decoder_start_token_id if gc.decoder_start_token_id is not None else model.config.decoder_start_token_id
    return int(sid if sid is not None else model.config.pad_token_id)


def save_translation(tokenizer, out_dir: str) -> None:
    """Write the translation settings a loaded tokenizer carries (none for the plain family) into ``out_dir``."""
    translation = getattr(tokenizer, "_rest_translation", None)
    if translation is not None:
        families.write_saved(out_dir, translation)


def token_lengths(tokenizer, texts: Sequence[str], target: bool = False) -> list[int]:
    """Token count of each source (or, ``target=True``, target) text, special tokens included, before any truncation.

    Sources carry the family's prefix and language code, targets the target language code.
    """
    encode = families.encode_targets if target else families.encode_sources
    return [len(ids) for ids in encode(tokenizer, texts, add_special_tokens=True, verbose=False)["input_ids"]]


def token_batches(lengths: Sequence[int], batch_tokens: int, rng: random.Random | None) -> list[list[int]]:
    """Length-bucketed batches holding about ``batch_tokens`` padded tokens each.

    Sorting by length (with random tie-breaks within noise) keeps padding small; the batch
    order is shuffled so training does not see lengths in order.
    """
    idx = list(range(len(lengths)))
    if rng is not None:
        rng.shuffle(idx)
        # Sort within large random chunks: near-sorted batches, but different every epoch.
        chunk = 100 * max(1, batch_tokens // max(1, int(sum(lengths) / max(1, len(lengths)))))
        idx = [i for k in range(0, len(idx), chunk) for i in sorted(idx[k:k + chunk], key=lambda i: lengths[i])]
    else:
        idx.sort(key=lambda i: lengths[i])
    batches, cur, cur_max = [], [], 0
    for i in idx:
        new_max = max(cur_max, lengths[i])
        if cur and new_max * (len(cur) + 1) > batch_tokens:
            batches.append(cur)
            cur, new_max = [], lengths[i]
        cur.append(i)
        cur_max = new_max
    if cur:
        batches.append(cur)
    if rng is not None:
        rng.shuffle(batches)
    return batches


@torch.inference_mode()
def generate(model, tokenizer, sources: Sequence[str], *, mode: str = "greedy", num_return: int = 1,
             temperature: float = 1.0, top_k: int = 0, beam_size: int = 4, batch_sentences: int = 64,
             max_length_ratio: float = 2.0, seed: int = 0, progress: str | None = None) -> list[list[str]]:
    """Translate ``sources``; returns ``num_return`` outputs per source, in input order.

    Sources are bucketed by length so a batch pads little. With ``mode="sample"`` each
    batch is seeded from ``seed`` and the batch's first index, so results do not depend on
    how many batches ran before.
    """
    if not sources:
        return []
    if causal.is_causal(model):  # prompts, left padding, completion only
        return causal.generate(model, tokenizer, sources, mode=mode, num_return=num_return, temperature=temperature,
                               top_k=top_k, beam_size=beam_size, batch_sentences=batch_sentences,
                               max_length_ratio=max_length_ratio, seed=seed, progress=progress)
    forced = families.forced_ids(tokenizer)
    model.eval()
    limit = max_tokens(model, tokenizer)
    lengths = token_lengths(tokenizer, sources)
    lengths = report_truncation(lengths, limit, progress or "generate")
    max_positions = limit or 1024
    # Fewer sources per batch when each returns many candidates: batch size in sequences stays bounded.
    per_batch = max(1, batch_sentences // num_return) if mode == "sample" and num_return > 1 else batch_sentences
    out: list[list[str] | None] = [None] * len(sources)
    k = num_return if mode != "greedy" else 1
    shown = Progress(progress, len(sources), k, logger=log)
    for batch in length_buckets(lengths, per_batch):
        # Truncated at the model's limit: past its position table the encoder cannot run at all.
        enc = families.encode_sources(tokenizer, [sources[i] for i in batch], return_tensors="pt", padding=True,
                                      truncation=limit is not None, max_length=limit).to(model.device)
        # Never past the model's position table (an untrained policy may never emit </s>).
        max_new = min(int(max(lengths[i] for i in batch) * max_length_ratio) + 10, max_positions - 2)
        kwargs = dict(max_new_tokens=max_new, max_length=None, decoder_start_token_id=decoder_start_id(model),
                      **families.generate_kwargs(tokenizer))  # multilingual: the target language code comes first
        if mode == "sample":
            torch.manual_seed(seed * 1_000_003 + batch[0])
        kwargs.update(hf_search(mode, num_return, temperature, top_k, beam_size))
        ids = model.generate(**enc, **kwargs)
        if forced:  # the decoder's start token and the target language code are no part of the translation
            ids = ids[:, 1 + len(forced):]
        texts = tokenizer.batch_decode(ids, skip_special_tokens=True)
        for j, i in enumerate(batch):
            out[i] = [t.strip() for t in texts[j * k:(j + 1) * k]]
        shown.add(len(batch))
    return out  # type: ignore[return-value]


def fingerprint(obj) -> str:
    """Short stable hash of a JSON-able object (config fingerprints for resumable state)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def lr_at(step: int, peak: float, warmup: int) -> float:
    """Linear warm-up to ``peak``, then inverse-square-root decay."""
    step = max(1, step)
    if warmup <= 0:
        return peak
    return peak * min(step / warmup, math.sqrt(warmup / step))


def resolve_policy(uri: str, workdir: str | None = None, tracking_uri: str | None = None) -> str:
    """A local directory for a policy given as a path, an s3:// prefix or ``models:/NAME@alias``.

    ``models:/`` URIs (e.g. ``models:/rest-de-en@champion``, what a scheduled run starts
    from) are downloaded from the MLflow registry at ``tracking_uri``.
    """
    workdir = workdir or tempfile.mkdtemp(prefix="rest-policy-")
    if uri.startswith("s3://"):
        from rest.services import storage

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
        raise ValueError(f"{uri}: the registered model holds no policy directory (config.json and safetensors weights)")
    return uri
