"""Tiny real-architecture policies of every translation family, built here without downloads.

Each family gets its own config class (MarianConfig, M2M100Config, MBartConfig, T5Config)
with random weights at d_model 32, and a tokenizer of its own kind made from SentencePiece
models trained on the bundled German-English text with the sentencepiece package:

- marian: MarianTokenizer from source.spm (German), target.spm (English) and a joint vocab.json
  (``<pad>`` last, as in opus-mt, and as CTranslate2's Marian converter expects);
- nllb: NllbTokenizer (BPE; the 202 NLLB language codes) on the M2M100 architecture;
- m2m100: M2M100Tokenizer (vocab.json + sentencepiece.bpe.model; ``__de__``-style codes);
- mbart50: MBart50Tokenizer (unigram; ``de_DE``-style codes) on MBartConfig, tokenizer_class set as in
  the real checkpoints;
- t5: T5Tokenizer (unigram, pad/eos/unk = 0/1/2) on T5Config with t5-small's
  ``task_specific_params`` (en→de, en→fr, en→ro: no de→en, so the prefix is built from names).

The transformers 5 tokenizers for NLLB, mBART-50 and T5 are built from the vocabulary
(pieces and scores, read with sentencepiece's own API) instead of the ``.model`` file:
reading a ``.model`` file goes through sentencepiece's protobuf module, which needs a newer
protobuf than kfp allows here. ``save_pretrained`` then writes ``tokenizer.json``, the form
real checkpoints ship.

Everything is built once per test session (:func:`policy` caches by family) into one
temporary root; a family's policy is also trained briefly (:data:`TRAIN_STEPS` NLL steps on
:data:`TRAIN_PAIRS` short pairs), so that greedy outputs are real token sequences and
HF and CTranslate2 can be compared on them. That training is a plain Hugging Face loop
(``labels=``), as a user's own fine-tuning would be, and both directories are saved with
``save_pretrained`` only: they are user directories, without this project's record. (A
Marian model trained so has a drifted decoder-start row, which loading resets: the
warning in the logs is expected.)
"""
from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
import threading

from tests.conftest import bundled_rows

FAMILIES = ("marian", "nllb", "m2m100", "mbart50", "t5")
TRAIN_PAIRS = 200
TRAIN_STEPS = 80
MAX_WORDS = 5  # short pairs: tiny models learn to stop, decodes stay short

_LOCK = threading.Lock()
_ROOT: list[str] = []
_BUILT: dict[tuple[str, bool], str] = {}


def pairs(n: int = TRAIN_PAIRS, split: str = "train") -> list[tuple[str, str]]:
    """Up to ``n`` short (German, English) pairs of the bundled corpus (both sides <= MAX_WORDS words)."""
    out = []
    for _, de, en in bundled_rows(split, 20 * n):
        if len(de.split()) <= MAX_WORDS and len(en.split()) <= MAX_WORDS:
            out.append((de, en))
            if len(out) == n:
                break
    return out


def _spm(prefix: str, texts: list[str], model_type: str, vocab_size: int, **ids):
    import sentencepiece as spm

    spm.SentencePieceTrainer.train(sentence_iterator=iter(texts), model_prefix=prefix, vocab_size=vocab_size,
                                   model_type=model_type, character_coverage=1.0, num_threads=1, minloglevel=2,
                                   hard_vocab_limit=False, **ids)
    return spm.SentencePieceProcessor(model_file=prefix + ".model")


def _pieces(sp) -> list[str]:
    return [sp.id_to_piece(i) for i in range(sp.get_piece_size())]


def _bpe_merges(sp) -> list[tuple[str, str]]:
    """BPE merges of a SentencePiece BPE model: every split of a piece into two pieces, by the piece's rank."""
    rank = {p: i for i, p in enumerate(_pieces(sp))}
    found = []
    for piece, r in rank.items():
        if sp.is_control(r) or sp.is_unknown(r):
            continue
        for k in range(1, len(piece)):
            a, b = piece[:k], piece[k:]
            if a in rank and b in rank:
                found.append((r, rank[a], rank[b], a, b))
    return [(a, b) for *_, a, b in sorted(found)]


def _fairseq_vocab(sp) -> dict[str, int]:
    """fairseq's layout: <s> <pad> </s> <unk>, then the SentencePiece pieces."""
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for i, p in enumerate(_pieces(sp)):
        if not (sp.is_control(i) or sp.is_unknown(i)) and p not in vocab:
            vocab[p] = len(vocab)
    return vocab


def build_tokenizer(family: str, work: str, texts: list[tuple[str, str]]):
    """A tokenizer of ``family``'s own kind, trained on ``texts`` (no download)."""
    de, en = [s for s, _ in texts], [t for _, t in texts]
    joint = de + en
    os.makedirs(work, exist_ok=True)
    if family == "marian":
        from transformers import MarianTokenizer

        # Different models for the two languages: a target segmented with the source model differs.
        src = _spm(os.path.join(work, "source"), de, "bpe", 260)
        tgt = _spm(os.path.join(work, "target"), en, "bpe", 200)
        vocab = {"</s>": 0, "<unk>": 1}
        for sp in (src, tgt):
            for i, p in enumerate(_pieces(sp)):
                if not (sp.is_control(i) or sp.is_unknown(i)) and p not in vocab:
                    vocab[p] = len(vocab)
        vocab["<pad>"] = len(vocab)  # last, as in opus-mt (CTranslate2 drops it: the decoder starts from zeros)
        with open(os.path.join(work, "vocab.json"), "w", encoding="utf-8") as f:
            json.dump(vocab, f, ensure_ascii=False)
        return MarianTokenizer(os.path.join(work, "source.model"), os.path.join(work, "target.model"),
                               os.path.join(work, "vocab.json"))
    if family == "nllb":
        from transformers import NllbTokenizer

        sp = _spm(os.path.join(work, "spm"), joint, "bpe", 400)
        return NllbTokenizer(vocab=_fairseq_vocab(sp), merges=_bpe_merges(sp))
    if family == "m2m100":
        from transformers import M2M100Tokenizer

        sp = _spm(os.path.join(work, "spm"), joint, "bpe", 400)
        with open(os.path.join(work, "vocab.json"), "w", encoding="utf-8") as f:
            json.dump(_fairseq_vocab(sp), f, ensure_ascii=False)
        return M2M100Tokenizer(os.path.join(work, "vocab.json"), os.path.join(work, "spm.model"))
    if family == "mbart50":
        from transformers import MBart50Tokenizer

        sp = _spm(os.path.join(work, "spm"), joint, "unigram", 400)
        return MBart50Tokenizer(vocab=[(sp.id_to_piece(i), sp.get_score(i)) for i in range(sp.get_piece_size())],
                                bos_token="<s>")  # as mbart-large-50's special_tokens_map
    if family == "t5":
        from transformers import T5Tokenizer

        sp = _spm(os.path.join(work, "spm"), joint, "unigram", 400, pad_id=0, eos_id=1, unk_id=2, bos_id=-1)
        return T5Tokenizer(vocab=[(sp.id_to_piece(i), sp.get_score(i)) for i in range(sp.get_piece_size())],
                           extra_ids=0)
    raise ValueError(family)


def build_model(family: str, tokenizer, seed: int = 0):
    """A tiny random model of ``family``'s own architecture (its config class), sized to the tokenizer."""
    import torch
    from transformers import (GenerationConfig, M2M100Config, M2M100ForConditionalGeneration, MarianConfig,
                              MarianMTModel, MBartConfig, MBartForConditionalGeneration, T5Config,
                              T5ForConditionalGeneration)

    torch.manual_seed(seed)
    n = len(tokenizer)
    if family == "m2m100":  # its language tokens and "madeup words" come after the vocabulary file's ids
        n = len(tokenizer.encoder) + len(tokenizer.lang_token_to_id) + tokenizer.num_madeup_words
    small = dict(d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
                 encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=256, dropout=0.0,
                 attention_dropout=0.0, activation_dropout=0.0)
    if family == "marian":
        pad = tokenizer.pad_token_id
        model = MarianMTModel(MarianConfig(vocab_size=n, pad_token_id=pad, eos_token_id=0, decoder_start_token_id=pad,
                                           forced_eos_token_id=0, scale_embedding=True, **small))
        # As opus-mt's generation config: <pad> starts the decoder and is never generated.
        model.generation_config = GenerationConfig(decoder_start_token_id=pad, eos_token_id=0, pad_token_id=pad,
                                                   forced_eos_token_id=0, bad_words_ids=[[pad]], max_length=256)
    elif family in ("nllb", "m2m100"):
        model = M2M100ForConditionalGeneration(M2M100Config(
            vocab_size=n, pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2,
            scale_embedding=True, tokenizer_class="NllbTokenizer" if family == "nllb" else "M2M100Tokenizer",
            **small))
        model.generation_config = GenerationConfig(decoder_start_token_id=2, bos_token_id=0, eos_token_id=2,
                                                   pad_token_id=1, max_length=256)
    elif family == "mbart50":
        model = MBartForConditionalGeneration(MBartConfig(
            vocab_size=n, pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2,
            forced_eos_token_id=2, scale_embedding=True, tokenizer_class="MBart50Tokenizer", **small))
        model.generation_config = GenerationConfig(decoder_start_token_id=2, bos_token_id=0, eos_token_id=2,
                                                   pad_token_id=1, forced_eos_token_id=2, max_length=256)
    elif family == "t5":
        # t5-small's translation tasks: none is German to English.
        tasks = {f"translation_en_to_{t}": {"prefix": f"translate English to {name}: ", "max_length": 300}
                 for t, name in (("de", "German"), ("fr", "French"), ("ro", "Romanian"))}
        model = T5ForConditionalGeneration(T5Config(
            vocab_size=n + 8, d_model=32, d_kv=16, d_ff=64, num_layers=1, num_decoder_layers=1, num_heads=2,
            relative_attention_num_buckets=8, dropout_rate=0.0, pad_token_id=0, eos_token_id=1,
            decoder_start_token_id=0, feed_forward_proj="relu", tie_word_embeddings=True, task_specific_params=tasks))
        model.generation_config = GenerationConfig(decoder_start_token_id=0, eos_token_id=1, pad_token_id=0,
                                                   max_length=256)
    else:
        raise ValueError(family)
    return model


def _root() -> str:
    if not _ROOT:
        _ROOT.append(tempfile.mkdtemp(prefix="rest-families-"))
        atexit.register(cleanup)  # the policies live for the test session, then go
    return _ROOT[0]


def policy(family: str, trained: bool = True) -> str:
    """The policy directory of ``family`` (built once per session): tokenizer + tiny model, briefly trained.

    ``trained=False``: the random-weight model as built (enough for tokenization checks).
    """
    with _LOCK:
        key = (family, trained)
        if key in _BUILT:
            return _BUILT[key]
        if not trained:
            # A user's directory as save_pretrained() writes it (no record of this project's).
            texts = pairs(TRAIN_PAIRS * 4)
            tok = build_tokenizer(family, os.path.join(_root(), family + "-spm"), texts)
            out = os.path.join(_root(), family + "-random")
            build_model(family, tok).save_pretrained(out)
            tok.save_pretrained(out)
            _BUILT[key] = out
            return out
    base = policy(family, trained=False)
    with _LOCK:
        if key not in _BUILT:
            _BUILT[key] = _train(family, base, os.path.join(_root(), family + "-trained"))
        return _BUILT[key]


def languages(family: str) -> dict:
    """The data settings the tests translate German to English with."""
    return {"source_column": "de", "target_column": "en"}


def _train(family: str, base: str, out: str) -> str:
    """A copy of ``base`` after TRAIN_STEPS NLL steps, saved like a user's fine-tuned model (save_pretrained).

    Targets are encoded the family's way (``text_target``, target language code), so the
    saved tokenizer config holds the languages and the generation config the forced first
    token, as in a real fine-tuned multilingual checkpoint.
    """
    import random

    import torch

    from rest.model import families
    from rest.model.policy import load_policy

    model, tok = load_policy(base, languages=languages(family))
    data = pairs()
    src = families.encode_sources(tok, [s for s, _ in data])["input_ids"]
    tgt = families.encode_targets(tok, [t for _, t in data])["input_ids"]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    rng = random.Random(0)
    torch.manual_seed(0)
    model.train()
    for _ in range(TRAIN_STEPS):
        batch = rng.sample(range(len(data)), 32)
        width_s, width_t = max(len(src[i]) for i in batch), max(len(tgt[i]) for i in batch)
        input_ids = torch.tensor([src[i] + [tok.pad_token_id] * (width_s - len(src[i])) for i in batch])
        labels = torch.tensor([tgt[i] + [-100] * (width_t - len(tgt[i])) for i in batch])
        # The model shifts the labels right behind its decoder start token (teacher forcing).
        loss = model(input_ids=input_ids, attention_mask=(input_ids != tok.pad_token_id).long(), labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def cleanup() -> None:
    for path in _ROOT:
        shutil.rmtree(path, ignore_errors=True)
    _ROOT.clear()
    _BUILT.clear()
