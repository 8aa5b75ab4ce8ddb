"""What every reward shares: its call signature and its error.

Its own module so that the registry (:mod:`rest.rewards.metrics`) and the learned reward
(:mod:`rest.rewards.reward_model`) can both use them without importing each other.
"""
from __future__ import annotations

from typing import Callable, Sequence

RewardFn = Callable[[Sequence[str], Sequence[str], Sequence[str]], list[float]]


class RewardError(ValueError):
    """Unknown reward name, a dotted path that does not import, or a bad return value."""
