from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from ._image import COMPONENT


@dsl.component(**COMPONENT)
def evaluate_op(config: dict, score_config: dict, label: str, grow_step: int, improve_step: int, is_control: bool,
                policy: Input[Model], data: Input[Dataset], metrics: Output[Metrics], report: Output[Artifact],
                filtered: Input[Dataset] = None, previous_report: Input[Artifact] = None,
                reward_model: Input[Model] = None):
    """Test-set BLEU/chrF/reward of a policy; appends its row to the run's report."""
    import os
    import time

    from rest.steps.data import PreparedData
    from rest.config import EvaluateConfig, section_from_dict
    from rest.steps.evaluate import evaluate
    from rest.services.files import read_json
    from rest.model.policy import policy_info
    from rest_kfp.runtime import reward_spec as run_reward
    from rest_kfp.runtime import step
    from rest.steps.summary import append_row, make_row

    cfg = section_from_dict(EvaluateConfig, config, "evaluate")
    reward_spec = run_reward(score_config, reward_model)
    with step("evaluate", g=grow_step, i=improve_step) as s:
        prepared = PreparedData.at(data.path)
        m = evaluate(policy.path, prepared.test, cfg, os.path.join(report.path, "eval"),
                     reward=reward_spec, hard_test_path=prepared.hard_test)
        info = policy_info(policy.path)
        if grow_step == 0 and not is_control:  # the BC policy: its training time only if trained in this run
            wall = info.get("bc_training", {}).get("wall_s", 0.0) if policy.metadata.get("trained") else 0.0
        else:
            wall = info.get("wall_s", 0.0)
        fstats = read_json(os.path.join(filtered.path, "stats.json")) if filtered is not None else None
        row = make_row(label, grow_step, improve_step, m, policy.path, info, fstats, wall, control=is_control)
        row["model_uri"] = policy.uri
        row["eval_path"] = os.path.join(report.path, "eval")  # this evaluation's per-sentence outputs
        if row["hacking_in_validation"]:
            s.metric(reward_hacking=1.0)
        # The wall seconds of the tasks that fed this evaluation (the summary's time table): the
        # Grow/filter tasks ride on the filtered set, training time on the policy it made.
        prefix = "control/" if is_control else (f"grow-{grow_step}/improve-{improve_step}/" if grow_step else "")
        tasks = dict(filtered.metadata.get("tasks") or {}) if filtered is not None else {}
        if grow_step == 0 and not is_control:
            tasks["bootstrap"] = wall  # 0 when the policy was given, not trained in this run
        else:
            tasks[prefix + "finetune"] = wall
        tasks[prefix + "evaluate" if prefix else "evaluate-bc"] = time.time() - s.started
        row["tasks"] = {k: round(v, 2) for k, v in tasks.items()}
        append_row(previous_report.path if previous_report is not None else None, row, report.path,
                   translations=os.path.join(report.path, "eval", "translations.jsonl"))
        for k in ("test_bleu", "test_chrf", "test_reward", "test_true", "test_accuracy", "hard_reward",
                  "hard_accuracy"):
            if k in m:
                metrics.log_metric(k, m[k])
        # The Metrics artifact's own file too: kfp.local's cache treats a missing output file as a miss.
        import json

        with open(metrics.path, "w", encoding="utf-8") as f:
            json.dump({k: m[k] for k in ("test_bleu", "test_chrf", "test_reward")}, f)
        s.metric(**{k: m[k] for k in ("test_bleu", "test_chrf", "test_reward", "test_accuracy", "hard_accuracy",
                                      "hard_reward") if k in m})
        s.device(m)  # device, peak memory, sentences/s
        curve = m.get("best_of_n_curve", {})  # evaluate.best_of_n > 0: best-of-1, 2, 4, .. N
        for n, v in curve.items():
            metrics.log_metric(f"best_of_{n}", v)
        if curve:
            s.curve("best_of_n", sorted((int(n), v) for n, v in curve.items()))  # MLflow: metric over N
        for k, v in (m.get("pass_at_k") or {}).items():  # a verifiable reward: unbiased pass@k
            metrics.log_metric(f"pass_at_{k}", v)
        if m.get("pass_at_k"):
            s.curve("pass_at_k", sorted((int(k), v) for k, v in m["pass_at_k"].items()))
