from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from ._image import COMPONENT


@dsl.component(**COMPONENT)
def score_op(config: dict, grow_step: int, grown: Input[Dataset], scored: Output[Dataset],
             reward_model: Input[Model] = None):
    """Score every candidate of the grown set once with the reward (a learned one when ``reward_model`` is given)."""
    from rest.runtime import score_config, step
    from rest.score import score

    cfg = score_config(config, reward_model)
    with step("score", g=grow_step) as s:
        stats = score(grown.path, cfg, scored.path)
        scored.metadata.update({"rows": stats["rows"], "mean_reward": stats["mean_reward"], "reward": cfg.reward})
        s.metric(mean_reward=stats["mean_reward"], std_reward=stats["std_reward"], scored_rows=stats["rows"])
        s.publish(scored.path, "scored", scored)
