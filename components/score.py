from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from ._image import COMPONENT


@dsl.component(**COMPONENT)
def score_op(config: dict, grow_step: int, grown: Input[Dataset], scored: Output[Dataset],
             reward_model: Input[Model] = None):
    """Score every candidate of the grown set once with the reward (a learned one when ``reward_model`` is given)."""
    import os

    from rest.services.files import read_json
    from rest_kfp.runtime import score_config, step
    from rest.steps.score import score

    cfg = score_config(config, reward_model)
    with step("score", g=grow_step) as s:
        stats = score(grown.path, cfg, scored.path)
        scored.metadata.update({"rows": stats["rows"], "mean_reward": stats["mean_reward"], "reward": cfg.reward})
        # Grow's sampling time rides along to the run's summary, which never sees the grown set.
        grown_stats = os.path.join(grown.path, "stats.json")
        if os.path.isfile(grown_stats):
            scored.metadata["sample_wall_s"] = read_json(grown_stats).get("wall_s")
        s.metric(mean_reward=stats["mean_reward"], std_reward=stats["std_reward"], scored_rows=stats["rows"])
        s.device(stats, scored)
        s.publish(scored.path, "scored", scored)
