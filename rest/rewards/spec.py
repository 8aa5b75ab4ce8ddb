"""The reward of a run, said once: what scores candidates, what watches it, what to do on hacking.

Every step that needs a reward — score, filter (through the scored set), finetune and the
control, evaluate, bootstrap's checkpoint rule, the registry's comparison — takes one
:class:`RewardSpec`, built once from the run's ``score`` and ``loop`` sections by
:meth:`RewardSpec.from_config`. :func:`is_reward_hacking` is the one rule for "the
training reward rose while a held-out metric fell", used by finetune's guard, the run
summary and the benchmarks.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from rest.config import LoopConfig
from rest.rewards.metrics import get_reward, is_binary, reward_options

# Tolerances of the one rule, by the held-out metric's scale. A sentence-level metric in
# [0, 1] (the true metric beside the training reward) falls when it drops by more than
# loop.hacking_tolerance (default below); corpus BLEU / chrF in points (0-100) by more than
# half a point, about the run-to-run noise of the default run's test BLEU.
TRUE_METRIC_TOLERANCE: float = LoopConfig.hacking_tolerance
POINTS_TOLERANCE: float = 0.5
# Rewards that compare a candidate with its reference (sentence-level sacrebleu).
REFERENCE_METRICS = ("chrf", "chrf1", "bleu")


def is_reward_hacking(reward_before: float | None, reward_after: float | None, metric_before: float | None,
                      metric_after: float | None, tolerance: float = TRUE_METRIC_TOLERANCE) -> bool:
    """The training reward rose while the held-out metric fell by more than ``tolerance``.

    Missing values (no separate true metric) never count as hacking.
    """
    if None in (reward_before, reward_after, metric_before, metric_after):
        return False
    return reward_after > reward_before and metric_after < metric_before - tolerance


@dataclass(frozen=True)
class RewardSpec:
    """The training reward, the reference-based true metric beside it, and what to do on reward hacking."""

    reward: str = "chrf"
    reward_model_path: str = ""
    allow_code_reward: bool = False
    true_metric: str = ""            # "" or equal to reward: no separate true metric, no guard
    on_reward_hacking: str = "warn"  # warn | rollback | stop
    hacking_tolerance: float = TRUE_METRIC_TOLERANCE
    options: tuple = ()              # (name, value) pairs bound to the reward (score.numeric_rel_tol, ...)

    @classmethod
    def from_config(cls, score_cfg, loop_cfg: LoopConfig | None = None, **guard) -> "RewardSpec":
        """From the run's ``score`` section (and ``loop``'s guard settings, or ``guard`` keywords:
        on_reward_hacking, hacking_tolerance)."""
        if loop_cfg is not None:
            guard = {"on_reward_hacking": loop_cfg.on_reward_hacking,
                     "hacking_tolerance": loop_cfg.hacking_tolerance, **guard}
        options = tuple(sorted(reward_options(score_cfg.reward, score_cfg).items()))
        return cls(reward=score_cfg.reward, reward_model_path=score_cfg.reward_model_path,
                   allow_code_reward=score_cfg.allow_code_reward, true_metric=score_cfg.true_metric,
                   options=options, **guard)

    @classmethod
    def of(cls, reward: "RewardSpec | str") -> "RewardSpec":
        """A spec as given, or the spec of a plain reward name (``"chrf"``)."""
        return reward if isinstance(reward, RewardSpec) else cls(reward=reward)

    def with_model(self, path: str) -> "RewardSpec":
        """The same spec scoring with the learned reward model at ``path``."""
        return replace(self, reward_model_path=path)

    @property
    def reference_metric(self) -> str:
        """The reference-based metric that picks BC's checkpoints and decides promotion in the
        registry: the reward itself when it compares with the references (a verifiable reward checks
        against them too), else the true metric."""
        if self.reward in REFERENCE_METRICS or is_binary(self.reward):
            return self.reward
        return self.true_metric if self.true_metric in REFERENCE_METRICS else "chrf"

    @property
    def has_true_metric(self) -> bool:
        return bool(self.true_metric) and self.true_metric not in ("none", self.reward)

    def functions(self):
        """(training reward function, true metric function or None)."""
        fn = get_reward(self.reward, self.reward_model_path, self.allow_code_reward, options=dict(self.options))
        true = get_reward(self.true_metric) if self.has_true_metric else None
        return fn, true
