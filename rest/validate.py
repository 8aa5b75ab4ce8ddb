"""Checks that run before any compute: the config, the data files, the policy, the reward.

Each problem is one clear error naming the field or file (and line) and how to fix it.
"""
from __future__ import annotations

import dataclasses

from .config import ConfigError, RunConfig
from .rewards import get_reward


def validate_run(config: dict, train: str = "", valid: str = "", test: str = "", initial_policy: str | None = None,
                 check_data: bool = True) -> RunConfig:
    """Validate a whole run config (as a dict) plus the run's data and policy inputs."""
    cfg = RunConfig.from_dict(config)
    data = dataclasses.replace(cfg.data, train=train or cfg.data.train, valid=valid if valid is not None else cfg.data.valid,
                               test=test if test is not None else cfg.data.test)
    policy = cfg.bootstrap.policy if initial_policy is None else initial_policy
    get_reward(cfg.score.reward, cfg.score.reward_model_path, cfg.score.allow_code_reward)
    if policy and not policy.startswith(("s3://", "models:/")):
        from .policy import check_policy_dir

        check_policy_dir(policy)
    if check_data:
        from .data import load_pairs

        for name in ("train", "valid", "test"):
            uri = getattr(data, name)
            if uri:
                load_pairs(uri, data)
    if cfg.filter.mode == "percentile" and len(cfg.filter.percentiles) != len(cfg.filter.thresholds):
        raise ConfigError("filter.percentiles: give one per Improve step")
    return cfg
