from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from ._image import COMPONENT


@dsl.component(**COMPONENT)
def bootstrap_op(config: dict, reward: str, initial_policy: str, data: Input[Dataset], policy: Output[Model]):
    """The starting BC policy: ``initial_policy`` when given, else trained from scratch with NLL."""
    import os
    from dataclasses import replace

    from rest.bootstrap import bootstrap
    from rest.config import BootstrapConfig, section_from_dict
    from rest.runtime import step

    cfg = replace(section_from_dict(BootstrapConfig, config, "bootstrap"), policy=initial_policy)
    with step("bootstrap") as s:
        info = bootstrap(cfg, os.path.join(data.path, "train.jsonl"), os.path.join(data.path, "valid.jsonl"),
                         policy.path, reward=reward, checkpoint_dir=policy.path + ".ckpt",
                         tracking_uri=os.environ.get("MLFLOW_TRACKING_URI") or None)
        policy.metadata.update({"trained": info["trained"], "kind": "bc"})
        bc = info.get("bc_training", {})
        s.metric(bc_steps=bc.get("steps", 0), bc_best_valid_reward=bc.get("best_valid_reward", 0.0))
        s.publish(policy.path, "policy", policy, dataset=False)
