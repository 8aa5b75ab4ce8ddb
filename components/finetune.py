from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from ._image import COMPONENT


@dsl.component(**COMPONENT)
def finetune_op(config: dict, score_config: dict, on_reward_hacking: str, hacking_tolerance: float, grow_step: int,
                improve_step: int, policy: Input[Model], filtered: Input[Dataset], data: Input[Dataset],
                improved: Output[Model], reward_model: Input[Model] = None):
    """Improve: NLL fine-tune on the filtered set, continuing from the previous policy (with the hacking guard)."""
    import os

    from rest.config import FinetuneConfig, section_from_dict
    from rest.finetune import RewardSpec, improve
    from rest.runtime import score_config as score_section
    from rest.runtime import step

    cfg = section_from_dict(FinetuneConfig, config, "finetune")
    reward = RewardSpec.from_config(score_section(score_config, reward_model), on_reward_hacking=on_reward_hacking,
                                    hacking_tolerance=hacking_tolerance)
    with step("finetune", g=grow_step, i=improve_step) as s:
        info = improve(policy.path, filtered.path, os.path.join(data.path, "valid.jsonl"), cfg, improve_step,
                       improved.path, reward=reward, checkpoint_dir=improved.path + ".ckpt",
                       lineage={"grow_step": grow_step, "threshold": filtered.metadata.get("threshold_used")})
        improved.metadata.update({"optimizer_steps": info["optimizer_steps"], "reward_hacking": info["reward_hacking"],
                                  "rolled_back": bool(info.get("rolled_back")),
                                  "best_valid_reward": info["best_valid_reward"], "g": grow_step, "i": improve_step})
        s.metric(optimizer_steps=info["optimizer_steps"], best_valid_reward=info["best_valid_reward"],
                 tokens_per_s=info["tokens_per_s"], reward_hacking=float(info["reward_hacking"]))
        s.curve("train_loss", [(r["step"], r["loss"]) for r in info["losses"]])
        s.curve("valid_reward", [(r["step"], r["valid_reward"]) for r in info["history"]])
        if info.get("true_metric"):
            s.curve("valid_true_metric", [(r["step"], r["valid_true"]) for r in info["history"]])
        s.publish(improved.path, "policy", improved, dataset=False)


@dsl.component(**COMPONENT)
def control_op(config: dict, score_config: dict, on_reward_hacking: str, hacking_tolerance: float, improve_steps: int,
               bc_policy: Input[Model], last_policy: Input[Model], data: Input[Dataset], control: Output[Model],
               reward_model: Input[Model] = None):
    """References-only control: BC continued on the Grow sources' references for as many steps as ReST took.

    Under ``on_reward_hacking=rollback`` the control is held to the same rule as the Improve
    steps (rolled back when its validation reward rose while the true metric fell);
    otherwise it is only measured.
    """
    import os

    from rest.config import FinetuneConfig, section_from_dict
    from rest.finetune import RewardSpec
    from rest.finetune import control as run_control
    from rest.finetune import run_steps
    from rest.policy import policy_info
    from rest.runtime import score_config as score_section
    from rest.runtime import step

    cfg = section_from_dict(FinetuneConfig, config, "finetune")
    reward = RewardSpec.from_config(score_section(score_config, reward_model), on_reward_hacking=on_reward_hacking,
                                    hacking_tolerance=hacking_tolerance)
    # This run's ReST steps only: a starting policy that was already fine-tuned (a champion)
    # carries earlier runs' steps in its since-BC count.
    total = run_steps(policy_info(bc_policy.path), policy_info(last_policy.path))
    with step("control") as s:
        info = run_control(bc_policy.path, os.path.join(data.path, "grow.jsonl"), os.path.join(data.path, "valid.jsonl"),
                           cfg, total, control.path, reward=reward, checkpoint_dir=control.path + ".ckpt",
                           rest_checks=improve_steps * cfg.epochs, guard=on_reward_hacking == "rollback")
        control.metadata.update({"optimizer_steps": info["optimizer_steps"], "control": True})
        s.metric(optimizer_steps=info["optimizer_steps"], best_valid_reward=info["best_valid_reward"])
        s.curve("train_loss", [(r["step"], r["loss"]) for r in info["losses"]])
        s.curve("valid_reward", [(r["step"], r["valid_reward"]) for r in info["history"]])
        s.publish(control.path, "control", control, dataset=False)
