from typing import List

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from ._image import COMPONENT


@dsl.component(**COMPONENT)
def sample_op(config: dict, grow_step: int, shard_index: int, num_shards: int, policy: Input[Model],
              data: Input[Dataset], grown: Output[Dataset]):
    """Grow: sample N candidates per source (one shard of the sources) with the current policy."""

    from rest.steps.data import PreparedData
    from rest.config import SampleConfig, section_from_dict
    from rest_kfp.runtime import resume_uri, step
    from rest.steps.sample import grow

    cfg = section_from_dict(SampleConfig, config, "sample")
    with step("sample", g=grow_step) as s:
        # Chunks of an interrupted attempt live beside the output and, with an object store, under
        # the run's prefix: a retry, on this disk or a fresh pod's, redoes only what is missing.
        stats = grow(policy.path, PreparedData.at(data.path).grow, cfg, grown.path, grow_step,
                     shard_index=shard_index, num_shards=num_shards, resume_uri=resume_uri())
        grown.metadata.update({k: stats[k] for k in ("rows", "sources", "policy_id", "grow", "shard")})
        s.metric(candidates_per_s=stats["candidates_per_s"], grown_rows=stats["rows"])
        s.device(stats, grown)  # device, peak memory, sampling rate
        s.publish(grown.path, f"grown-shard-{shard_index}" if num_shards > 1 else "grown", grown)


@dsl.component(**COMPONENT)
def merge_op(grow_step: int, shards: Input[List[Dataset]], grown: Output[Dataset]):
    """Collect the sampled shards of one Grow step into one grown set."""
    from rest_kfp.runtime import step
    from rest.steps.sample import merge

    with step("merge", g=grow_step) as s:
        stats = merge([d.path for d in shards], grown.path)
        grown.metadata.update({"rows": stats["rows"], "shards": stats["shards"]})
        s.metric(grown_rows=stats["rows"])
        s.publish(grown.path, "grown", grown)
