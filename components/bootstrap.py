from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from ._image import COMPONENT


@dsl.component(**COMPONENT)
def bootstrap_op(config: dict, reward: str, initial_policy: str, data: Input[Dataset], policy: Output[Model],
                 languages: dict = {}):
    """The starting BC policy: ``initial_policy`` when given, else trained from scratch with NLL.

    ``languages``: the data section's language settings; a given policy's translation
    settings (language codes, source prefix) are resolved from them and recorded in it.
    """
    import os
    from dataclasses import replace

    from rest.steps.data import PreparedData
    from rest.steps.bootstrap import bootstrap
    from rest.config import BootstrapConfig, section_from_dict
    from rest_kfp.runtime import resume_uri, step

    cfg = replace(section_from_dict(BootstrapConfig, config, "bootstrap"), policy=initial_policy)
    with step("bootstrap") as s:
        info = bootstrap(cfg, PreparedData.at(data.path).train, PreparedData.at(data.path).valid,
                         policy.path, reward=reward, checkpoint_dir=policy.path + ".ckpt",
                         tracking_uri=os.environ.get("MLFLOW_TRACKING_URI") or None, languages=languages,
                         resume_uri=resume_uri())
        policy.metadata.update({"trained": info["trained"], "kind": "bc"})
        if "translation" in info:
            policy.metadata["translation"] = info["translation"]
        bc = info.get("bc_training", {})
        s.metric(bc_steps=bc.get("steps", 0), bc_best_valid_reward=bc.get("best_valid_reward", 0.0))
        s.device(bc, policy)  # empty for a given policy: nothing computed
        s.publish(policy.path, "policy", policy, dataset=False)
