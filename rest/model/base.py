"""What every kind of policy shares: seq2seq (:mod:`rest.model.policy`) and causal (:mod:`rest.model.causal`).

The lineage file beside the weights, the model's length limit, length-bucketed batches,
the progress line of a generation loop, Hugging Face's decoding settings per mode, and the
project's joint BPE tokenizer. Both policy modules import this one and neither is imported
by it, so the seq2seq policy can dispatch to the causal one without an import circle.
No torch at import time: :mod:`rest.config` and the CLI read some of it.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Iterable, Sequence

from rest.services.files import read_json

log = logging.getLogger("rest.model.policy")  # the name these lines were always logged under

POLICY_INFO = "rest_policy.json"  # lineage written beside the weights
SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>"]  # ids 0..3, mBART's order


def policy_info(path: str) -> dict:
    """Lineage of a saved policy (empty for a foreign model directory)."""
    p = os.path.join(path, POLICY_INFO)
    return read_json(p) if os.path.exists(p) else {}


def train_tokenizer(texts: Iterable[str], vocab_size: int):
    """A joint BPE tokenizer (SentencePiece-style word boundaries) trained on ``texts``."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, min_frequency=2,
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    # Every encoded sequence ends with </s>: the encoder sees it, and labels end with it.
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 2)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", pad_token="<pad>",
                                   eos_token="</s>", unk_token="<unk>", model_max_length=256)


UNSET_MODEL_MAX_LENGTH = 10**9  # tokenizers without a limit report a huge placeholder (int(1e30))


def max_tokens(model=None, tokenizer=None, model_config=None) -> int | None:
    """The longest token sequence (special tokens included) the model can take, or None if unbounded.

    A model with learned absolute positions (mBART, BART, Marian) has
    ``max_position_embeddings``; past it the embedding lookup fails (``IndexError: index out
    of range in self``). A tokenizer's ``model_max_length`` counts when it is really set
    (not the huge placeholder). With both, the smaller one wins.
    """
    config = model_config if model_config is not None else getattr(model, "config", None)
    limits = []
    positions = config.get("max_position_embeddings") if isinstance(config, dict) else \
        getattr(config, "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        limits.append(positions)
    tok_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_max, int) and 0 < tok_max < UNSET_MODEL_MAX_LENGTH:
        limits.append(tok_max)
    return min(limits) if limits else None


def report_truncation(lengths: Sequence[int], limit: int | None, what: str) -> list[int]:
    """Lengths capped at ``limit``; logs how many sources are cut to the model's maximum length."""
    if limit is None:
        return list(lengths)
    over = [i for i, n in enumerate(lengths) if n > limit]
    if over:
        log.warning("%s: %d of %d sources are over the model's maximum of %d tokens (longest %d): each is "
                    "truncated to its first %d tokens for translation", what, len(over), len(lengths), limit,
                    max(lengths[i] for i in over), limit)
    return [min(n, limit) for n in lengths]


def length_buckets(lengths: Sequence[int], max_items: int) -> list[list[int]]:
    """Group indices of similar length into batches of at most ``max_items`` (order kept stable)."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    return [order[k:k + max_items] for k in range(0, len(order), max_items)]


def hf_search(mode: str, num_return: int, temperature: float, top_k: int, beam_size: int) -> dict:
    """Hugging Face ``generate()`` settings of a decoding ``mode`` (sample, beam or greedy).

    The caller seeds torch before a sampling call: the seed depends on its batch.
    """
    if mode == "sample":
        return dict(do_sample=True, temperature=temperature, top_k=top_k or None, top_p=None,
                    num_return_sequences=num_return, num_beams=1)
    if mode == "beam":
        return dict(do_sample=False, num_beams=beam_size, num_return_sequences=num_return)
    return dict(do_sample=False, num_beams=1, num_return_sequences=1)


class Progress:
    """The progress line of a generation loop: at most every 10 s, and once at the end.

    ``what`` None logs nothing (the caller asked for no progress); ``per_source`` outputs
    count per source for the rate; ``suffix`` names the backend, e.g. `` (ctranslate2)``.
    """

    def __init__(self, what: str | None, total: int, per_source: int, suffix: str = "", logger=None):
        self.what, self.total, self.per_source, self.suffix = what, total, per_source, suffix
        self.log = logger or log
        self.start = self.last = time.time()
        self.done = 0

    def add(self, n: int) -> None:
        """``n`` more sources are done."""
        self.done += n
        if self.what and (time.time() - self.last > 10 or self.done == self.total):
            rate = self.done * self.per_source / max(1e-9, time.time() - self.start)
            self.log.info("%s: %d/%d sources, %.0f outputs/s%s", self.what, self.done, self.total, rate, self.suffix)
            self.last = time.time()
