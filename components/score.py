from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from ._image import COMPONENT


@dsl.component(**COMPONENT)
def score_op(config: dict, grow_step: int, grown: Input[Dataset], scored: Output[Dataset],
             reward_model: Input[Model] = None):
    """Score every candidate of the grown set once with the reward (a learned one when ``reward_model`` is given)."""
    from dataclasses import replace

    from rest.config import ScoreConfig, section_from_dict
    from rest.runtime import step
    from rest.score import score

    cfg = section_from_dict(ScoreConfig, config, "score")
    if reward_model is not None:  # trained earlier in this run
        cfg = replace(cfg, reward_model_path=reward_model.path)
    with step("score", g=grow_step) as s:
        stats = score(grown.path, cfg, scored.path)
        scored.metadata.update({"rows": stats["rows"], "mean_reward": stats["mean_reward"], "reward": cfg.reward})
        s.metric(mean_reward=stats["mean_reward"], std_reward=stats["std_reward"], scored_rows=stats["rows"])
        s.publish(scored.path, "scored", scored)
