"""``python -m rest``: run single core steps from the shell (the pipeline CLI is pipeline.py)."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from .config import (ConfigError, add_config_arguments, dump_yaml, load_config, markdown_reference,
                     overrides_from_args)


def _setup_logging():
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr)


def main(argv=None) -> int:
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
    add_config_arguments(p, sections=("data", "bootstrap"))

    args = ap.parse_args(argv)
    _setup_logging()
    try:
        cfg = load_config(args.config, overrides_from_args(args))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.command == "config":
        sys.stdout.write(markdown_reference() if args.markdown else dump_yaml(cfg))
        return 0
    if args.command == "bootstrap":
        from .bootstrap import bootstrap
        from .data import prepare
        from dataclasses import replace

        work = args.work_dir or args.out.rstrip("/") + ".work"
        data = prepare(cfg.data, os.path.join(work, "data"))
        info = bootstrap(replace(cfg.bootstrap, policy=""), data.train, data.valid, args.out,
                         reward=cfg.score.reward, checkpoint_dir=os.path.join(work, "checkpoint"))
        print(json.dumps({k: v for k, v in info.items() if k != "bootstrap_config"}, indent=2, default=str))
        return 0
    return 1


if __name__ == "__main__":
    sys.exit(main())
