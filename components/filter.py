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
        # What people would rather see than read: where τ_1..τ_i cut the reward distribution,
        # and the best / worst / borderline candidates behind the numbers.
        import json
        import os

        from rest.io import read_jsonl
        from rest.tracking import reward_histogram

        plot = reward_histogram((r["reward"] for r in read_jsonl(os.path.join(scored.path, "data.jsonl"))),
                                cfg.thresholds[:improve_step], os.path.join(filtered.path, "reward_histogram.png"),
                                title=f"Grow {grow_step}: reward of grown candidates")
        examples = os.path.join(filtered.path, "examples.json")
        with open(examples, "w", encoding="utf-8") as f:
            json.dump(stats["examples"], f, indent=2, ensure_ascii=False)
        s.attach(plot)
        s.attach(examples)
