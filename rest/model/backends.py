"""A faster CPU backend for ``rest.model.policy.generate``: the same model run by CTranslate2.

Hugging Face ``generate()`` spends most of a small model's decoding time in Python
overhead per step; CTranslate2 runs the same weights in C++ with a cached, fused decoder.
The model held in memory is converted once per distinct set of weights (a fingerprint of
the parameters) and kept in a small cache, so callers pass the usual (model, tokenizer)
pair and get the usual ``list[list[str]]`` back. Hugging Face ``generate()`` stays the
reference path (``backend="hf"``); this one is checked against it by bench/sampling.py
(speed and sample quality) and tests/test_bench_smoke.py (greedy agreement).

Conversion goes through CTranslate2's public ``TransformersConverter`` (every translation
family: Marian, M2M100/NLLB, mBART, T5, ...); the family's settings come with the tokenizer
(``rest.model.families``): the source prefix and language code in the source tokens, the
target language code as ``target_prefix``. Models CTranslate2 cannot convert fall back to
the reference path with one log line.
"""
from __future__ import annotations

import functools
import json
import logging
import os
import tempfile
from typing import Sequence

import torch

from rest.model import causal
from rest.model.base import Progress, length_buckets, max_tokens, report_truncation
from rest.model.ct2 import Ct2Cache, ct2_search
from rest.model.device import host_copy, is_cuda, model_device
from rest.model.families import encode_sources, target_prefix
from rest.model.policy import decoder_start_id, generate as hf_generate

log = logging.getLogger(__name__)

BACKENDS = ("hf", "ctranslate2")
_CT2 = Ct2Cache("rest-ct2-", "the policy", log)  # converted directories and the reusable translator
_UNSUPPORTED: set[str] = set()  # config classes that failed to convert (warned once)


def available() -> bool:
    try:
        import ctranslate2  # noqa: F401
    except ImportError:
        return False
    return True


def _convert(model, tokenizer, out_dir: str) -> None:
    """Convert the model in memory with CTranslate2's public ``TransformersConverter`` into ``out_dir``.

    The converter picks its loader from the ``config.json`` in the directory it is given and
    then asks ``load_model``/``load_tokenizer`` for the model: here the one in memory, so a
    fine-tuning step's unsaved weights convert without a round trip through the disk. Every
    family the converter knows converts (Marian, M2M100/NLLB, mBART, BART, T5/mT5, ...);
    for any other it raises ``ValueError`` and :func:`generate` falls back to Hugging Face.
    """
    import copy

    from ctranslate2.converters import TransformersConverter

    # The loaders write fairseq's layer-norm names (normalize_before, ...) onto the config they are
    # given: a copy, so the policy's own config, and what save_pretrained writes, stay as they were.
    clone = copy.copy(model)
    clone.config = copy.deepcopy(model.config)
    if clone.config.model_type == "mbart":
        # The BART loader reads those names for the layer-norm placement; mBART (ours and mBART-50)
        # is pre-LN with a layer norm on the embeddings. Real mBART configs carry them; built ones do not.
        for attr in ("normalize_before", "normalize_embedding"):
            if attr not in clone.config.__dict__:
                setattr(clone.config, attr, True)

    class InMemory(TransformersConverter):
        def load_model(self, model_class, model_name_or_path, **kwargs):
            return clone

        def load_tokenizer(self, tokenizer_class, model_name_or_path, **kwargs):
            return tokenizer

    if getattr(tokenizer, "lang_token_to_id", None) and not set(tokenizer.lang_token_to_id) <= set(tokenizer.get_vocab()):
        tokenizer = _WithLanguageTokens(tokenizer)
    with tempfile.TemporaryDirectory(prefix="rest-ct2-config-") as config_dir, torch.no_grad():
        model.config.save_pretrained(config_dir)
        InMemory(config_dir).convert(out_dir, quantization=None, force=True)  # float32: the torch model's numbers
    # A loader that cannot tell the decoder's start token (mBART without a tokenizer_class: the
    # project's own) leaves it unset; start with the token the HF path uses (ours: </s>, id 2).
    # Others keep theirs: Marian's decoder starts from a zero embedding, not from <pad>.
    config_path = os.path.join(out_dir, "config.json")
    with open(config_path, encoding="utf-8") as f:
        config = json.load(f)
    if config.get("decoder_start_token") is None:
        config["decoder_start_token"] = tokenizer.convert_ids_to_tokens(decoder_start_id(model))
        with open(config_path, "w", encoding="utf-8") as f:
            json.dump(config, f, indent=2)


class _WithLanguageTokens:
    """An M2M100Tokenizer whose ``get_vocab`` also lists its language tokens (``__de__``).

    transformers 5 keeps them outside ``get_vocab()`` and out of ``special_tokens_map``, where
    CTranslate2's M2M100 loader looks for them; without them the converted vocabulary is
    short by the language codes and the conversion fails.
    """

    def __init__(self, tokenizer):
        self._tokenizer = tokenizer

    def __getattr__(self, name):
        return getattr(self._tokenizer, name)

    def get_vocab(self) -> dict:
        return {**self._tokenizer.get_vocab(), **self._tokenizer.lang_token_to_id}


def converted_dir(model, tokenizer) -> str:
    """A directory holding the CTranslate2 conversion of the model's current weights (cached)."""
    # The converter reads host memory: a GPU model converts from a copy.
    return _CT2.converted(model, lambda path: _convert(host_copy(model), tokenizer, path))


def translator_for(model, tokenizer, threads: int = 0, seed: int | None = None, compute_type: str = "default"):
    """A ``ctranslate2.Translator`` for the model's current weights, on the model's device.

    CTranslate2 seeds a translator's sampling from the global seed when its worker thread
    starts, so a seeded translator is a fresh one (creating it takes milliseconds); an
    unseeded one (greedy, beam) is reused. ``compute_type``: CTranslate2's (default = the
    converted float32 weights as they are). CPU threads are set only on the CPU.
    """
    path = converted_dir(model, tokenizer)
    return _CT2.runner("Translator", path, model, threads=threads, seed=seed, compute_type=compute_type)


def generate(model, tokenizer, sources: Sequence[str], *, mode: str = "greedy", num_return: int = 1,
             temperature: float = 1.0, top_k: int = 0, beam_size: int = 4, batch_sentences: int = 64,
             max_length_ratio: float = 2.0, seed: int = 0, progress: str | None = None,
             compute_type: str = "default") -> list[list[str]]:
    """``rest.model.policy.generate`` run by CTranslate2 (same arguments, same output shape and order).

    It runs on the device the model's weights are on (CPU or ``cuda:N``), with CTranslate2's
    ``compute_type`` there (``default``: the float32 weights as converted).

    Sampling draws from the full distribution at ``temperature`` (``top_k`` > 0 restricts it),
    seeded per length bucket from ``seed`` and the bucket's first index (so the same
    call gives the same samples). The random streams differ from torch's, so samples differ
    from the HF path's sample by sample but follow the same distribution.
    """
    if not sources:
        return []
    if causal.is_causal(model):  # decoder-only: CTranslate2's Generator (or HF for families it lacks)
        return causal.generate_ct2(model, tokenizer, sources, mode=mode, num_return=num_return,
                                   temperature=temperature, top_k=top_k, beam_size=beam_size,
                                   batch_sentences=batch_sentences, max_length_ratio=max_length_ratio, seed=seed,
                                   progress=progress, compute_type=compute_type)
    name = model.config.__class__.__name__
    if not available() or name in _UNSUPPORTED:
        return hf_generate(model, tokenizer, sources, mode=mode, num_return=num_return, temperature=temperature,
                           top_k=top_k, beam_size=beam_size, batch_sentences=batch_sentences,
                           max_length_ratio=max_length_ratio, seed=seed, progress=progress)
    try:
        converted_dir(model, tokenizer)
        translator = translator_for(model, tokenizer, compute_type=compute_type) if mode != "sample" else None
    except (NotImplementedError, ValueError, KeyError, AttributeError) as e:
        _UNSUPPORTED.add(name)
        log.warning("ctranslate2 cannot run %s (%s); using Hugging Face generate()", name, e)
        return generate(model, tokenizer, sources, mode=mode, num_return=num_return, temperature=temperature,
                        top_k=top_k, beam_size=beam_size, batch_sentences=batch_sentences,
                        max_length_ratio=max_length_ratio, seed=seed, progress=progress, compute_type=compute_type)
    limit = max_tokens(model, tokenizer)
    # The family's source encoding (prefix, source language code) and, for a multilingual model,
    # the target language code as the first target token: CTranslate2's target_prefix.
    ids = encode_sources(tokenizer, sources, add_special_tokens=True, verbose=False)["input_ids"]
    report_truncation([len(x) for x in ids], limit, progress or "generate")
    if limit is not None:
        # Cut past the model's position table, keeping the sequence's closing special token.
        ids = encode_sources(tokenizer, sources, add_special_tokens=True, truncation=True, max_length=limit)["input_ids"]
    lengths = [len(x) for x in ids]
    tokens = [tokenizer.convert_ids_to_tokens(x) for x in ids]
    prefix = target_prefix(tokenizer)
    max_positions = limit or 1024
    k = num_return if mode != "greedy" else 1
    # CTranslate2 batches the N samples of a source internally; a bucket of sources per call
    # keeps padding small, and larger calls than HF's amortise the per-call overhead.
    per_batch = max(1, batch_sentences // k) if mode == "sample" else batch_sentences
    per_batch = max(per_batch, 16)
    out: list[list[str] | None] = [None] * len(sources)
    shown = Progress(progress, len(sources), k, " (ctranslate2)", logger=log)
    on_gpu = is_cuda(model_device(model))
    if mode == "sample" and on_gpu:
        # A fresh translator per bucket would upload the weights to the GPU for every bucket:
        # on a GPU one seeded translator samples the whole call (its stream then depends on
        # the call's sources, not on the bucket alone).
        translator = translator_for(model, tokenizer, seed=seed * 1_000_003, compute_type=compute_type)
    # HF ends an output that reaches the length limit with a forced </s> when the generation config
    # asks for it (forced_eos_token_id: Marian, mBART-50): one token less of text, here too.
    forced_eos = getattr(getattr(model, "generation_config", None), "forced_eos_token_id", None) is not None
    for batch in length_buckets(lengths, per_batch):
        max_new = min(int(max(lengths[i] for i in batch) * max_length_ratio) + 10, max_positions - 2) - forced_eos
        # min_decoding_length=0: like HF, an immediate </s> (an empty output) is allowed.
        kwargs = dict(max_decoding_length=max_new, min_decoding_length=0, max_input_length=0, max_batch_size=0,
                      return_scores=False)
        if mode == "sample" and not on_gpu:
            translator = translator_for(model, tokenizer, seed=seed * 1_000_003 + batch[0], compute_type=compute_type)
        kwargs.update(ct2_search(mode, num_return, temperature, top_k, beam_size))
        if prefix:
            kwargs["target_prefix"] = [prefix] * len(batch)
        results = translator.translate_batch([tokens[i] for i in batch], **kwargs)
        for i, res in zip(batch, results):
            # A hypothesis starts with its target_prefix (the language code): no part of the translation.
            hyps = [tokenizer.decode(tokenizer.convert_tokens_to_ids(h[len(prefix or ()):]),
                                     skip_special_tokens=True).strip() for h in res.hypotheses[:k]]
            out[i] = hyps
        shown.add(len(batch))
    return out  # type: ignore[return-value]


def generate_with(backend: str, compute_type: str = "default"):
    """The generate function of a backend name (``hf`` or ``ctranslate2``, with its ``compute_type``)."""
    if backend == "hf":
        return hf_generate
    if backend == "ctranslate2":
        return generate if compute_type == "default" else functools.partial(generate, compute_type=compute_type)
    raise ValueError(f"unknown generation backend {backend!r}; use one of {', '.join(BACKENDS)}")
