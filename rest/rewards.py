"""Rewards R(x, y) in [0, 1]: a name→function registry, a dotted-path hook, a learned model.

A reward function takes parallel lists and returns one float per candidate::

    def my_reward(sources: list[str], candidates: list[str], references: list[str]) -> list[float]

Register it with :func:`register`, or name it as ``"package.module:function"`` in
``score.reward`` (that imports and runs the code, so it needs ``score.allow_code_reward``).
"""
from __future__ import annotations

import importlib
from typing import Callable, Sequence

RewardFn = Callable[[Sequence[str], Sequence[str], Sequence[str]], list[float]]
_REGISTRY: dict[str, RewardFn] = {}


class RewardError(ValueError):
    """Unknown reward name, a dotted path that does not import, or a bad return value."""


def register(name: str):
    """Decorator: make a reward function available under ``name``."""
    def wrap(fn: RewardFn) -> RewardFn:
        _REGISTRY[name] = fn
        return fn
    return wrap


@register("chrf")
def chrf_reward(sources, candidates, references) -> list[float]:
    """Sentence chrF (sacrebleu, character 6-grams, beta 2) against the reference, in [0, 1]."""
    from sacrebleu.metrics import CHRF

    metric = CHRF()
    return [metric.sentence_score(c, [r]).score / 100.0 for c, r in zip(candidates, references)]


@register("bleu")
def bleu_reward(sources, candidates, references) -> list[float]:
    """Sentence BLEU (sacrebleu, effective order) against the reference, in [0, 1]."""
    from sacrebleu.metrics import BLEU

    metric = BLEU(effective_order=True)
    return [metric.sentence_score(c, [r]).score / 100.0 for c, r in zip(candidates, references)]


def names() -> list[str]:
    return sorted(_REGISTRY) + ["reward_model"]


def other_metric(reward: str) -> str:
    """The held-out metric to watch beside a training reward (chrF ↔ BLEU)."""
    return "bleu" if reward == "chrf" else "chrf"


def get_reward(name: str, reward_model_path: str = "", allow_code: bool = False) -> RewardFn:
    """Resolve a reward by registry name, ``reward_model`` or ``module:function``."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name == "reward_model":
        return LearnedReward(reward_model_path)
    if ":" in name:
        if not allow_code:
            raise RewardError(f"reward {name!r} is a dotted path that runs code; "
                              "set score.allow_code_reward=true to allow it")
        module_name, _, attr = name.partition(":")
        try:
            fn = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as e:
            raise RewardError(f"reward {name!r} does not import: {e}") from None
        if not callable(fn):
            raise RewardError(f"reward {name!r} is not callable")
        return fn
    raise RewardError(f"unknown reward {name!r}; known: {', '.join(names())} or 'module:function'")


def compute(fn: RewardFn, sources, candidates, references) -> list[float]:
    """Call ``fn`` and check it returned one finite number per candidate."""
    values = list(fn(sources, candidates, references))
    if len(values) != len(candidates):
        raise RewardError(f"reward returned {len(values)} values for {len(candidates)} candidates")
    out = []
    for v in values:
        v = float(v)
        if v != v or v in (float("inf"), float("-inf")):
            raise RewardError(f"reward returned a non-finite value {v}")
        out.append(v)
    return out


class LearnedReward:
    """A Hugging Face sequence-classification model scoring (source, candidate) pairs.

    Reference-free: the reference is ignored, so sources without a translation can be
    scored. The model's single logit is squashed to [0, 1] with a sigmoid unless the model
    was trained as a regressor on [0, 1] targets (``problem_type == "regression"``).
    """

    def __init__(self, path: str, batch_size: int = 128):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from .policy import check_policy_dir

        check_policy_dir(path)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForSequenceClassification.from_pretrained(path, use_safetensors=True).eval()
        self.batch_size = batch_size
        self._torch = torch

    def __call__(self, sources, candidates, references=None) -> list[float]:
        torch = self._torch
        out: list[float] = []
        with torch.inference_mode():
            for k in range(0, len(candidates), self.batch_size):
                enc = self.tokenizer(list(sources[k:k + self.batch_size]), list(candidates[k:k + self.batch_size]),
                                     return_tensors="pt", padding=True, truncation=True, max_length=256)
                logits = self.model(**enc).logits[:, 0]
                if self.model.config.problem_type == "regression":
                    logits = logits.clamp(0.0, 1.0)
                else:
                    logits = torch.sigmoid(logits)
                out.extend(logits.tolist())
        return out
