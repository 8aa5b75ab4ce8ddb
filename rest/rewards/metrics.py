"""Rewards R(x, y) in [0, 1]: a name→function registry, a dotted-path hook, a learned model.

A reward function takes parallel lists and returns one float per candidate::

    def my_reward(sources: list[str], candidates: list[str], references: list[str]) -> list[float]

Register it with :func:`register`, or name it as ``"package.module:function"`` in
``score.reward`` (that imports and runs the code, so it needs ``score.allow_code_reward``).
"""
from __future__ import annotations

import functools
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


#: Verifiable rewards: 1.0 when the candidate checks out against its reference, else 0.0, so
#: their mean is an accuracy (pass@1). rest.rewards.verifiable has them with reasons.
BINARY_REWARDS = ("exact_match", "numeric", "regex", "python_tests", "arithmetic")


def _verifiable(name: str) -> RewardFn:
    def reward(sources, candidates, references, **options) -> list[float]:
        from rest.rewards import verifiable

        if name == "python_tests" and "wall_seconds" in options:  # the one sandbox limit a run config sets
            from rest.rewards.sandbox import SandboxConfig

            wall = float(options.pop("wall_seconds"))
            options["config"] = SandboxConfig(wall_seconds=wall, cpu_seconds=max(1, min(5, int(wall))))
        return verifiable.REWARDS[name][0](sources, candidates, references, **options)

    reward.__name__ = reward.__qualname__ = name
    reward.__doc__ = f"Verifiable reward {name!r} (1 or 0); see rest.rewards.verifiable.{name}."
    reward.binary = True
    return reward


for _name in BINARY_REWARDS[:-1]:
    register(_name)(_verifiable(_name))


@register("arithmetic")
def arithmetic_reward(sources, candidates, references) -> list[float]:
    """The bundled addition task: 1.0 when the answer after ``|`` is right and working is shown
    (rest.tasks.arithmetic.check)."""
    from rest.tasks.arithmetic import reward

    return reward(sources, candidates, references)


arithmetic_reward.binary = True


def is_binary(name: str) -> bool:
    """A verifiable (0/1) reward: its mean is an accuracy."""
    return name in BINARY_REWARDS


def reward_options(name: str, score_cfg) -> dict:
    """The options a run's ``score`` section gives the reward called ``name`` (empty for most)."""
    if name == "exact_match":
        return {"case_sensitive": score_cfg.case_sensitive}
    if name == "numeric":
        return {"rel_tol": score_cfg.numeric_rel_tol}
    if name == "regex" and score_cfg.regex_pattern:
        return {"pattern": score_cfg.regex_pattern}
    if name == "python_tests":
        return {"wall_seconds": score_cfg.sandbox_wall_seconds}
    return {}


def names() -> list[str]:
    return sorted(_REGISTRY) + ["reward_model"]


def other_metric(reward: str) -> str:
    """The held-out metric to watch beside a training reward (chrF ↔ BLEU)."""
    return "bleu" if reward == "chrf" else "chrf"


def get_reward(name: str, reward_model_path: str = "", allow_code: bool = False,
               options: dict | None = None) -> RewardFn:
    """Resolve a reward by registry name, ``reward_model`` or ``module:function``.

    ``options`` are bound as keyword arguments (e.g. ``{"rel_tol": 1e-3}`` for ``numeric``).
    """
    if name in _REGISTRY:
        fn = _REGISTRY[name]
        if options:
            bound = functools.partial(fn, **options)
            functools.update_wrapper(bound, fn)
            return bound
        return fn
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

        from rest.model.policy import resolve_policy
        from rest.model.policy import check_policy_dir
        from rest.rewards.learned import read_info

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
        from rest.model.device import resolve

        self.device = resolve(device, where)
        self.model.to(self.device)
        return self.device

    def _inputs(self, sources, candidates) -> list[tuple[list[int], dict]]:
        """(candidate indices, model inputs) per batch."""
        if self.info is not None:
            from rest.rewards.learned import collate, encode_pairs, length_batches

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
