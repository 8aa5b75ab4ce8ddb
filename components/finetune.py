from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from ._image import COMPONENT


@dsl.component(**COMPONENT)
def finetune_op(config: dict, score_config: dict, on_reward_hacking: str, hacking_tolerance: float, grow_step: int,
                improve_step: int, policy: Input[Model], filtered: Input[Dataset], data: Input[Dataset],
                improved: Output[Model], reward_model: Input[Model] = None, base_policy: Input[Model] = None):
    """Improve: NLL fine-tune on the filtered set, continuing from the previous policy (with the hacking guard).

    ``base_policy`` (finetune.from_base, ReST-EM): the weights start from it (the BC policy) instead.
    """

    from rest.steps.data import PreparedData
    from rest.config import FinetuneConfig, section_from_dict
    from rest.steps.finetune import improve
    from rest_kfp.runtime import resume_uri, reward_spec
    from rest_kfp.runtime import step

    cfg = section_from_dict(FinetuneConfig, config, "finetune")
    reward = reward_spec(score_config, reward_model, on_reward_hacking=on_reward_hacking,
                         hacking_tolerance=hacking_tolerance)
    with step("finetune", g=grow_step, i=improve_step) as s:
        # Checkpoints go beside the output and, with an object store, under the run's prefix:
        # a retried (preempted) pod resumes from the last one even on a fresh disk.
        info = improve(policy.path, filtered.path, PreparedData.at(data.path).valid, cfg, improve_step,
                       improved.path, reward=reward, checkpoint_dir=improved.path + ".ckpt",
                       lineage={"grow_step": grow_step, "threshold": filtered.metadata.get("threshold_used")},
                       base_dir=base_policy.path if base_policy is not None else None,
                       train_path=PreparedData.at(data.path).train, resume_uri=resume_uri())
        improved.metadata.update({"optimizer_steps": info["optimizer_steps"], "reward_hacking": info["reward_hacking"],
                                  "rolled_back": bool(info.get("rolled_back")),
                                  "best_valid_reward": info["best_valid_reward"], "g": grow_step, "i": improve_step})
        s.metric(optimizer_steps=info["optimizer_steps"], best_valid_reward=info["best_valid_reward"],
                 tokens_per_s=info["tokens_per_s"], reward_hacking=float(info["reward_hacking"]))
        s.device(info, improved)
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

    from rest.config import FinetuneConfig, section_from_dict
    from rest.steps.data import PreparedData
    from rest.steps.finetune import control as run_control
    from rest.steps.finetune import run_steps
    from rest.model.policy import policy_info
    from rest_kfp.runtime import resume_uri, reward_spec
    from rest_kfp.runtime import step

    cfg = section_from_dict(FinetuneConfig, config, "finetune")
    reward = reward_spec(score_config, reward_model, on_reward_hacking=on_reward_hacking,
                         hacking_tolerance=hacking_tolerance)
    # This run's ReST steps only: a starting policy that was already fine-tuned (a champion)
    # carries earlier runs' steps in its since-BC count.
    total = run_steps(policy_info(bc_policy.path), policy_info(last_policy.path))
    with step("control") as s:
        # The Grow sources' references, or train when data.grow gave a separate (e.g. answer-only) pool.
        info = run_control(bc_policy.path, PreparedData.at(data.path).control, PreparedData.at(data.path).valid,
                           cfg, total, control.path, reward=reward, checkpoint_dir=control.path + ".ckpt",
                           rest_checks=improve_steps * cfg.epochs, guard=on_reward_hacking == "rollback",
                           resume_uri=resume_uri())
        control.metadata.update({"optimizer_steps": info["optimizer_steps"], "control": True})
        s.metric(optimizer_steps=info["optimizer_steps"], best_valid_reward=info["best_valid_reward"])
        s.device(info, control)
        s.curve("train_loss", [(r["step"], r["loss"]) for r in info["losses"]])
        s.curve("valid_reward", [(r["step"], r["valid_reward"]) for r in info["history"]])
        s.publish(control.path, "control", control, dataset=False)
