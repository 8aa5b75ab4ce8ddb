"""Rewards R(x, y) in [0, 1]: a name→function registry, a dotted-path hook, a learned model.

A reward function takes parallel lists and returns one float per candidate::

    def my_reward(sources: list[str], candidates: list[str], references: list[str]) -> list[float]

Register it with :func:`register`, or name it as ``"package.module:function"`` in
``score.reward`` (that imports and runs the code, so it needs ``score.allow_code_reward``).
"""
from __future__ import annotations

import functools
import importlib

from rest.rewards.base import RewardError, RewardFn
from rest.rewards.reward_model import LearnedReward

__all__ = ["BINARY_REWARDS", "LearnedReward", "RewardError", "RewardFn", "compute", "get_reward", "is_binary",
           "names", "other_metric", "register", "reward_options"]

_REGISTRY: dict[str, RewardFn] = {}


def register(name: str):
    """Decorator: make a reward function available under ``name``."""
    def wrap(fn: RewardFn) -> RewardFn:
        _REGISTRY[name] = fn
        return fn
    return wrap


def _sentence_chrf(candidates, references, beta: int) -> list[float]:
    from sacrebleu.metrics import CHRF

    metric = CHRF(beta=beta)
    return [metric.sentence_score(c, [r]).score / 100.0 for c, r in zip(candidates, references)]


@register("chrf")
def chrf_reward(sources, candidates, references) -> list[float]:
    """Sentence chrF (sacrebleu, character 6-grams, beta 2) against the reference, in [0, 1]."""
    return _sentence_chrf(candidates, references, beta=2)


@register("chrf1")
def chrf1_reward(sources, candidates, references) -> list[float]:
    """Sentence chrF with beta 1 (character 6-grams, precision and recall weighted equally), in [0, 1].

    chrF's default beta 2 weighs recall twice precision, so among a source's samples it prefers the
    longer ones: picking the best of 8 by it lengthened the translations (test length ratio 1.05 ->
    1.14 after one Improve step) and cost BLEU. With beta 1 a translation earns nothing for length.
    """
    return _sentence_chrf(candidates, references, beta=1)


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
    return "bleu" if reward in ("chrf", "chrf1") else "chrf"


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
