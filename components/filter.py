from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from ._image import COMPONENT


@dsl.component(**COMPONENT)
def filter_op(config: dict, grow_step: int, improve_step: int, scored: Input[Dataset], filtered: Output[Dataset],
              previous: Input[Dataset] = None):
    """Keep the candidates whose reward passes Improve step ``improve_step``'s threshold.

    ``previous`` (filter.accumulate, ReST-EM): the previous Grow step's kept set, merged in.
    """
    import json
    import os
    import time

    from rest.config import FilterConfig, section_from_dict
    from rest.steps.filter import effective_threshold, filter_scored
    from rest.services.files import read_json, read_jsonl
    from rest_kfp.runtime import step
    from rest.services.tracking import reward_histogram

    cfg = section_from_dict(FilterConfig, config, "filter")
    with step("filter", g=grow_step, i=improve_step) as s:
        stats = filter_scored(scored.path, cfg, improve_step, filtered.path,
                              previous_dir=previous.path if previous is not None else None)
        filtered.metadata.update({k: stats[k] for k in ("threshold", "threshold_used", "kept", "total",
                                                        "kept_fraction", "mean_reward_kept", "mean_reward_all")})
        s.metric(**{k: stats[k] for k in ("threshold_used", "kept", "kept_fraction", "mean_reward_kept",
                                          "mean_reward_all")})
        s.publish(filtered.path, "filtered", filtered)
        # What people would rather see than read: where τ_1..τ_i cut the reward distribution,
        # and the best / worst / borderline candidates behind the numbers. The lines are the
        # thresholds the guard actually used (it may have lifted the schedule), the configured
        # ones written beside them. Percentile mode cuts each source apart: no global line.
        score_stats = read_json(os.path.join(scored.path, "stats.json"))
        mean = score_stats["mean_reward"]
        global_cut = cfg.mode == "global"
        used = [effective_threshold(cfg, k, mean) for k in range(1, improve_step + 1)] if global_cut else []
        plot = reward_histogram((r["reward"] for r in read_jsonl(os.path.join(scored.path, "data.jsonl"))),
                                used, os.path.join(filtered.path, "reward_histogram.png"),
                                title=f"Grow {grow_step}: reward of grown candidates"
                                      + ("" if global_cut else f" (per-source percentile {stats['percentile']:g})"),
                                configured=cfg.thresholds[:improve_step] if global_cut else None,
                                kept_label="kept" if cfg.max_per_source == 0 and cfg.keep_references else "≥ τ")
        examples = os.path.join(filtered.path, "examples.json")
        with open(examples, "w", encoding="utf-8") as f:
            json.dump(stats["examples"], f, indent=2, ensure_ascii=False)
        s.attach(plot)
        s.attach(examples)
        # Wall seconds of this Grow step's tasks and this filter, carried to the run's summary
        # (it sees the filtered set through the evaluation, never the grown or scored sets).
        # Metadata, not a file: the published set's digest must not depend on timings.
        tasks = {f"grow-{grow_step}/sample": scored.metadata.get("sample_wall_s"),
                 f"grow-{grow_step}/score": score_stats.get("wall_s"),
                 f"grow-{grow_step}/improve-{improve_step}/filter": time.time() - s.started}
        filtered.metadata["tasks"] = {k: round(float(v), 2) for k, v in tasks.items() if v is not None}
