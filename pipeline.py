#!/usr/bin/env python
"""The ReST pipeline: wiring only, and the CLI to compile, run locally, upload and schedule it.

KFP v2 has no while-loop, so the loop is unrolled at compile time: G Grow steps, each
followed by I Improve steps (one per threshold)::

    validate → prepare → bootstrap → evaluate (BC)
    for g in 1..G:   sample → score
        for i in 1..I:   filter(τ_i) → finetune → evaluate
    control (BC continued on references for as many steps) → evaluate → summarize → register
    finish: the exit task; runs last, also after a failure, and ends the MLflow parent run

Each task gets only its own config section (and filter i only τ_1..τ_i), so changing the
last threshold re-runs only the last Improve step: every earlier task comes from cache.

``grow()`` and ``improve()`` in :func:`build_pipeline` are plain Python builders called in
the loop, not nested ``@dsl.pipeline`` sub-pipelines, so the compiled spec is flat. Checked
with kfp 2.17.0's kfp.local (SubprocessRunner): nested pipelines do run there, also with a
ParallelFor inside and inside the ExitHandler; their outputs come out and a re-run is served
from the task cache. But (1) a sub-pipeline task whose inputs are all artifacts gets none of
them (kfp.local's ``build_nested_dag_arguments`` reads a nested task's inputs only when it
has parameter inputs): ``ValueError: Parent pipeline input argument 'policy' not found.``;
and (2) an optional artifact input of a sub-pipeline that the caller leaves out fails the
same way (``... argument 'extra' not found.``). Improve's artifact inputs are optional by
configuration (the learned reward model, ReST-EM's base policy, the previous Grow's kept
set), so sub-pipelines would need one variant per combination (tests/test_subpipelines.py
records this; its strict xfail fails once kfp.local can do it).

    python pipeline.py run-local --output-dir runs/default
    python pipeline.py compile --output rest-pipeline.yaml
    python pipeline.py promote --model-name rest-de-en --version 7 --test data/libreoffice-de-en/test.tsv
    python pipeline.py run --cluster-config cluster.yaml --experiment rest

Each command's --help ends with examples; the cluster commands (upload, run, schedule, runs,
doctor) are explained in docs/deploy.md.
"""
# No `from __future__ import annotations`: KFP reads the pipeline signature's real types.

import argparse
import dataclasses
import json
import logging
import os
import re
import sys
import time
import warnings

from rest.config import ConfigError, RunConfig, add_config_arguments, load_config, overrides_from_args

PIPELINE_NAME = "rest-translation"


def build_pipeline(cfg: RunConfig, cluster=None):
    """The pipeline function for ``cfg`` (G, I and shards fixed; data and policy are run parameters)."""
    from kfp import dsl

    from rest.model.families import LANGUAGE_FIELDS
    from rest.rewards.spec import RewardSpec
    from rest_kfp.steps import STEP_TABLE, display_name
    from components import (bootstrap_op, control_op, evaluate_op, filter_op, finetune_op, finish_op, merge_op,
                            prepare_op, register_op, sample_op, score_op, summarize_op, train_reward_model_op,
                            validate_op)

    if cluster is not None:
        from rest_kfp.cluster import check_step_devices

        check_step_devices(cfg, cluster)  # a step's device must be one its pod is given
    full = cfg.to_dict()
    section = full  # the run config is one dict per step, keyed by step name
    G, I, shards = cfg.loop.grow_steps, cfg.filter.improve_steps, cfg.sample.num_shards
    reward = cfg.score.reward
    # BC trains on the references, and promotion compares with them: both use a reference-based metric.
    reference_metric = RewardSpec.from_config(cfg.score).reference_metric
    # A given policy's translation settings are resolved from these once, in bootstrap (rest.model.families).
    languages = {k: section["data"][k] for k in LANGUAGE_FIELDS}
    # A learned reward with no model given is trained in this run (after the first Grow);
    # every step that scores with it then takes it as an input.
    train_rm = reward == "reward_model" and not cfg.score.reward_model_path

    def filter_config(i: int) -> dict:
        # Only τ_1..τ_i: the guard needs τ_1, the step needs τ_i; later thresholds stay out of
        # the task's inputs so that changing them keeps this task cached.
        f = dict(section["filter"])
        f["thresholds"] = f["thresholds"][:i]
        f["percentiles"] = f["percentiles"][:i] if cfg.filter.mode == "percentile" else f["percentiles"]
        return f

    def settle(task, step: str, g: int = 0, i: int = 0, role: str = ""):
        # Name, caching and (on a cluster) pod settings come from the one step table.
        task.set_display_name(display_name(step, g, i, role))
        if not STEP_TABLE[step].cacheable:
            task.set_caching_options(False)
        if cluster is not None:
            from rest_kfp.cluster import apply_cluster_settings

            apply_cluster_settings(task, step, cluster)
        return task

    def evaluate(run: "_Loop", policy, label: str, g: int = 0, i: int = 0, filtered=None, role: str = "") -> None:
        """Evaluate ``policy``: its row joins the run's report (the BC evaluation starts it)."""
        kwargs = dict(config=section["evaluate"], score_config=section["score"], label=label, grow_step=g,
                      improve_step=i, is_control=role == "control", policy=policy, data=run.data, **run.learned)
        # Optional inputs are left out, not passed as None: the first evaluation has no report to extend.
        if run.report is not None:
            kwargs["previous_report"] = run.report
        if filtered is not None:
            kwargs["filtered"] = filtered
        run.report = settle(evaluate_op(**kwargs), "evaluate", g, i, role=role).outputs["report"]

    def guard() -> dict:
        # The one reward-hacking rule, for the Improve steps and the control alike.
        return dict(score_config=section["score"], on_reward_hacking=cfg.loop.on_reward_hacking,
                    hacking_tolerance=cfg.loop.hacking_tolerance)

    def grow(g: int, run: "_Loop"):
        """Grow step g: N samples per source from the current policy (over ``shards`` parallel
        tasks, merged), scored once. The first Grow also trains the learned reward when the run
        has to (it learns from these samples); the BC policy is evaluated as soon as it exists."""
        if shards == 1:
            grown = settle(sample_op(config=section["sample"], grow_step=g, shard_index=0, num_shards=1,
                                     policy=run.policy, data=run.data), "sample", g).outputs["grown"]
        else:
            with dsl.ParallelFor(items=list(range(shards)), name=f"grow-{g}-shards") as shard:
                part = settle(sample_op(config=section["sample"], grow_step=g, shard_index=shard,
                                        num_shards=shards, policy=run.policy, data=run.data), "sample", g)
            grown = settle(merge_op(grow_step=g, shards=dsl.Collected(part.outputs["grown"])), "merge",
                           g).outputs["grown"]
        if g == 1 and train_rm:
            run.learned = {"reward_model": settle(
                train_reward_model_op(config=section["reward_model"], scored=grown, policy=run.bc),
                "reward_model").outputs["reward_model"]}
            evaluate(run, run.bc, "bc", role="bc")
        return settle(score_op(config=section["score"], grow_step=g, grown=grown, **run.learned), "score",
                      g).outputs["scored"]

    def improve(g: int, i: int, scored, run: "_Loop") -> None:
        """Improve step i of Grow g: filter at τ_i → fine-tune the current policy → evaluate it."""
        # filter.accumulate (ReST-EM): Improve step i's kept set of the previous Grow joins this one.
        previous = {"previous": run.kept[i]} if cfg.filter.accumulate and i in run.kept else {}
        filtered = settle(filter_op(config=filter_config(i), grow_step=g, improve_step=i, scored=scored,
                                    **previous), "filter", g, i).outputs["filtered"]
        run.kept[i] = filtered
        # finetune.from_base (ReST-EM): every Improve step starts from the BC weights.
        base = {"base_policy": run.bc} if cfg.finetune.from_base else {}
        run.policy = settle(finetune_op(config=section["finetune"], **guard(), grow_step=g, improve_step=i,
                                        policy=run.policy, filtered=filtered, data=run.data, **run.learned,
                                        **base), "finetune", g, i).outputs["improved"]
        evaluate(run, run.policy, f"rest g{g} i{i}", g, i, filtered)

    def control(run: "_Loop") -> None:
        """BC continued on the references for as many optimizer steps as all Improve steps took."""
        ctrl = settle(control_op(config=section["finetune"], **guard(), improve_steps=G * I, bc_policy=run.bc,
                                 last_policy=run.policy, data=run.data, **run.learned), "control").outputs["control"]
        evaluate(run, ctrl, "control (references only)", role="control")

    def body(train, valid, test, initial_policy):
        check = settle(validate_op(config=full, train=train, valid=valid, test=test, initial_policy=initial_policy,
                                   check_devices=cluster is None), "validate")
        # prepare gets only the data section: a change elsewhere in the config keeps it cached.
        prep = settle(prepare_op(config=section["data"], train=train, valid=valid, test=test), "prepare")
        prep.after(check)
        boot = settle(bootstrap_op(config=section["bootstrap"], reward=reference_metric, initial_policy=initial_policy,
                                   data=prep.outputs["data"], languages=languages), "bootstrap")
        run = _Loop(bc=boot.outputs["policy"], data=prep.outputs["data"], learned={})
        if not train_rm:  # else grow(1) evaluates BC, once the learned reward is trained
            evaluate(run, run.bc, "bc", role="bc")
        for g in range(1, G + 1):
            scored = grow(g, run)
            for i in range(1, I + 1):
                improve(g, i, scored, run)
        if cfg.loop.control:
            control(run)
        # Never from cache (the step table): it logs this run's table and config to this run's MLflow
        # parent, and run-local reads its output from this run's pipeline root.
        summary = settle(summarize_op(config=full, report=run.report), "summarize")
        if cfg.loop.register:
            settle(register_op(model_name=cfg.loop.model_name, metric=reference_metric,
                               policy=run.policy, data=run.data), "register").after(summary)
        return summary

    @dsl.pipeline(name=PIPELINE_NAME, description="Reinforced Self-Training (ReST) for a seq2seq or causal LM policy")
    def rest_pipeline(train: str = cfg.data.train, valid: str = cfg.data.valid, test: str = cfg.data.test,
                      initial_policy: str = cfg.bootstrap.policy):
        # The exit task runs after everything else, also when a task failed, and ends the
        # MLflow parent run with the pipeline's state; without it the run stays RUNNING.
        # (KFP allows no pipeline output from inside an ExitHandler: the summary is the
        # summarize task's output.)
        # Never from cache (the step table): a cached exit task would leave this run's parent RUNNING.
        finish = settle(finish_op(), "finish")
        with dsl.ExitHandler(finish, name="rest"):
            body(train, valid, test, initial_policy)

    return rest_pipeline


def compile_pipeline(cfg: RunConfig, path: str, cluster=None) -> str:
    """Write the pipeline package (YAML) for ``cfg`` to ``path``."""
    from kfp import compiler

    compiler.Compiler().compile(build_pipeline(cfg, cluster), package_path=path)
    return path


@dataclasses.dataclass
class _Loop:
    """What the loop carries from step to step while the pipeline is traced (task outputs, not data).

    ``policy`` is the current policy (BC, then each Improve step's), ``report`` the evaluation
    report so far, ``learned`` the learned reward's input for every step that scores with it
    (empty without one), ``kept`` each Improve step's kept set of the previous Grow.
    """

    bc: object
    data: object
    learned: dict
    policy: object = None
    report: object = None
    kept: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if self.policy is None:  # the loop starts from the BC policy
            self.policy = self.bc


class PipelineFailed(RuntimeError):
    """A task of a run-local pipeline failed (the message names it and where the full log is)."""


LOG_NAME = "run-local.log"


def run_local(cfg: RunConfig, output_dir: str, tracking: bool = True, cache_dir: str = "",
              verbose: bool = False) -> dict:
    """Run the whole pipeline through kfp.local (subprocesses); write summary.json into ``output_dir``.

    Tracking goes to ``MLFLOW_TRACKING_URI`` when set, else to an embedded MLflow store
    (``output_dir/mlflow.db``, no server needed); artifacts go to MinIO when
    ``REST_S3_ENDPOINT`` is set. The steps inherit this process's environment. With
    ``cache_dir``, KFP's task cache is on: a task whose inputs did not change since an
    earlier run with the same cache directory is not run again.

    The console shows one line per task start and finish (status, wall seconds, key
    figures) and the steps' progress lines; kfp.local's whole stream (every task's
    executor input and log) goes to ``output_dir/run-local.log``, and with ``verbose``
    to the console as well. Raises :class:`PipelineFailed` when a task fails.
    """
    import contextlib
    import glob
    import shutil

    from kfp import local

    from rest_kfp.runlog import RunConsole
    from rest_kfp.runtime import setup_logging
    from rest.steps.summary import markdown_table, verdict_text

    setup_logging()
    warnings.filterwarnings("ignore", message=".*have no effect in the current local runner")
    warnings.filterwarnings("ignore", message="You may be attemping to run a task that uses custom")
    output_dir = os.path.abspath(output_dir)
    os.makedirs(output_dir, exist_ok=True)
    os.environ["REST_PIPELINE_RUN"] = f"local-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    if tracking and not os.environ.get("MLFLOW_TRACKING_URI"):
        from rest.services.tracking import embedded_uri

        os.environ["MLFLOW_TRACKING_URI"] = embedded_uri(output_dir)
    elif not tracking:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    caching = dict(enable_caching=True, cache_root=os.path.abspath(cache_dir)) if cache_dir else {}
    root = os.path.join(output_dir, "pipeline_root")
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=root, raise_on_error=True, **caching)
    before = set(os.listdir(root)) if os.path.isdir(root) else set()
    log_path = os.path.join(output_dir, LOG_NAME)
    print(f"run-local: pipeline run {os.environ['REST_PIPELINE_RUN']}; one line per task below, "
          f"the full log in {log_path}" + (" (--verbose: also here)" if verbose else " (--verbose shows it here)"),
          flush=True)
    t0 = time.time()
    pipeline = build_pipeline(cfg)
    with open(log_path, "w", encoding="utf-8") as log:
        console = RunConsole(sys.stdout, log, verbose=verbose, log_path=log_path)
        try:
            # kfp.local prints its messages and every task's output to sys.stdout.
            with contextlib.redirect_stdout(console), console.capturing_logs():
                pipeline(train=cfg.data.train, valid=cfg.data.valid, test=cfg.data.test,
                         initial_policy=cfg.bootstrap.policy)
        except RuntimeError as e:
            console.close_lines()
            failed = ", ".join(console.failed) or "a task"
            reason = re.sub(r"\x1b\[[0-9;]*m", "", str(e))  # kfp colours its task names
            raise PipelineFailed(f"{failed} failed ({reason}); full log: {log_path}") from None
        console.close_lines()
    # This run's summarize task (never cached) wrote into this run's directory of the pipeline root.
    found = [d for d in glob.glob(os.path.join(root, "*", "summarize-op", "summary"))
             if d.split(os.sep)[-3] not in before]
    if len(found) != 1:
        raise PipelineFailed(f"expected one summarize output of this run under {root}, found {len(found)}; "
                             f"full log: {log_path}")
    summary_dir = found[0]
    for name in ("summary.json", "summary.md", "curves.png"):
        shutil.copy(os.path.join(summary_dir, name), os.path.join(output_dir, name))
    with open(os.path.join(output_dir, "summary.json"), encoding="utf-8") as f:
        summary = json.load(f)
    print("\n" + markdown_table(summary["steps"]))
    print(verdict_text(summary["verdict"]))
    print(f"\nReST run finished in {time.time() - t0:.0f} s; summary: {os.path.join(output_dir, 'summary.json')}; "
          f"full log: {log_path}")
    return summary


def _add_data_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("your own data (shortcuts for --data.*)")
    g.add_argument("--train", help="training pairs: TSV with a header row, or JSONL")
    g.add_argument("--valid", help="validation pairs (empty: split from train)")
    g.add_argument("--test", help="test pairs (empty: split from train)")
    g.add_argument("--source-column", help="source column name, e.g. de")
    g.add_argument("--target-column", help="target column name, e.g. en")
    g.add_argument("--sources", help="source-only text for Grow (.txt one sentence per line, or TSV/JSONL); "
                                     "needs --score.reward reward_model")
    g.add_argument("--reward-model", help="learned reward model directory: sets score.reward=reward_model")
    g.add_argument("--policy", help="start from this model (directory, s3:// or models:/NAME@alias); used as BC "
                                    "as it is, or continued on --train until patience stops it with "
                                    "--bootstrap.converge true (adapting a model to your own data)")


def resolve_config(args) -> RunConfig:
    """Defaults → --config YAML → --section.field flags → the data shortcuts."""
    overrides = overrides_from_args(args)
    short = {"train": "data.train", "valid": "data.valid", "test": "data.test",
             "source_column": "data.source_column", "target_column": "data.target_column",
             "policy": "bootstrap.policy", "sources": "data.sources", "reward_model": "score.reward_model_path"}
    for attr, key in short.items():
        value = getattr(args, attr, None)
        if value is not None:
            overrides[key] = value
    if getattr(args, "reward_model", None):
        overrides.setdefault("score.reward", "reward_model")
    cfg = load_config(getattr(args, "config", None), overrides)
    # Own training data without an explicit --policy: the shipped policy was trained on other
    # data (and its tokenizer too), so train the BC policy on the user's data instead.
    if getattr(args, "train", None) and getattr(args, "policy", None) is None and "bootstrap.policy" not in overrides:
        cfg = dataclasses.replace(cfg, bootstrap=dataclasses.replace(cfg.bootstrap, policy=""))
        if getattr(args, "valid", None) is None and "data.valid" not in overrides:
            cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, valid=""))
        if getattr(args, "test", None) is None and "data.test" not in overrides:
            cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, test=""))
    return cfg


RUN_LOCAL_EXAMPLES = """examples:
  python pipeline.py run-local --output-dir runs/default
  python pipeline.py run-local --train my/train.tsv --valid my/valid.tsv --test my/test.tsv \\
      --source-column de --target-column en --output-dir runs/mine
  python pipeline.py run-local --cache-dir runs/cache --filter.thresholds 0.5,0.6,0.75 --output-dir runs/t75
"""
COMPILE_EXAMPLES = """examples:
  python pipeline.py compile --output rest-pipeline.yaml
  python pipeline.py compile --loop.grow_steps 2 --cluster-config manifests/cluster-config.example.yaml \\
      --output rest-pipeline.yaml
"""
PROMOTE_EXAMPLES = """example:
  python pipeline.py promote --model-name rest-de-en --version 7 --test data/libreoffice-de-en/test.tsv
"""


def build_parser() -> argparse.ArgumentParser:
    """The whole CLI: run-local, compile, promote and the cluster commands of rest_kfp.kfp_cli."""
    from rest_kfp.cli import add_promote_arguments
    from rest_kfp.kfp_cli import PACKAGE_COMMANDS, register_commands

    raw = argparse.RawDescriptionHelpFormatter
    ap = argparse.ArgumentParser(prog="python pipeline.py", description=__doc__, formatter_class=raw)
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run-local", help="run the whole pipeline on this machine through kfp.local",
                       epilog=RUN_LOCAL_EXAMPLES, formatter_class=raw)
    p.add_argument("--config", help="YAML config (sections as in `python -m rest config`)")
    p.add_argument("--output-dir", default="runs/latest", help="where summary.json and all artifacts go")
    p.add_argument("--cache-dir", default="",
                   help="turn on KFP's task cache, kept in this directory: a re-run skips every task whose "
                        "inputs did not change (e.g. after changing only the last threshold)")
    p.add_argument("--no-tracking", action="store_true",
                   help="log nothing to MLflow (default: MLFLOW_TRACKING_URI, else OUTPUT_DIR/mlflow.db)")
    p.add_argument("--verbose", action="store_true",
                   help=f"print kfp.local's whole stream (every task's executor input and log); by default it "
                        f"goes only to OUTPUT_DIR/{LOG_NAME} and the console shows one line per task")
    _add_data_flags(p)
    add_config_arguments(p)

    p = sub.add_parser("compile", help="write the pipeline YAML for upload to Kubeflow",
                       epilog=COMPILE_EXAMPLES, formatter_class=raw)
    p.add_argument("--config", help="YAML config (sections as in `python -m rest config`)")
    p.add_argument("--output", default="rest_pipeline.yaml", help="where to write the pipeline YAML")
    p.add_argument("--cluster-config", help="YAML of cluster settings (resources, secrets, node selectors)")
    _add_data_flags(p)
    add_config_arguments(p)

    p = sub.add_parser("promote", help="compare a registered model version with the champion; move the alias",
                       description="Compare a registered model version with the current champion on a fixed test\n"
                                   "set (paired bootstrap); move `champion` only when it is significantly better,\n"
                                   "else set `challenger`. Prints the decision as JSON.",
                       epilog=PROMOTE_EXAMPLES, formatter_class=raw)
    add_promote_arguments(p)

    # upload / run / schedule / runs / doctor talk to a Kubeflow cluster.
    parsers = register_commands(sub)
    for name in PACKAGE_COMMANDS:
        _add_data_flags(parsers[name])
        add_config_arguments(parsers[name])
    return ap


def main(argv=None) -> int:
    """``python pipeline.py COMMAND ...``; returns the exit code."""
    from rest_kfp.kfp_cli import CLUSTER_COMMANDS, dispatch

    args = build_parser().parse_args(argv)
    try:
        if args.command == "promote":
            from rest_kfp.cli import promote_cli

            return promote_cli(args=args)
        if args.command in CLUSTER_COMMANDS:
            def compile_for_cluster(path: str) -> None:
                compile_pipeline(resolve_config(args), path, _cluster_config(getattr(args, "cluster_config", None)))
            return dispatch(args, compile_for_cluster)
        cfg = resolve_config(args)
        if args.command == "run-local":
            run_local(cfg, args.output_dir, tracking=not args.no_tracking, cache_dir=args.cache_dir,
                      verbose=args.verbose)
        elif args.command == "compile":
            compile_pipeline(cfg, args.output, _cluster_config(args.cluster_config))
            print(f"wrote {args.output}")
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def _cluster_config(path):
    if not path:
        return None
    from rest_kfp.cluster import load_cluster_config

    return load_cluster_config(path)


if __name__ == "__main__":
    logging.getLogger("kfp").setLevel(logging.INFO)
    try:
        sys.exit(main())
    except PipelineFailed as e:  # the console already showed the failed task's last lines
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
