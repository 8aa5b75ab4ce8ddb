"""The learned reward: load a reward model and score (source, candidate) pairs with it.

This is what ``get_reward("reward_model", path)`` returns (:class:`LearnedReward`), and the
one pair encoding (:func:`encode_pairs` + :func:`collate`) that serves scoring and
training alike, so a saved model is scored exactly as it was trained::

    [<s>] source [</s>] candidate [</s>]      token_type_ids 0 … 0 1 … 1

Training the model (data, loop, calibration plot, stats) is :mod:`rest.rewards.learned`;
it imports this module, never the other way round.
"""
from __future__ import annotations

import json
import os
import random
from typing import Sequence

from rest.model.device import resolve
from rest.rewards.base import RewardError

INFO_FILE = "rest_reward_model.json"   # beside the weights: what the model predicts and how pairs are encoded
ENCODING = "rest-pair-v1"


# --------------------------------------------------------------------------- pair encoding

def pair_special_ids(tokenizer) -> dict[str, int]:
    """The start, separator and padding ids of a tokenizer (``<s>``/``[CLS]``, ``</s>``/``[SEP]``)."""
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.cls_token_id
    sep = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    if start is None:  # T5 and Marian tokenizers have neither <s> nor [CLS]: </s> opens the pair too
        start = sep
    pad = tokenizer.pad_token_id
    missing = [n for n, v in (("start (bos/cls)", start), ("separator (eos/sep)", sep), ("pad", pad)) if v is None]
    if missing:
        raise ValueError(f"the reward model's tokenizer has no {', '.join(missing)} token; pairs cannot be encoded")
    return {"start_id": int(start), "sep_id": int(sep), "pad_id": int(pad)}


def _fit(ls: int, lc: int, budget: int) -> tuple[int, int]:
    """Lengths of source and candidate kept within ``budget`` tokens, cutting the longer side first."""
    if ls + lc <= budget:
        return ls, lc
    half = budget // 2
    if ls <= half:
        return ls, budget - ls
    if lc <= half:
        return budget - lc, lc
    # Both long: split evenly, the longer side gets the odd token.
    return (budget - half, half) if ls >= lc else (half, budget - half)


def encode_pairs(tokenizer, sources: Sequence[str], candidates: Sequence[str],
                 max_length: int) -> list[tuple[list[int], list[int]]]:
    """``(input_ids, token_type_ids)`` per pair: ``<s> source </s> candidate </s>``, at most ``max_length``."""
    if len(sources) != len(candidates):
        raise ValueError(f"encode_pairs: {len(sources)} sources for {len(candidates)} candidates")
    if max_length < 4:
        raise ValueError(f"encode_pairs: max_length {max_length} leaves no room for the pair")
    sp = pair_special_ids(tokenizer)
    src = tokenizer(list(sources), add_special_tokens=False)["input_ids"]
    # Candidates are target-language text: a Marian policy's tokenizer segments them with its target model.
    cand = tokenizer(text_target=list(candidates), add_special_tokens=False)["input_ids"]
    out = []
    for s, c in zip(src, cand):
        ls, lc = _fit(len(s), len(c), max_length - 3)
        ids = [sp["start_id"], *s[:ls], sp["sep_id"], *c[:lc], sp["sep_id"]]
        out.append((ids, [0] * (ls + 2) + [1] * (lc + 1)))
    return out


def collate(encoded: Sequence[tuple[list[int], list[int]]], batch: Sequence[int], pad_id: int,
            token_types: bool = True) -> dict:
    """Right-padded tensors (``input_ids``, ``token_type_ids``, ``attention_mask``) for one batch.

    ``token_types=False`` leaves out ``token_type_ids`` for models without segment
    embeddings (e.g. an mBART policy loaded as a classifier).
    """
    import torch

    width = max(len(encoded[i][0]) for i in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    types = torch.zeros((len(batch), width), dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, i in enumerate(batch):
        toks, tt = encoded[i]
        ids[row, :len(toks)] = torch.tensor(toks)
        types[row, :len(tt)] = torch.tensor(tt)
        mask[row, :len(toks)] = 1
    out = {"input_ids": ids, "attention_mask": mask}
    if token_types:
        out["token_type_ids"] = types
    return out


def accepts_token_types(model) -> bool:
    """Whether the model's forward takes ``token_type_ids`` (BERT does; mBART does not)."""
    import inspect

    return "token_type_ids" in inspect.signature(model.forward).parameters


def length_batches(lengths: Sequence[int], batch_size: int, rng: random.Random | None) -> list[list[int]]:
    """Batches of ``batch_size`` pairs of similar length (shuffled with ``rng``; sorted without)."""
    idx = list(range(len(lengths)))
    if rng is None:
        idx.sort(key=lambda i: (lengths[i], i))
        return [idx[k:k + batch_size] for k in range(0, len(idx), batch_size)]
    rng.shuffle(idx)
    # Sort within large random chunks: little padding, yet different batches every epoch.
    chunk = 50 * batch_size
    idx = [i for k in range(0, len(idx), chunk) for i in sorted(idx[k:k + chunk], key=lambda i: lengths[i])]
    batches = [idx[k:k + batch_size] for k in range(0, len(idx), batch_size)]
    rng.shuffle(batches)
    return batches


def read_info(path: str) -> dict | None:
    """The model's ``rest_reward_model.json`` (None for a foreign checkpoint)."""
    p = os.path.join(path, INFO_FILE)
    if not os.path.exists(p):
        return None
    with open(p, encoding="utf-8") as f:
        return json.load(f)


# --------------------------------------------------------------------------- scoring

class LearnedReward:
    """A Hugging Face sequence-classification model scoring (source, candidate) pairs.

    Reference-free: the reference is ignored, so sources without a translation can be
    scored. A model trained by :mod:`rest.rewards.learned` (it has ``rest_reward_model.json``)
    gets its pairs encoded exactly as in training; a foreign checkpoint gets its own
    tokenizer's pair encoding. The single logit is clamped to [0, 1] for a regressor
    (``problem_type == "regression"``) and squashed with a sigmoid otherwise. ``path`` may
    be an ``s3://`` prefix (downloaded like a policy).
    """

    reference_free = True

    def __init__(self, path: str, batch_size: int = 128, device: str = "auto"):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        # rest.model.policy imports torch at module level: only when a model is loaded.
        from rest.model.policy import check_policy_dir, resolve_policy

        if not path:
            raise RewardError("reward 'reward_model' needs the model directory (score.reward_model_path); "
                              "train one with `python -m rest reward-model`")
        path = resolve_policy(path) if path.startswith("s3://") else path
        check_policy_dir(path)
        self.path = path
        self.info = read_info(path)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForSequenceClassification.from_pretrained(path, use_safetensors=True,
                                                                        dtype=torch.float32).eval()
        self.batch_size = batch_size
        self._torch = torch
        self.place(device)

    def place(self, device: str = "auto", where: str = "score.device"):
        """Score on ``device`` (auto: a CUDA GPU when torch sees one, else the CPU); returns the device."""
        self.device = resolve(device, where)
        self.model.to(self.device)
        return self.device

    def _inputs(self, sources, candidates) -> list[tuple[list[int], dict]]:
        """(candidate indices, model inputs) per batch."""
        if self.info is not None:
            enc = self.info["encoding"]
            encoded = encode_pairs(self.tokenizer, sources, candidates, enc["max_length"])
            return [(b, collate(encoded, b, enc["pad_id"], enc.get("token_type_ids", True)))
                    for b in length_batches([len(e[0]) for e in encoded], self.batch_size, None)]
        return [(list(range(k, min(k + self.batch_size, len(candidates)))),
                 self.tokenizer(list(sources[k:k + self.batch_size]), list(candidates[k:k + self.batch_size]),
                                return_tensors="pt", padding=True, truncation=True, max_length=256))
                for k in range(0, len(candidates), self.batch_size)]

    def __call__(self, sources, candidates, references=None) -> list[float]:
        torch = self._torch
        if len(sources) != len(candidates):
            raise RewardError(f"reward_model: {len(sources)} sources for {len(candidates)} candidates")
        out = [0.0] * len(candidates)
        with torch.inference_mode():
            for batch, enc in self._inputs(list(sources), list(candidates)):
                logits = self.model(**{k: v.to(self.device) for k, v in enc.items()}).logits[:, 0].float()
                if self.model.config.problem_type == "regression":
                    logits = logits.clamp(0.0, 1.0)
                else:
                    logits = torch.sigmoid(logits)
                for i, v in zip(batch, logits.tolist()):
                    out[i] = v
        return out
