"""A faster CPU backend for ``rest.policy.generate``: the same model run by CTranslate2.

Hugging Face ``generate()`` spends most of a small model's decoding time in Python
overhead per step; CTranslate2 runs the same weights in C++ with a cached, fused decoder.
The model held in memory is converted once per distinct set of weights (a fingerprint of
the parameters) and kept in a small cache, so callers pass the usual (model, tokenizer)
pair and get the usual ``list[list[str]]`` back. Hugging Face ``generate()`` stays the
reference path (``backend="hf"``); this one is checked against it by bench/sampling.py
(speed and sample quality) and tests/test_bench_smoke.py (greedy agreement).

Models CTranslate2 cannot convert fall back to the reference path with a warning.
"""
from __future__ import annotations

import atexit
import hashlib
import logging
import os
import shutil
import tempfile
import time
from collections import OrderedDict
from typing import Sequence

import torch

from .policy import decoder_start_id, generate as hf_generate, length_buckets, max_tokens, report_truncation

log = logging.getLogger(__name__)

BACKENDS = ("hf", "ctranslate2")
_CACHE: "OrderedDict[str, str]" = OrderedDict()  # weights fingerprint -> converted model directory
_TRANSLATORS: dict = {}  # (directory, threads) -> the reusable unseeded translator
_CACHE_SIZE = 2
_UNSUPPORTED: set[str] = set()  # config classes that failed to convert (warned once)


def available() -> bool:
    try:
        import ctranslate2  # noqa: F401
    except ImportError:
        return False
    return True


def weights_fingerprint(model) -> str:
    """Hash of the model's parameters and config: a changed model gets a fresh conversion."""
    h = hashlib.sha256(model.config.to_json_string().encode())
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()[:20]


def _spec(model, tokenizer):
    """The CTranslate2 model spec of a Transformers seq2seq model (BART/mBART/Marian/...)."""
    from ctranslate2.converters import transformers as ct2t

    name = model.config.__class__.__name__
    loader = ct2t._MODEL_LOADERS.get(name)
    if loader is None:
        raise NotImplementedError(f"CTranslate2 has no converter for {name}")
    cfg = model.config
    # CTranslate2's BART loader reads fairseq's names for the layer-norm placement; mBART is
    # pre-LN with a layer norm on the embeddings. Set them only for the conversion.
    added = []
    if name == "MBartConfig":
        for attr in ("normalize_before", "normalize_embedding"):
            if attr not in cfg.__dict__:
                setattr(cfg, attr, True)
                added.append(attr)
    try:
        with torch.no_grad():
            spec = loader(model, tokenizer)
    finally:
        for attr in added:
            delattr(cfg, attr)
    # Start the decoder with the token the HF path uses (ours: </s>, id 2), whatever the loader guessed.
    spec.config.decoder_start_token = tokenizer.convert_ids_to_tokens(decoder_start_id(model))
    return spec


def converted_dir(model, tokenizer) -> str:
    """A directory holding the CTranslate2 conversion of the model's current weights (cached)."""
    key = weights_fingerprint(model)
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    t0 = time.time()
    spec = _spec(model, tokenizer)
    spec.validate()
    spec.optimize(quantization=None)  # float32: same numbers as the torch model
    path = tempfile.mkdtemp(prefix="rest-ct2-")
    spec.save(path)
    _CACHE[key] = path
    while len(_CACHE) > _CACHE_SIZE:
        shutil.rmtree(_CACHE.popitem(last=False)[1], ignore_errors=True)
    log.info("ctranslate2: converted the policy in %.1f s", time.time() - t0)
    return path


def translator_for(model, tokenizer, threads: int = 0, seed: int | None = None):
    """A ``ctranslate2.Translator`` for the model's current weights.

    CTranslate2 seeds a translator's sampling from the global seed when its worker thread
    starts, so a seeded translator is a fresh one (creating it takes milliseconds); an
    unseeded one (greedy, beam) is reused.
    """
    import ctranslate2

    path = converted_dir(model, tokenizer)
    n = threads or torch.get_num_threads() or os.cpu_count() or 1
    if seed is not None:
        ctranslate2.set_random_seed(seed % 2**32)  # its seed is an unsigned 32-bit integer
        return ctranslate2.Translator(path, device="cpu", inter_threads=1, intra_threads=n)
    key = (path, n)
    if key not in _TRANSLATORS:
        _TRANSLATORS.clear()
        _TRANSLATORS[key] = ctranslate2.Translator(path, device="cpu", inter_threads=1, intra_threads=n)
    return _TRANSLATORS[key]


@atexit.register
def _cleanup() -> None:
    _TRANSLATORS.clear()
    for path in _CACHE.values():
        shutil.rmtree(path, ignore_errors=True)
    _CACHE.clear()


def generate(model, tokenizer, sources: Sequence[str], *, mode: str = "greedy", num_return: int = 1,
             temperature: float = 1.0, top_k: int = 0, beam_size: int = 4, batch_sentences: int = 64,
             max_length_ratio: float = 2.0, seed: int = 0, progress: str | None = None) -> list[list[str]]:
    """``rest.policy.generate`` run by CTranslate2 (same arguments, same output shape and order).

    Sampling draws from the full distribution at ``temperature`` (``top_k`` > 0 restricts it),
    seeded per length bucket from ``seed`` and the bucket's first index (so the same
    call gives the same samples). The random streams differ from torch's, so samples differ
    from the HF path's sample by sample but follow the same distribution.
    """
    if not sources:
        return []
    name = model.config.__class__.__name__
    if not available() or name in _UNSUPPORTED:
        return hf_generate(model, tokenizer, sources, mode=mode, num_return=num_return, temperature=temperature,
                           top_k=top_k, beam_size=beam_size, batch_sentences=batch_sentences,
                           max_length_ratio=max_length_ratio, seed=seed, progress=progress)
    try:
        converted_dir(model, tokenizer)
        translator = translator_for(model, tokenizer) if mode != "sample" else None
    except (NotImplementedError, ValueError, KeyError, AttributeError) as e:
        _UNSUPPORTED.add(name)
        log.warning("ctranslate2 cannot run %s (%s); using Hugging Face generate()", name, e)
        return generate(model, tokenizer, sources, mode=mode, num_return=num_return, temperature=temperature,
                        top_k=top_k, beam_size=beam_size, batch_sentences=batch_sentences,
                        max_length_ratio=max_length_ratio, seed=seed, progress=progress)
    limit = max_tokens(model, tokenizer)
    ids = tokenizer(list(sources), add_special_tokens=True, verbose=False)["input_ids"]
    report_truncation([len(x) for x in ids], limit, progress or "generate")
    if limit is not None:
        # Cut past the model's position table, keeping the sequence's closing special token.
        ids = tokenizer(list(sources), add_special_tokens=True, truncation=True, max_length=limit)["input_ids"]
    lengths = [len(x) for x in ids]
    tokens = [tokenizer.convert_ids_to_tokens(x) for x in ids]
    max_positions = limit or 1024
    k = num_return if mode != "greedy" else 1
    # CTranslate2 batches the N samples of a source internally; a bucket of sources per call
    # keeps padding small, and larger calls than HF's amortise the per-call overhead.
    per_batch = max(1, batch_sentences // k) if mode == "sample" else batch_sentences
    per_batch = max(per_batch, 16)
    out: list[list[str] | None] = [None] * len(sources)
    start, done, last_log = time.time(), 0, time.time()
    for batch in length_buckets(lengths, per_batch):
        max_new = min(int(max(lengths[i] for i in batch) * max_length_ratio) + 10, max_positions - 2)
        # min_decoding_length=0: like HF, an immediate </s> (an empty output) is allowed.
        kwargs = dict(max_decoding_length=max_new, min_decoding_length=0, max_input_length=0, max_batch_size=0,
                      return_scores=False)
        if mode == "sample":
            translator = translator_for(model, tokenizer, seed=seed * 1_000_003 + batch[0])
            kwargs.update(beam_size=1, sampling_topk=top_k or 0, sampling_temperature=temperature,
                          num_hypotheses=num_return)
        elif mode == "beam":
            kwargs.update(beam_size=beam_size, num_hypotheses=num_return)
        else:
            kwargs.update(beam_size=1, num_hypotheses=1)
        results = translator.translate_batch([tokens[i] for i in batch], **kwargs)
        for i, res in zip(batch, results):
            hyps = [tokenizer.decode(tokenizer.convert_tokens_to_ids(h), skip_special_tokens=True).strip()
                    for h in res.hypotheses[:k]]
            out[i] = hyps
        done += len(batch)
        if progress and (time.time() - last_log > 10 or done == len(sources)):
            rate = done * k / max(1e-9, time.time() - start)
            log.info("%s: %d/%d sources, %.0f outputs/s (ctranslate2)", progress, done, len(sources), rate)
            last_log = time.time()
    return out  # type: ignore[return-value]


def generate_with(backend: str):
    """The generate function of a backend name (``hf`` or ``ctranslate2``)."""
    if backend == "hf":
        return hf_generate
    if backend == "ctranslate2":
        return generate
    raise ValueError(f"unknown generation backend {backend!r}; use one of {', '.join(BACKENDS)}")
