"""Best-of-N of a finished run: BC, the last ReST step and the references-only control (issue 15).

ReST should sharpen the sample distribution, not only the greedy output: the paper's ReST
policy reaches BC's best-of-200 reward with fewer than 10 samples. This script answers
that question for any finished ``run-local`` directory (the main job, an ablation arm):

    python bench/best_of_n.py runs/default                        # N up to 64 at T = 1.0
    python bench/best_of_n.py runs/ablation/all-sources --temperature 0.8

It reads the run's ``summary.json`` for the policies (BC, the last ReST step, the control)
and the reward, and BC's evaluation for the test sentences as the run evaluated them; samples ``--n`` translations of every test sentence from each
policy (the run's evaluation backend, one seed for all, so BC and a policy equal to it give
equal samples); scores them with the run's reward; and reports each policy's expected
best-of-N curve (the unbiased estimate from all N samples, ``rest.steps.evaluate``) and the
smallest N at which ReST, and the control, reach BC's best-of-``--n``, with a 95 % interval
from a paired bootstrap over test sentences ("not by N" when the interval reaches past it).

Each policy's samples' rewards are kept in ``RUN/best-of-n/`` (one file per policy, N and
temperature), so a second call, or one at a smaller ``--n``, re-reads them instead of
sampling again; ``--fresh`` samples again. Outputs: ``RUN/best-of-n/best_of_n[-tT].md`` and
``.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import compared_steps, machine  # noqa: E402


def policies(summary: dict) -> list[dict]:
    """BC, the last ReST step and the control of a run's ``summary.json``, in that order (control if it ran)."""
    bc, rest, control = compared_steps(summary)
    if not (bc and rest):
        raise SystemExit("the run's summary.json names no BC step or no last ReST step: did the run finish?")
    out = [dict(bc, role="BC"), dict(rest, role=f"ReST G{rest['g']} I{rest['i']}")]
    if control:
        out.append(dict(control, role="references-only control"))
    return out


def sample_rewards(policy: dict, rows: list[dict], reward: str, n: int, temperature: float, cfg: dict,
                   record: str, fresh: bool) -> list[list[float]]:
    """Every test sentence's ``n`` sample rewards from ``policy`` (re-read from ``record`` unless ``fresh``)."""
    from rest.model.policy import load_policy
    from rest.rewards.metrics import get_reward
    from rest.services.files import write_json
    from rest.steps.evaluate import best_of_n

    if not fresh and os.path.exists(record):
        with open(record) as f:
            kept = json.load(f)
        if kept.get("model_path") == policy["model_path"] and kept["n"] >= n and len(kept["rewards"]) == len(rows):
            print(f"[{policy['role']}] re-read {record}", flush=True)
            return [r[:n] for r in kept["rewards"]]
    t0 = time.time()
    model, tok = load_policy(policy["model_path"])
    got = best_of_n(model, tok, rows, get_reward(reward), n, int(cfg.get("batch_sentences", 64)), seed=0,
                    backend=cfg.get("backend", "ctranslate2"), temperature=temperature, keep_rewards=True,
                    compute_type=cfg.get("compute_type", "default"),
                    max_length_ratio=float(cfg.get("max_length_ratio", 2.0)))
    rewards = got["best_of_n_rewards"]
    write_json(record, {"model_path": policy["model_path"], "n": n, "temperature": temperature,
                        "wall_s": round(time.time() - t0, 1), "rewards": rewards})
    print(f"[{policy['role']}] best-of-{n} {got['best_of_n_reward']:.4f} in {time.time() - t0:.0f} s", flush=True)
    return rewards


def grid(n: int) -> list[int]:
    """1, 2, 4, .. up to n, and n itself."""
    out, m = [], 1
    while m <= n:
        out.append(m)
        m *= 2
    return out if out[-1] == n else out + [n]


def markdown(result: dict) -> str:
    """The report: each policy's curve, then how many samples ReST and the control need to reach BC's best."""
    ns = grid(result["n"])
    lines = [f"# Best-of-N on {result['sentences']} test sentences at T = {result['temperature']:g}", "",
             f"Run: `{result['run']}`; reward: {result['reward']}; command: `{result['command']}`", "",
             "| policy | " + " | ".join(f"N={m}" for m in ns) + " |", "|---|" + "---|" * len(ns)]
    for p in result["policies"]:
        lines.append(f"| {p['role']} | " + " | ".join(f"{p['curve'][str(m)]:.4f}" for m in ns) + " |")
    s = result["summary"]
    n = result["n"]

    def reach(value, interval=None):
        if value is None:
            return f"not by {n}"
        if interval is None:
            return f"N = {value}"
        hi = interval[1] if interval[1] is not None else f"not by {n}"
        return f"N = {value} (95 % interval {interval[0]}–{hi})"

    lines += ["", f"BC's best-of-{n}: **{s['bc_best_of_max']:.4f}**.",
              f"- ReST reaches it at **{reach(s['smallest_n_rest_reaches_bc_max'], s.get('interval_95'))}**"
              + (f"; in {s['share_of_resamples_below_max']:.0%} of the bootstrap resamples with fewer than {n}."
                 if s.get("share_of_resamples_below_max") is not None else "."),
              f"- the control reaches it at {reach(s['smallest_n_control_reaches_bc_max'])}."]
    return "\n".join(lines) + "\n"


def run(args) -> dict:
    """Sample, score and compare; write the report beside the run."""
    from quality import best_of_n_summary
    from rest.services.files import write_json
    from rest.steps.data import read_rows
    from rest.steps.evaluate import best_of_table

    with open(os.path.join(args.run, "summary.json")) as f:
        summary = json.load(f)
    cfg = summary["config"]
    # The test rows exactly as the run evaluated them (after its own data preparation and max_test).
    evaluated = os.path.join(compared_steps(summary)[0]["eval_path"], "translations.jsonl")
    rows = [{"id": r["id"], "source": r["source"], "target": r["reference"]} for r in read_rows(evaluated)]
    rows = rows[:args.max_test] if args.max_test else rows
    if not rows:
        raise SystemExit(f"{evaluated} holds no test sentences")
    reward = cfg["score"]["reward"]
    out_dir = os.path.join(args.run, "best-of-n")
    suffix = "" if args.temperature == 1.0 else f"-t{args.temperature:g}"
    found = []
    for p in policies(summary):
        slug = p["role"].split()[0].lower()
        record = os.path.join(out_dir, f"{slug}-n{args.n}-{len(rows)}{suffix}.json")
        rewards = sample_rewards(p, rows, reward, args.n, args.temperature, cfg["evaluate"], record, args.fresh)
        table = best_of_table(rewards).mean(axis=0)
        found.append({"role": p["role"], "policy": p["model_path"], "path": p["model_path"], "control": p["control"],
                      "best_of_n": {str(m): float(table[m - 1]) for m in grid(args.n)},
                      "best_of_n_rewards": rewards})
    # quality.best_of_n_summary: ReST is the row whose path is the final policy's.
    s = best_of_n_summary(found, found[1]["path"], resamples=args.resamples)
    result = {"run": args.run, "n": args.n, "temperature": args.temperature, "sentences": len(rows), "reward": reward,
              "command": "python bench/best_of_n.py " + " ".join(sys.argv[1:]), "machine": machine(),
              "policies": [{"role": p["role"], "policy": p["policy"], "curve": p["best_of_n"]} for p in found],
              "summary": {k: v for k, v in s.items() if k not in ("bc", "rest", "control")}}
    write_json(os.path.join(out_dir, f"best_of_n{suffix}.json"), result)
    report = markdown(result)
    with open(os.path.join(out_dir, f"best_of_n{suffix}.md"), "w") as f:
        f.write(report)
    print(report, flush=True)
    return result


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("run", help="a finished run-local output directory (it holds summary.json)")
    ap.add_argument("--n", type=int, default=64, help="samples per test sentence (default: %(default)s)")
    ap.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default: %(default)s)")
    ap.add_argument("--max-test", type=int, default=0, help="first test sentences only (0 = all)")
    ap.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples for the interval")
    ap.add_argument("--fresh", action="store_true", help="sample again even where a record exists")
    args = ap.parse_args(argv)
    import logging

    # rest's progress lines (samples per second while sampling) go through logging.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if not os.path.exists(os.path.join(args.run, "summary.json")):
        ap.error(f"{args.run} holds no summary.json: give a finished run-local output directory")
    if args.n < 2 or args.temperature <= 0:
        ap.error("--n must be >= 2 and --temperature > 0")
    return run(args)


if __name__ == "__main__":
    main()
