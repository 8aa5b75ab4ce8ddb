"""Decoder-only (causal LM) policies: prompts, completion-only loss, left-padded generation.

A policy directory whose ``config.json`` says ``is_encoder_decoder: false`` (Llama, Qwen,
GPT-2, ...) is a causal policy: it loads with ``AutoModelForCausalLM`` and every step that
would feed a seq2seq model an encoder input instead feeds this model a *prompt*, then reads
the *completion*. ``rest.model.policy`` / ``rest.model.train`` / ``rest.model.backends``
dispatch here with a one-line hook each, so the steps stay the same for both kinds.

* **Prompt** (:class:`Prompt`): how a source becomes the prompt. It is part of the policy
  (trained with it), so it is recorded in the policy's lineage (``rest_policy.json`` key
  ``prompt``) and every later step (sample, finetune, evaluate, the served model) reads it
  from there. Settings (``bootstrap.prompt``): ``auto`` (the tokenizer's chat template when
  it has one, else the translation template), ``translation``, ``chat``, ``source`` (the
  source itself, e.g. ``347+85=`` for the arithmetic task), or any text holding ``{source}``.
* **Training**: the sequence is prompt + completion + EOS; labels are -100 on the prompt
  (and padding), so the loss is on the completion only.
* **Generation**: prompts are left-padded (a decoder continues from the last position of
  every row), new tokens stop at EOS or after ``len(source tokens) * max_length_ratio + 10``
  new tokens, never past the model's position table. CTranslate2's ``Generator`` runs the
  families its converter knows (Llama, Mistral, Qwen2/3, Gemma, GPT-2, ...); others fall
  back to Hugging Face ``generate()``.
"""
from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
from dataclasses import dataclass
from typing import Sequence

import torch

from rest.model.base import (POLICY_INFO, Progress, hf_search, length_buckets, max_tokens, policy_info,
                             report_truncation, train_tokenizer)
from rest.model.ct2 import Ct2Cache, ct2_search
from rest.model.device import host_copy, model_device
from rest.tasks.arithmetic import build_char_tokenizer

log = logging.getLogger(__name__)

PROMPT_KEY = "prompt"  # the key of the prompt in rest_policy.json
PROMPT_SETTINGS = ("auto", "translation", "chat", "source")
TRANSLATION_TEMPLATE = "Translate into the target language.\nSource: {source}\nTranslation:"
CHAT_INSTRUCTION = "Translate the following text into the target language. Reply with the translation only.\n\n{source}"
ATTRIBUTE = "rest_prompt"  # where a loaded model carries its Prompt


# --------------------------------------------------------------------------------------
# Which kind of policy
# --------------------------------------------------------------------------------------
def is_causal_config(config) -> bool:
    """A model config (object or config.json dict) of a decoder-only model."""
    if config is None:
        return False
    if isinstance(config, dict):
        value, model_type = config.get("is_encoder_decoder"), config.get("model_type")
    else:
        value, model_type = getattr(config, "is_encoder_decoder", None), getattr(config, "model_type", None)
    if value is None and model_type:  # a config.json that leaves the default out
        from transformers.models.auto.modeling_auto import MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES as SEQ2SEQ

        return model_type not in SEQ2SEQ
    return not value


def is_causal(model) -> bool:
    """A loaded model (or a PEFT wrapper of one) that is decoder-only."""
    return is_causal_config(getattr(model, "config", None))


def is_causal_dir(path: str) -> bool:
    """A policy directory whose config.json describes a decoder-only model."""
    try:
        with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
            return is_causal_config(json.load(f))
    except (OSError, ValueError):
        return False


# --------------------------------------------------------------------------------------
# Prompts
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Prompt:
    """How a source becomes a causal policy's prompt.

    ``kind="text"``: ``template`` with ``{source}`` replaced, tokenized with the tokenizer's
    special tokens (a BOS token is put first when the tokenizer has one). ``kind="chat"``:
    one user message (``template`` with ``{source}`` replaced) through the tokenizer's chat
    template with the generation prompt.
    """

    kind: str = "text"
    template: str = "{source}"

    def __post_init__(self):
        if self.kind not in ("text", "chat"):
            raise ValueError(f"prompt kind {self.kind!r}: use text or chat")
        if "{source}" not in self.template:
            raise ValueError(f"prompt template {self.template!r} has no {{source}} placeholder")

    def to_dict(self) -> dict:
        return {"kind": self.kind, "template": self.template}

    @classmethod
    def from_dict(cls, raw: dict) -> "Prompt":
        return cls(kind=raw.get("kind", "text"), template=raw.get("template", "{source}"))

    def text(self, tokenizer, source: str) -> str:
        filled = self.template.replace("{source}", source)
        if self.kind == "chat":
            return tokenizer.apply_chat_template([{"role": "user", "content": filled}], tokenize=False,
                                                 add_generation_prompt=True)
        return filled

    def ids(self, tokenizer, source: str) -> list[int]:
        """The prompt's token ids: BOS (when the tokenizer has one) + prompt, never an EOS at the end."""
        if self.kind == "chat":  # the chat template writes its own special tokens
            return list(tokenizer(self.text(tokenizer, source), add_special_tokens=False)["input_ids"])
        ids = list(tokenizer(self.text(tokenizer, source), add_special_tokens=True)["input_ids"])
        eos = tokenizer.eos_token_id
        while ids and eos is not None and ids[-1] == eos:  # a post-processor that closes every sequence
            ids.pop()
        bos = tokenizer.bos_token_id
        if bos is not None and (not ids or ids[0] != bos):
            ids.insert(0, bos)
        return ids


def resolve_prompt(setting: str, tokenizer=None) -> Prompt:
    """The :class:`Prompt` of a ``bootstrap.prompt`` setting (see the module docstring)."""
    has_chat = bool(getattr(tokenizer, "chat_template", None))
    if setting == "auto":
        setting = "chat" if has_chat else "translation"
    if setting == "translation":
        return Prompt("text", TRANSLATION_TEMPLATE)
    if setting == "source":
        return Prompt("text", "{source}")
    if setting == "chat":
        if tokenizer is not None and not has_chat:
            raise ValueError("bootstrap.prompt=chat: the tokenizer has no chat template; use translation, source "
                             "or a template holding {source}")
        return Prompt("chat", CHAT_INSTRUCTION)
    if "{source}" in setting:
        return Prompt("text", setting)
    raise ValueError(f"bootstrap.prompt={setting!r}: use one of {', '.join(PROMPT_SETTINGS)} or a template "
                     "holding {source}")


def prompt_of(model, tokenizer) -> Prompt:
    """The prompt a loaded causal model was trained with (the ``auto`` one for a foreign model)."""
    p = getattr(model, ATTRIBUTE, None)
    return p if isinstance(p, Prompt) else resolve_prompt("auto", tokenizer)


def set_prompt(model, prompt: Prompt) -> None:
    # A plain attribute (not a parameter): it travels with the object, and save_policy
    # writes it into rest_policy.json (see info_with_prompt).
    object.__setattr__(model, ATTRIBUTE, prompt)


def info_with_prompt(model, info: dict) -> dict:
    """``info`` plus the model's prompt (the lineage every later step reads it from)."""
    p = getattr(model, ATTRIBUTE, None)
    if isinstance(p, Prompt):
        return {**info, PROMPT_KEY: p.to_dict()}
    return info


def record_prompt(policy_dir: str, setting: str, trust_remote_code: bool = False) -> dict | None:
    """Write the prompt of ``setting`` into a causal policy directory's lineage (``auto`` keeps a
    recorded one). Returns the prompt written or kept, None for a seq2seq policy."""
    from transformers import AutoTokenizer

    if not is_causal_dir(policy_dir):
        return None
    info = policy_info(policy_dir)
    if setting == "auto" and PROMPT_KEY in info:
        return info[PROMPT_KEY]
    tokenizer = AutoTokenizer.from_pretrained(policy_dir, trust_remote_code=trust_remote_code)
    info[PROMPT_KEY] = resolve_prompt(setting, tokenizer).to_dict()
    with open(os.path.join(policy_dir, POLICY_INFO), "w", encoding="utf-8") as f:
        json.dump(info, f, indent=2, sort_keys=True)
    return info[PROMPT_KEY]


# --------------------------------------------------------------------------------------
# Loading and building
# --------------------------------------------------------------------------------------
def load(path: str, trust_remote_code: bool = False):
    """(model, tokenizer) of a causal policy directory; the model carries its prompt."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(path, use_safetensors=True, trust_remote_code=trust_remote_code)
    model.eval()
    raw = policy_info(path).get(PROMPT_KEY)
    set_prompt(model, Prompt.from_dict(raw) if raw else resolve_prompt("auto", tokenizer))
    return model, tokenizer


def bpe_tokenizer(texts, vocab_size: int):
    """A BPE tokenizer for a from-scratch causal policy: the project's joint BPE, with BOS first
    (not the seq2seq tokenizer's closing ``</s>``: a prompt must not end the sequence)."""
    from tokenizers import processors

    tok = train_tokenizer(texts, vocab_size)
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tok.bos_token_id)])
    return tok


def char_tokenizer(texts):
    """A character-level tokenizer over every character of ``texts`` (plus ``<pad> <s> </s> <unk>``)."""
    chars = sorted({c for t in texts for c in t})
    return build_char_tokenizer("".join(chars))


def build_model(tokenizer, d_model: int, ffn_dim: int, layers: int, heads: int, dropout: float, seed: int,
                max_positions: int = 256):
    """A tiny Llama-style decoder (pre-RMSNorm, SwiGLU, rotary positions: no learned position
    table that ends at the longest training sequence) with tied embeddings."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=d_model, intermediate_size=ffn_dim, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=max_positions,
        attention_dropout=dropout, tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


# --------------------------------------------------------------------------------------
# Training: prompt + completion, loss on the completion only
# --------------------------------------------------------------------------------------
def encode_pairs(model, tokenizer, rows: Sequence[dict]) -> tuple[list[list[int]], list[list[int]]]:
    """(prompt ids, completion ids + EOS) of every training row."""
    prompt = prompt_of(model, tokenizer)
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("a causal policy's tokenizer needs an EOS token (it ends every completion)")
    prompts = [prompt.ids(tokenizer, r["source"]) for r in rows]
    targets = tokenizer([r["target"] for r in rows], add_special_tokens=False, verbose=False)["input_ids"]
    return prompts, [list(t) + [eos] for t in targets]


def collate(src_ids, tgt_ids, weights, batch, pad_id, start_id=None):
    """Right-padded prompt+completion rows, shifted for next-token prediction.

    Returns ``(input_ids, attention_mask, None, labels, weights)`` in the seq2seq collate's
    shape (no decoder input): ``labels[t]`` is the token after position ``t``, -100 where that
    token is part of the prompt or padding, so only completion tokens (and EOS) are learned.
    """
    pad = 0 if pad_id is None else pad_id
    seqs = [src_ids[i] + tgt_ids[i] for i in batch]
    width = max(len(s) for s in seqs) - 1
    input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
    attn = torch.zeros((len(batch), width), dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    for row, (i, seq) in enumerate(zip(batch, seqs)):
        n = len(seq) - 1
        input_ids[row, :n] = torch.tensor(seq[:-1])
        attn[row, :n] = 1
        p = len(src_ids[i])
        labels[row, p - 1:n] = torch.tensor(seq[p:])
    w = torch.tensor([weights[i] for i in batch], dtype=torch.float) if weights is not None else None
    return input_ids, attn, None, labels, w


# --------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------
def stop_ids(model, tokenizer) -> list[int]:
    """Token ids that end a completion: the tokenizer's EOS and the generation config's."""
    ids = []
    gc_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for v in [tokenizer.eos_token_id] + (gc_eos if isinstance(gc_eos, list) else [gc_eos]):
        if v is not None and v not in ids:
            ids.append(int(v))
    return ids


def _prompts(model, tokenizer, sources, what):
    """Prompt ids (cut to fit the position table), source token counts, and the model's limit."""
    prompt = prompt_of(model, tokenizer)
    prompts = [prompt.ids(tokenizer, s) for s in sources]
    src_lens = [len(x) for x in tokenizer(list(sources), add_special_tokens=False, verbose=False)["input_ids"]]
    limit = max_tokens(model, tokenizer)
    if limit is not None:
        room = max(1, limit - 8)  # leave a few positions to generate into
        report_truncation([len(p) for p in prompts], room, what)
        prompts = [p[:room] for p in prompts]
    return prompts, src_lens, limit


def _max_new(src_lens, batch, ratio, limit, prompt_len) -> int:
    new = int(max(src_lens[i] for i in batch) * ratio) + 10
    if limit is not None:
        new = min(new, max(1, limit - prompt_len))
    return new


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) with every prompt right-aligned: the next token of every row
    is generated at the same position."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, p in enumerate(prompts):
        if p:
            ids[row, width - len(p):] = torch.tensor(list(p))
            attn[row, width - len(p):] = 1
    return ids, attn


def _decode(tokenizer, ids, stops) -> str:
    ids = list(ids)
    for k, t in enumerate(ids):
        if t in stops:
            ids = ids[:k]
            break
    return tokenizer.decode(ids, skip_special_tokens=True).strip()


@torch.inference_mode()
def generate(model, tokenizer, sources: Sequence[str], *, mode: str = "greedy", num_return: int = 1,
             temperature: float = 1.0, top_k: int = 0, beam_size: int = 4, batch_sentences: int = 64,
             max_length_ratio: float = 2.0, seed: int = 0, progress: str | None = None) -> list[list[str]]:
    """``rest.model.policy.generate`` for a causal policy (Hugging Face ``generate()``, left padding)."""
    if not sources:
        return []
    model.eval()
    prompts, src_lens, limit = _prompts(model, tokenizer, sources, progress or "generate")
    stops = stop_ids(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    device = next(model.parameters()).device
    k = num_return if mode != "greedy" else 1
    per_batch = max(1, batch_sentences // num_return) if mode == "sample" and num_return > 1 else batch_sentences
    out: list[list[str] | None] = [None] * len(sources)
    shown = Progress(progress, len(sources), k, logger=log)
    for batch in length_buckets([len(p) for p in prompts], per_batch):
        input_ids, attn = left_pad([prompts[i] for i in batch], pad)
        input_ids, attn = input_ids.to(device), attn.to(device)
        width = input_ids.shape[1]
        kwargs = dict(max_new_tokens=_max_new(src_lens, batch, max_length_ratio, limit, width), max_length=None,
                      eos_token_id=stops, pad_token_id=pad)
        if mode == "sample":
            torch.manual_seed(seed * 1_000_003 + batch[0])
        kwargs.update(hf_search(mode, num_return, temperature, top_k, beam_size))
        ids = model.generate(input_ids=input_ids, attention_mask=attn, **kwargs)[:, width:]
        for j, i in enumerate(batch):
            out[i] = [_decode(tokenizer, ids[j * k + h].tolist(), stops) for h in range(k)]
        shown.add(len(batch))
    return out  # type: ignore[return-value]


# CTranslate2 ---------------------------------------------------------------------------
_CT2 = Ct2Cache("rest-ct2-causal-", "the causal policy", log)
_CT2_UNSUPPORTED: set[str] = set()


def ct2_supported(model) -> bool:
    """Whether CTranslate2's converter knows the model's family (and the model is a plain one)."""
    try:
        from ctranslate2.converters import transformers as ct2t
    except ImportError:
        return False
    name = model.config.__class__.__name__
    return (name in ct2t._MODEL_LOADERS and name not in _CT2_UNSUPPORTED
            and not hasattr(model, "peft_config"))  # a LoRA wrapper: the HF path runs its adapters


def ct2_dir(model, tokenizer) -> str:
    """A directory holding the CTranslate2 conversion of the model's current weights (cached)."""
    from ctranslate2.converters import transformers as ct2t

    def convert(path: str) -> None:
        loader = ct2t._MODEL_LOADERS[model.config.__class__.__name__]
        # The converter frees each layer's modules as it goes (and reads host memory): convert a
        # CPU copy, keep the policy.
        host = copy.deepcopy(model) if model_device(model).type == "cpu" else host_copy(model)
        with torch.no_grad(), _without_gc_collect(ct2t):
            spec = loader(host, tokenizer)
        spec.validate()
        spec.optimize(quantization=None)  # float32: the same numbers as the torch model
        spec.save(path)

    return _CT2.converted(model, convert)


class _NoCollect:
    """Stands for the ``gc`` module inside the converter: its loaders call ``gc.collect()`` after
    every layer to free the converted layer, which costs ~1 s per layer in a process holding
    torch and transformers, while freeing nothing worth it for the copy converted here."""

    @staticmethod
    def collect(*args, **kwargs) -> int:
        return 0


@contextlib.contextmanager
def _without_gc_collect(module):
    saved = getattr(module, "gc", None)
    if saved is None:
        yield
        return
    module.gc = _NoCollect()
    try:
        yield
    finally:
        module.gc = saved


def _generator(path: str, seed: int | None, model, compute_type: str = "default"):
    """A ``ctranslate2.Generator`` on the model's device; a seeded one is fresh (it picks the
    global seed up when its worker starts), an unseeded one (greedy, beam) is reused."""
    return _CT2.runner("Generator", path, model, seed=seed, compute_type=compute_type)


def generate_ct2(model, tokenizer, sources: Sequence[str], *, mode: str = "greedy", num_return: int = 1,
                 temperature: float = 1.0, top_k: int = 0, beam_size: int = 4, batch_sentences: int = 64,
                 max_length_ratio: float = 2.0, seed: int = 0, progress: str | None = None,
                 compute_type: str = "default") -> list[list[str]]:
    """:func:`generate` run by CTranslate2's ``Generator`` (same arguments, output and order), on the
    device the model's weights are on, with CTranslate2's ``compute_type`` there.

    Sampling is seeded per length bucket from ``seed`` (the same call gives the same samples);
    its random stream differs from torch's. Families the converter does not know, and LoRA
    wrappers, run through :func:`generate`.
    """
    args = dict(mode=mode, num_return=num_return, temperature=temperature, top_k=top_k, beam_size=beam_size,
                batch_sentences=batch_sentences, max_length_ratio=max_length_ratio, seed=seed, progress=progress)
    if not sources:
        return []
    if not ct2_supported(model):
        return generate(model, tokenizer, sources, **args)
    try:
        path = ct2_dir(model, tokenizer)
    except (NotImplementedError, ValueError, KeyError, AttributeError, TypeError) as e:
        name = model.config.__class__.__name__
        _CT2_UNSUPPORTED.add(name)
        log.warning("ctranslate2 cannot run %s (%s); using Hugging Face generate()", name, e)
        return generate(model, tokenizer, sources, **args)
    prompts, src_lens, limit = _prompts(model, tokenizer, sources, progress or "generate")
    tokens = [tokenizer.convert_ids_to_tokens(p) for p in prompts]
    stops = stop_ids(model, tokenizer)
    k = num_return if mode != "greedy" else 1
    per_batch = max(16, max(1, batch_sentences // k) if mode == "sample" else batch_sentences)
    out: list[list[str] | None] = [None] * len(sources)
    shown = Progress(progress, len(sources), k, " (ctranslate2)", logger=log)
    generator = None if mode == "sample" else _generator(path, None, model, compute_type)
    for batch in length_buckets([len(p) for p in prompts], per_batch):
        width = max(len(prompts[i]) for i in batch)
        kwargs = dict(max_length=_max_new(src_lens, batch, max_length_ratio, limit, width), min_length=0,
                      include_prompt_in_result=False, end_token=stops, max_batch_size=0)
        if mode == "sample":
            generator = _generator(path, seed * 1_000_003 + batch[0], model, compute_type)
        kwargs.update(ct2_search(mode, num_return, temperature, top_k, beam_size))
        results = generator.generate_batch([tokens[i] for i in batch], **kwargs)
        for i, res in zip(batch, results):
            out[i] = [_decode(tokenizer, seq, stops) for seq in res.sequences_ids[:k]]
        shown.add(len(batch))
    return out  # type: ignore[return-value]
