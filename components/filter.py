from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from ._image import COMPONENT


@dsl.component(**COMPONENT)
def filter_op(config: dict, grow_step: int, improve_step: int, scored: Input[Dataset], filtered: Output[Dataset]):
    """Keep the candidates whose reward passes Improve step ``improve_step``'s threshold."""
    from rest.config import FilterConfig, section_from_dict
    from rest.filter import filter_scored
    from rest.runtime import step

    cfg = section_from_dict(FilterConfig, config, "filter")
    with step("filter", g=grow_step, i=improve_step) as s:
        stats = filter_scored(scored.path, cfg, improve_step, filtered.path)
        filtered.metadata.update({k: stats[k] for k in ("threshold", "threshold_used", "kept", "total",
                                                        "kept_fraction", "mean_reward_kept", "mean_reward_all")})
        s.metric(**{k: stats[k] for k in ("threshold_used", "kept", "kept_fraction", "mean_reward_kept",
                                          "mean_reward_all")})
        s.publish(filtered.path, "filtered", filtered)
