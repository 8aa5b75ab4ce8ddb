from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from ._image import COMPONENT


@dsl.component(**COMPONENT)
def train_reward_model_op(config: dict, scored: Input[Dataset], policy: Input[Model], reward_model: Output[Model]):
    """Train the learned, reference-free reward model on scored candidates (tokenizer from the policy)."""
    import os

    from rest.config import RewardModelConfig, section_from_dict
    from rest.rewards.learned import train_reward_model
    from rest_kfp.runtime import step

    cfg = section_from_dict(RewardModelConfig, config, "reward_model")
    with step("reward_model") as s:
        stats = train_reward_model([scored.path], cfg, reward_model.path, policy.path)
        # kendall_tau / spearman_rho are test-split figures; selection_* picked the epoch.
        reward_model.metadata.update({"metric": stats["metric"], "kendall_tau": stats["kendall_tau"],
                                      "spearman_rho": stats["spearman_rho"], "test_pairs": stats["test_pairs"],
                                      "selection_kendall_tau": stats["selection_kendall_tau"],
                                      "valid_pairs": stats["valid_pairs"]})
        s.metric(kendall_tau=stats["kendall_tau"], spearman_rho=stats["spearman_rho"],
                 per_source_kendall_tau=stats["per_source_kendall_tau"], test_mse=stats["mse"],
                 selection_kendall_tau=stats["selection_kendall_tau"],
                 train_pairs=stats["train_pairs"], valid_pairs=stats["valid_pairs"], test_pairs=stats["test_pairs"],
                 train_pairs_per_s=stats["train_pairs_per_s"])
        s.device(stats, reward_model)
        s.curve("selection_kendall_tau", [(h["epoch"], h["kendall_tau"]) for h in stats["history"]
                                          if h["kendall_tau"] is not None])
        s.curve("train_mse", [(h["epoch"], h["train_mse"]) for h in stats["history"]])
        s.attach(os.path.join(reward_model.path, "calibration.png"))
        s.publish(reward_model.path, "reward_model", reward_model, dataset=False)
