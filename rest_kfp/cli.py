"""``python -m rest``: run single core steps from the shell (the pipeline CLI is pipeline.py)."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Sequence

from rest.config import (ConfigError, add_config_arguments, dump_yaml, load_config, markdown_reference,
                     overrides_from_args)


def add_promote_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The flags of ``promote`` (one definition for ``pipeline.py promote`` and rest.services.registry.promote_cli).

    Here, not in rest.services.registry, so that building the CLI does not import MLflow.
    """
    p.add_argument("--model-name", required=True, help="registered model name, e.g. rest-de-en")
    p.add_argument("--version", required=True, help="candidate model version, e.g. 7")
    p.add_argument("--test", required=True, help="fixed test set: prepared JSONL (id/source/target) or a TSV")
    p.add_argument("--tracking-uri", default=None, help="MLflow URI (default: MLFLOW_TRACKING_URI or ./mlflow)")
    p.add_argument("--metric", default="chrf", choices=["chrf", "bleu"], help="metric of the paired test")
    p.add_argument("--n-bootstrap", type=int, default=1000, help="bootstrap resamples")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level")
    p.add_argument("--seed", type=int, default=12345, help="seed of the resampling")
    p.add_argument("--output", default=None, help="also write the decision JSON here")
    return p


def _setup_logging():
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m rest``: config, bootstrap, reward-model, validate."""
    ap = argparse.ArgumentParser(prog="python -m rest", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("config", help="print the resolved config as commented YAML")
    p.add_argument("--config")
    p.add_argument("--markdown", action="store_true", help="print the reference of every setting as Markdown")
    add_config_arguments(p)

    p = sub.add_parser("bootstrap", help="train the BC policy from scratch (rebuilds the shipped default)")
    p.add_argument("--config")
    p.add_argument("--out", required=True, help="directory to write the policy to")
    p.add_argument("--work-dir", default=None, help="prepared data and resumable checkpoints (default: OUT.work)")
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads (0 = all cores; 1 keeps a busy machine from stalling the run)")
    add_config_arguments(p, sections=("data", "bootstrap"))

    p = sub.add_parser("reward-model", help="train the learned, reference-free reward model on scored candidates",
                       description="Train a small cross-encoder to predict reward_model.metric from (source, "
                                   "candidate) on score step outputs; prints held-out Kendall tau / Spearman rho.")
    p.add_argument("--config")
    p.add_argument("--scored", action="append", required=True, metavar="DIR_OR_FILE",
                   help="a score step output directory (or its data.jsonl); repeat for several")
    p.add_argument("--tokenizer", default="", metavar="POLICY_DIR",
                   help="directory whose tokenizer a from-scratch model uses (normally the policy's)")
    p.add_argument("--out", required=True, help="directory to write the reward model to")
    add_config_arguments(p, sections=("reward_model",))

    p = sub.add_parser("validate", help="check config, data files, policy, reward, MinIO and MLflow before a run",
                       description="Check everything a run needs before any compute; exit 2 with one error "
                                   "naming the field or file and the fix. MinIO and MLflow are checked when "
                                   "REST_S3_ENDPOINT / MLFLOW_TRACKING_URI are set.")
    p.add_argument("--config")
    p.add_argument("--no-data", action="store_true", help="skip reading the data files")
    p.add_argument("--no-services", action="store_true", help="skip the MinIO and MLflow reachability checks")
    add_config_arguments(p)
    return ap


def main(argv=None) -> int:
    """``python -m rest COMMAND ...``; returns the exit code."""
    args = build_parser().parse_args(argv)
    _setup_logging()
    from rest.services import storage

    # The core reads no environment; this boundary does, once: s3:// inputs use this store.
    storage.configure(storage.S3Settings.from_env(os.environ))
    try:
        cfg = load_config(args.config, overrides_from_args(args))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.command == "config":
        sys.stdout.write(markdown_reference() if args.markdown else dump_yaml(cfg))
        return 0
    if args.command == "validate":
        return _validate(cfg, args)
    if args.command == "reward-model":
        return _reward_model(cfg, args)
    if args.command == "bootstrap":
        from rest.steps.bootstrap import bootstrap
        from rest.steps.data import prepare
        from dataclasses import replace

        work = args.work_dir or args.out.rstrip("/") + ".work"
        data = prepare(cfg.data, os.path.join(work, "data"))
        info = bootstrap(replace(cfg.bootstrap, policy=""), data.train, data.valid, args.out,
                         reward=cfg.score.reward, checkpoint_dir=os.path.join(work, "checkpoint"),
                         threads=args.threads)
        print(json.dumps({k: v for k, v in info.items() if k != "bootstrap_config"}, indent=2, default=str))
        return 0
    return 1


def _reward_model(cfg, args) -> int:
    """``python -m rest reward-model``: train, save, print the held-out figures."""
    from rest.rewards.learned import train_reward_model

    if not cfg.reward_model.init and not args.tokenizer:
        print("error: --tokenizer POLICY_DIR is needed for a from-scratch reward model "
              "(or set --reward_model.init to a checkpoint)", file=sys.stderr)
        return 2
    try:
        stats = train_reward_model(args.scored, cfg.reward_model, args.out, args.tokenizer)
    except (ValueError, OSError) as e:  # bad inputs: the message names the file and the fix
        print(f"error: {e}", file=sys.stderr)
        return 2
    keys = ("metric", "kendall_tau", "spearman_rho", "samples_kendall_tau", "samples_spearman_rho",
            "per_source_kendall_tau", "mse", "mean_prediction",
            "mean_truth", "train_pairs", "valid_pairs", "train_sources", "valid_sources", "best_epoch", "wall_s")
    print(json.dumps({**{k: stats[k] for k in keys}, "out": args.out}, indent=2))
    return 0


def _validate(cfg, args) -> int:
    """``python -m rest validate``: the pipeline's validate task, from the shell."""
    from rest.steps.validate import validate_run

    s3_settings, tracking_uri = None, None
    try:
        if not args.no_services:
            from rest.services.storage import S3Settings

            # The CLI is a boundary like a component: it reads the environment and passes it in.
            s3_settings = S3Settings.from_env(os.environ)
            tracking_uri = os.environ.get("MLFLOW_TRACKING_URI") or None
        validate_run(cfg.to_dict(), train=cfg.data.train, valid=cfg.data.valid, test=cfg.data.test,
                     initial_policy=cfg.bootstrap.policy, check_data=not args.no_data,
                     s3_settings=s3_settings, tracking_uri=tracking_uri)
    except (ValueError, RuntimeError) as e:  # every validation error names its input and the fix
        print(f"error: {e}", file=sys.stderr)
        return 2
    checked = ["config", "reward"] + (["policy"] if cfg.bootstrap.policy else []) + \
        ([] if args.no_data else ["data"]) + (["object store"] if s3_settings else []) + \
        (["tracking server"] if tracking_uri else [])
    print(f"ok: {', '.join(checked)} (G={cfg.loop.grow_steps}, I={cfg.filter.improve_steps})")
    return 0


if __name__ == "__main__":
    sys.exit(main())


def promote_cli(argv: Sequence[str] | None = None, args: argparse.Namespace | None = None) -> int:
    """``promote --model-name NAME --version V --test PATH``: decide and print the decision as JSON.

    ``args``: already parsed by a parser with add_promote_arguments (pipeline.py's).
    """
    from rest.config import DataConfig
    from rest.steps.data import load_pairs, read_rows
    from rest.services.registry import promote
    from rest.services.tracking import tracking_uri_from_env

    if args is None:
        ap = argparse.ArgumentParser(prog="promote", description=promote.__doc__.split("\n")[0])
        args = add_promote_arguments(ap).parse_args(argv)
    if args.test.endswith(".jsonl") and not args.test.startswith("s3://"):
        rows = read_rows(args.test)
    else:
        rows = load_pairs(args.test, DataConfig(train=args.test, valid="", test=""))
    decision = promote(args.model_name, args.version, rows, args.tracking_uri or tracking_uri_from_env(os.environ),
                       metric=args.metric, n_bootstrap=args.n_bootstrap, alpha=args.alpha, seed=args.seed)
    text = json.dumps(decision, indent=2, sort_keys=True)
    if args.output:
        from rest.services.files import write_json

        write_json(args.output, decision)
    sys.stdout.write(text + "\n")
    return 0
