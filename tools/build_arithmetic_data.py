#!/usr/bin/env python
"""Write the bundled verifiable task: multi-digit addition with worked solutions (no download).

``data/arithmetic-addition/`` is this script's output with its defaults, kept in the
repository so that ``python pipeline.py run-local --config configs/rest-em-arithmetic.yaml``
works from a fresh clone; ``tests/test_rest_em.py`` checks that the files are exactly what
the code generates (same bytes, SHA-256 in the directory's README). Regenerate, or make a
variant (more worked solutions, other digits, another seed)::

    python tools/build_arithmetic_data.py --out data/arithmetic-addition
    python tools/build_arithmetic_data.py --out /tmp/add-500 --worked 500 --seed 1

What the files hold and why the task suits ReST-EM: see ``rest/tasks/arithmetic.py`` and
the README written beside the files.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

DEFAULT_OUT = os.path.join(ROOT, "data", "arithmetic-addition")
# The bundled task's settings (the defaults below): the held-out sets first, so the same seed
# always holds out the same problems.
DEFAULTS = dict(seed=0, n_worked=300, n_answer_only=4000, n_test=500, digits=(2, 3, 4), hard_digits=(5,),
                n_hard_test=300, n_hard_answer_only=1000, n_valid=200)


def build(out_dir: str = DEFAULT_OUT, **overrides) -> dict:
    from rest.tasks.arithmetic import build_task

    return build_task(out_dir, **{**DEFAULTS, **overrides})


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=DEFAULT_OUT, help="output directory (default: data/arithmetic-addition)")
    ap.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    ap.add_argument("--worked", type=int, default=DEFAULTS["n_worked"], help="problems with worked solutions (BC)")
    ap.add_argument("--answer-only", type=int, default=DEFAULTS["n_answer_only"],
                    help="Grow pool problems with the answer only, at the training digit counts")
    ap.add_argument("--hard-answer-only", type=int, default=DEFAULTS["n_hard_answer_only"],
                    help="Grow pool problems with more digits than any worked solution")
    ap.add_argument("--test", type=int, default=DEFAULTS["n_test"])
    ap.add_argument("--hard-test", type=int, default=DEFAULTS["n_hard_test"])
    ap.add_argument("--valid", type=int, default=DEFAULTS["n_valid"])
    ap.add_argument("--digits", default="2,3,4", help="digit counts of worked, pool, valid and test problems")
    ap.add_argument("--hard-digits", default="5", help="digit counts of the hard pool and hard test problems")
    args = ap.parse_args(argv)
    result = build(args.out, seed=args.seed, n_worked=args.worked, n_answer_only=args.answer_only,
                   n_hard_answer_only=args.hard_answer_only, n_test=args.test, n_hard_test=args.hard_test,
                   n_valid=args.valid, digits=tuple(int(d) for d in args.digits.split(",")),
                   hard_digits=tuple(int(d) for d in args.hard_digits.split(",")))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
