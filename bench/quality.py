"""Quality of ReST against BC and the references-only control, on the core functions (no KFP).

From a given BC policy (``--policy``), on the test split:

- BC;
- ReST G=1 I=0: BC fine-tuned on the unfiltered grown set (samples + references);
- ReST G=1 I=1..I with the rising thresholds, then (``--grow-steps 2``) G=2 I=1..I;
- the references-only control: BC continued on the references of the Grow sources for as
  many optimizer steps as all ReST Improve steps took together (G=1 I=0 excluded);

each with test mean reward, BLEU, chrF, the kept fraction of its filter, and CPU seconds
(``time.process_time``) per stage. Then best-of-N reward for N in {1, 4, 16, 64} for BC
and the final ReST policy, and the smallest N at which ReST reaches BC's best-of-64.
Train on chrF (default) and report BLEU too; ``--reward bleu`` is the reverse. A step whose
validation (training) reward rose while test BLEU fell by more than 0.5 is flagged as
reward hacking.

Writes ``quality.md`` (tables), ``quality.json`` and ``quality.png`` into ``--output-dir``,
and logs them to an MLflow run when MLFLOW_TRACKING_URI is set.

    python bench/quality.py --policy models/bc-libreoffice-de-en --output-dir runs/quality
    python bench/quality.py --quick --output-dir /tmp/quality-quick      # a minutes-long smoke run
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import default_policy, machine, staged  # noqa: E402
from rest.rewards.spec import POINTS_TOLERANCE, is_reward_hacking  # noqa: E402

BEST_OF = (1, 2, 4, 8, 16, 32, 64)  # the curve is estimated from all 64 samples at each N
HACKING_DROP = POINTS_TOLERANCE  # points of the other metric (BLEU or chrF): the one rule's


def _parse(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policy", default=default_policy(), help="BC policy directory (default: %(default)s)")
    ap.add_argument("--config", help="YAML run config (as for pipeline.py); flags below override it")
    ap.add_argument("--train", help="training pairs (TSV/JSONL); default: the config's / bundled data")
    ap.add_argument("--valid")
    ap.add_argument("--test")
    ap.add_argument("--source-column")
    ap.add_argument("--target-column")
    ap.add_argument("--reward", choices=["chrf", "bleu"], help="training reward (default: the config's, chrf)")
    ap.add_argument("--grow-steps", type=int, default=2, help="G (1 or 2)")
    ap.add_argument("--thresholds", help="comma-separated Improve thresholds (default: the config's)")
    ap.add_argument("--grow-sources", type=int, help="sources per Grow step (default: the config's)")
    ap.add_argument("--num-samples", type=int, help="candidates per source (default: the config's)")
    ap.add_argument("--backend", choices=["hf", "ctranslate2"], help="generation backend for Grow and evaluation")
    ap.add_argument("--max-test", type=int, help="test sentences (0 = all)")
    ap.add_argument("--best-of", default=",".join(map(str, BEST_OF)), help="N values for best-of-N")
    ap.add_argument("--best-of-sources", type=int, default=0,
                    help="test sentences used for best-of-N (0 = all; ~2 min per policy for 1,160 × 64 on CTranslate2)")
    ap.add_argument("--best-of-temperature", type=float,
                    help="sampling temperature of best-of-N (default 1.0); reports go to quality-t<T>.{md,json,png}")
    ap.add_argument("--skip-unfiltered", action="store_true",
                    help="leave out the G=1 I=0 row (BC on the whole unfiltered grown set: the slowest "
                         "fine-tune when Grow samples all training sources)")
    ap.add_argument("--quick", action="store_true",
                    help="tiny smoke run: 40 Grow sources, 2 samples, 24 test sentences, 2 thresholds, "
                         "best-of up to 4, G=1 (numbers are meaningless, the wiring is tested)")
    ap.add_argument("--output-dir", default="runs/quality")
    ap.add_argument("--reuse", action="store_true",
                    help="reuse the finished stages found in --output-dir (an interrupted run continues; "
                         "reused rows keep the CPU seconds recorded when they ran, if any)")
    return ap.parse_args(argv)


def _config(args):
    from rest.config import load_config

    o = {}
    for flag, key in (("train", "data.train"), ("valid", "data.valid"), ("test", "data.test"),
                      ("source_column", "data.source_column"), ("target_column", "data.target_column"),
                      ("reward", "score.reward"), ("thresholds", "filter.thresholds"),
                      ("grow_sources", "data.grow_sources"), ("num_samples", "sample.num_samples"),
                      ("max_test", "data.max_test"), ("backend", "sample.backend")):
        v = getattr(args, flag)
        if v is not None:
            o[key] = str(v)
    if args.backend:
        o["evaluate.backend"] = args.backend
    if args.best_of_temperature is not None:
        o["evaluate.best_of_n_temperature"] = str(args.best_of_temperature)
    o["loop.grow_steps"] = str(args.grow_steps)
    o["bootstrap.policy"] = args.policy
    if args.quick:
        o.setdefault("data.grow_sources", "40")
        o.setdefault("sample.num_samples", "2")
        o.setdefault("data.max_test", "24")
        o.setdefault("data.max_valid", "24")
        o.setdefault("filter.thresholds", "0.3,0.4")
        o["finetune.epochs"] = "1"
        o["loop.grow_steps"] = "1"
    return load_config(args.config, o)


def _evaluate(stage, policy_dir, data, cfg, out_dir, row, best_of=None, best_of_sources=0):
    """Test metrics of a policy into ``row`` (and best-of-N rewards when asked)."""
    from rest.steps.evaluate import best_of_n, evaluate

    m = stage(row, "evaluate", os.path.join(out_dir, "bench-stage.json"),
               lambda: evaluate(policy_dir, data.test, cfg.evaluate, out_dir, reward=cfg.score.reward))
    row.update(test_reward=m["test_reward"], test_bleu=m["test_bleu"], test_chrf=m["test_chrf"])
    if best_of:
        from rest.steps.data import read_rows
        from rest.model.policy import load_policy
        from rest.rewards.metrics import get_reward

        n = max(best_of)
        test_rows = read_rows(data.test)
        test_rows = test_rows[:best_of_sources] if best_of_sources else test_rows
        row["best_of_n_sources"] = len(test_rows)

        def run_best_of():
            model, tok = load_policy(policy_dir)
            return best_of_n(model, tok, test_rows, get_reward(cfg.score.reward), n, cfg.evaluate.batch_sentences,
                             seed=cfg.sample.seed, backend=cfg.evaluate.backend, keep_rewards=True,
                             temperature=cfg.evaluate.best_of_n_temperature)

        # "unbiased" in the name: records of the earlier first-m estimate are not reused.
        r = stage(row, "best_of_n", os.path.join(out_dir, f"bench-best-of-{n}-{len(test_rows)}-unbiased{_t_suffix(cfg)}.json"),
                   run_best_of)
        # best_of_n reports 1, 2, 4, .. n: keep the asked N (all powers of two here).
        row["best_of_n"] = {str(k): r["best_of_n_curve"][str(k)] for k in best_of if str(k) in r["best_of_n_curve"]}
        row["best_of_n_rewards"] = r["best_of_n_rewards"]  # used by best_of_n_summary, not written to the report
    return row


def _t_suffix(cfg) -> str:
    """Record-name suffix for a best-of-N temperature other than 1.0 (T = 1.0 keeps the old names)."""
    t = cfg.evaluate.best_of_n_temperature
    return "" if t == 1.0 else f"-t{t:g}"


def run(args) -> dict:

    def stage(row: dict, name: str, record: str, fn):
        """Run a stage, or re-read its record with --reuse."""
        return staged(row, name, record, fn, args.reuse)

    from rest.steps.data import prepare
    from rest.steps.filter import filter_scored
    from rest.steps.finetune import control, improve
    from rest.services.files import read_json, read_jsonl, write_jsonl
    from rest.model.policy import set_threads
    from rest.steps.sample import grow
    from rest.steps.score import score

    cfg = _config(args)
    best_of = sorted({int(x) for x in args.best_of.split(",") if x.strip()})
    if args.quick:
        best_of = [n for n in best_of if n <= 4] or [1, 4]
    out = os.path.abspath(args.output_dir)
    work = os.path.join(out, "work")
    os.makedirs(work, exist_ok=True)
    set_threads(cfg.sample.threads)
    t_start = time.time()
    data = prepare(cfg.data, os.path.join(work, "data"))
    reward = cfg.score.reward
    rows: list[dict] = []

    bc = _evaluate(stage, args.policy, data, cfg, os.path.join(work, "eval-bc"),
                   {"policy": "BC", "g": 0, "i": 0, "path": args.policy, "valid_reward": None}, best_of,
                   args.best_of_sources)
    rows.append(bc)

    policy, total_steps, ft_cfg = args.policy, 0, cfg.finetune
    final = args.policy
    for g in range(1, cfg.loop.grow_steps + 1):
        gdir = os.path.join(work, f"grow-{g}")
        grow_row: dict = {}
        stage(grow_row, "sample", os.path.join(gdir, "bench-sample.json"),
               lambda: grow(policy, data.grow, cfg.sample, os.path.join(gdir, "sample"), g))
        ss = stage(grow_row, "score", os.path.join(gdir, "bench-score.json"),
                    lambda: score(os.path.join(gdir, "sample"), cfg.score, os.path.join(gdir, "score")))
        grow_row["grown_mean_reward"] = ss["mean_reward"]
        if g == 1 and not args.skip_unfiltered:
            # G=1 I=0: BC fine-tuned on everything grown, unfiltered (same settings as Improve step 1).
            row = {"policy": "ReST G=1 I=0 (unfiltered)", "g": 1, "i": 0, "kept_fraction": 1.0, **grow_row}
            unfiltered = os.path.join(gdir, "unfiltered")
            os.makedirs(unfiltered, exist_ok=True)
            write_jsonl(os.path.join(unfiltered, "data.jsonl"), read_jsonl(os.path.join(gdir, "score", "data.jsonl")))
            info = stage(row, "finetune", os.path.join(gdir, "bench-i0.json"),
                          lambda: improve(args.policy, unfiltered, data.valid, ft_cfg, 1,
                                          os.path.join(gdir, "i0-policy"), reward))
            row.update(path=os.path.join(gdir, "i0-policy"), optimizer_steps=info["optimizer_steps"],
                       valid_reward=info["best_valid_reward"], start_valid_reward=info["start_valid_reward"])
            rows.append(_evaluate(stage, row["path"], data, cfg, os.path.join(gdir, "eval-i0"), row))
        for i in range(1, cfg.filter.improve_steps + 1):
            # The Grow stage's CPU seconds show on the first row of that Grow step.
            row = {"policy": f"ReST G={g} I={i}", "g": g, "i": i, **(grow_row if i == 1 and (g > 1 or args.skip_unfiltered) else {})}
            fdir, pdir = os.path.join(gdir, f"filter-{i}"), os.path.join(gdir, f"policy-{i}")
            fs = stage(row, "filter", os.path.join(gdir, f"bench-filter-{i}.json"),
                        lambda: filter_scored(os.path.join(gdir, "score"), cfg.filter, i, fdir))
            row.update(threshold=fs["threshold_used"], kept_fraction=fs["kept_fraction"])
            info = stage(row, "finetune", os.path.join(gdir, f"bench-improve-{i}.json"),
                          lambda: improve(policy, fdir, data.valid, ft_cfg, i, pdir, reward))
            row.update(path=pdir, optimizer_steps=info["optimizer_steps"], valid_reward=info["best_valid_reward"],
                       start_valid_reward=info["start_valid_reward"])
            total_steps += info["optimizer_steps"]
            policy = final = pdir
            rows.append(_evaluate(stage, pdir, data, cfg, os.path.join(gdir, f"eval-{i}"), row,
                                  best_of if (g == cfg.loop.grow_steps and i == cfg.filter.improve_steps) else None,
                                  args.best_of_sources))

    # The control: the references of the Grow sources, as many steps as all Improve steps, and
    # as many validation checks as ReST had (the best of more noisy checks would favour it).
    rest_checks = cfg.loop.grow_steps * cfg.filter.improve_steps * cfg.finetune.epochs
    row = {"policy": "control (references only)", "g": 0, "i": 0, "control": True}
    info = stage(row, "finetune", os.path.join(work, f"bench-control-{total_steps}.json"),
                  lambda: control(args.policy, data.grow, data.valid, ft_cfg, total_steps,
                                  os.path.join(work, "control"), reward, rest_checks=rest_checks))
    row.update(path=os.path.join(work, "control"), optimizer_steps=info["optimizer_steps"],
               valid_reward=info["best_valid_reward"], start_valid_reward=info["start_valid_reward"])
    # Best-of-N for the control too: a best-of-N gain it also gets is just more training.
    rows.append(_evaluate(stage, row["path"], data, cfg, os.path.join(work, "eval-control"), row, best_of,
                          args.best_of_sources))

    flag_reward_hacking(rows, reward)
    result = {"bench": "quality", "machine": machine(), "policy": args.policy, "reward": reward,
              "other_metric": "BLEU" if reward == "chrf" else "chrF", "quick": args.quick,
              "config": dataclasses.asdict(cfg), "best_of_n": best_of_n_summary(rows, final),
              "rows": [{k: v for k, v in r.items() if k != "best_of_n_rewards"} for r in rows],
              "wall_s": _wall(rows, time.time() - t_start, args.reuse), "data": read_json(os.path.join(work, "data", "stats.json"))}
    write_outputs(result, out, _t_suffix(cfg))
    return result


def _wall(rows: list[dict], elapsed: float, reuse: bool) -> float:
    """This run's wall time; with --reuse, the stages' recorded wall times summed (reused stages took ~0 s now)."""
    if not reuse:
        return round(elapsed, 1)
    return round(sum(v for r in rows for k, v in r.items() if k.endswith("_wall_s")), 1)


def flag_reward_hacking(rows: list[dict], reward: str = "chrf") -> None:
    """A step hacks the reward when its training (validation) reward rose but the other test metric fell > 0.5 vs BC.

    The other metric is BLEU for a chrF reward and chrF for a BLEU reward.
    """
    other = "test_chrf" if reward == "bleu" else "test_bleu"
    bc = rows[0]
    for r in rows[1:]:
        r["other_change_vs_bc"] = r[other] - bc[other]
        r["reward_hacking"] = is_reward_hacking(r.get("start_valid_reward"), r.get("valid_reward"), bc[other], r[other],
                                                HACKING_DROP)


def _reach(row: dict, target: float) -> int | None:
    """Smallest N at which ``row``'s best-of-N reaches ``target``: at any N from every sample's
    reward when the row kept them, else at the curve's grid points."""
    from rest.steps.evaluate import smallest_n_reaching

    if row.get("best_of_n_rewards"):
        return smallest_n_reaching(row["best_of_n_rewards"], target)
    curve = row["best_of_n"]
    return next((int(n) for n in sorted(curve, key=int) if curve[n] >= target), None)


def best_of_n_summary(rows: list[dict], final_path: str, resamples: int = 1000, seed: int = 0) -> dict:
    """BC's and the final ReST policy's best-of-N curves; the smallest N (any integer) at which
    ReST reaches BC's best-of-max, with a paired bootstrap interval over test sentences."""
    import numpy as np

    from rest.steps.evaluate import best_of_table, smallest_n_reaching

    bc = rows[0].get("best_of_n") or {}
    rest_row = next((r for r in rows if r.get("path") == final_path and r.get("best_of_n")), None)
    rest = rest_row.get("best_of_n") if rest_row else {}
    target = bc.get(str(max(map(int, bc)))) if bc else None
    control_row = next((r for r in rows if r.get("control") and r.get("best_of_n")), None)
    out = {"bc": bc, "rest": rest, "rest_policy": rest_row["policy"] if rest_row else None,
           "bc_best_of_max": target, "smallest_n_rest_reaches_bc_max": None, "interval_95": None,
           "control": control_row["best_of_n"] if control_row else {},
           "smallest_n_control_reaches_bc_max": _reach(control_row, target) if target is not None and control_row else None}
    if target is None or not rest:
        return out
    out["smallest_n_rest_reaches_bc_max"] = _reach(rest_row, target)
    bc_rewards, rest_rewards = rows[0].get("best_of_n_rewards"), rest_row.get("best_of_n_rewards")
    if not (bc_rewards and rest_rewards):  # no interval from the curve's grid points alone
        return out
    n_max = min(len(v) for v in bc_rewards)
    # Resample test sentences (the same ones for both policies); "not reached" counts as n_max + 1.
    bc_table, rest_table = best_of_table(bc_rewards), best_of_table(rest_rewards)
    rng, found = np.random.default_rng(seed), []
    for _ in range(resamples):
        idx = rng.integers(0, len(bc_rewards), len(bc_rewards))
        t = bc_table[idx, n_max - 1].mean()
        found.append(smallest_n_reaching(rest_table[idx], t) or n_max + 1)
    found.sort()
    lo, hi = found[int(0.025 * resamples)], found[min(resamples - 1, int(0.975 * resamples))]
    out.update(interval_95=[lo, hi if hi <= n_max else None], resamples=resamples,
               share_of_resamples_below_max=sum(n < n_max for n in found) / resamples)
    return out


def markdown(result: dict) -> str:
    other = result["other_metric"]
    lines = [f"# ReST quality (reward: {result['reward']}; {other} reported beside it)", "",
             f"Policy `{result['policy']}`; {result['data']['test']['rows']} test sentences, "
             f"{result['data']['grow']['rows']} Grow sources; wall {result['wall_s']:.0f} s"
             + (" — **quick smoke run: numbers are meaningless**" if result["quick"] else "") + ".", "",
             "| policy | test reward | BLEU | chrF | kept | opt. steps | valid reward | CPU s: sample / score / filter / "
             "finetune / evaluate | reward hacking |", "|---|---|---|---|---|---|---|---|---|"]

    def f(v, fmt):
        return format(v, fmt) if isinstance(v, (int, float)) else "–"

    for r in result["rows"]:
        cpu = " / ".join(f(r.get(f"{s}_cpu_s"), ".0f") for s in ("sample", "score", "filter", "finetune", "evaluate"))
        lines.append(f"| {r['policy']} | {f(r['test_reward'], '.4f')} | {f(r['test_bleu'], '.2f')} | "
                     f"{f(r['test_chrf'], '.2f')} | {f(r.get('kept_fraction'), '.1%')} | "
                     f"{f(r.get('optimizer_steps'), 'd')} | {f(r.get('valid_reward'), '.4f')} | {cpu} | "
                     f"{'**yes**' if r.get('reward_hacking') else 'no' if 'reward_hacking' in r else '–'} |")
    b = result["best_of_n"]
    if b["bc"]:
        ns = sorted(b["bc"], key=int)
        nsrc = result["rows"][0].get("best_of_n_sources", "all")
        lines += ["", f"## Best-of-N test reward ({result['reward']}, samples at T = "
                  f"{result.get('config', {}).get('evaluate', {}).get('best_of_n_temperature', 1.0):g}, {nsrc} test sentences)", "",
                  "| policy | " + " | ".join(f"N={n}" for n in ns) + " |", "|---|" + "---|" * len(ns),
                  "| BC | " + " | ".join(f"{b['bc'][n]:.4f}" for n in ns) + " |"]
        if b["rest"]:
            lines.append(f"| {b['rest_policy']} | " + " | ".join(f(b["rest"].get(n), ".4f") for n in ns) + " |")
        if b.get("control"):
            lines.append("| control (references only) | " + " | ".join(f(b["control"].get(n), ".4f") for n in ns) + " |")
        reach, ci = b["smallest_n_rest_reaches_bc_max"], b.get("interval_95")
        ci_text = ""
        if ci:
            ci_text = (f" (paired bootstrap over test sentences, {b['resamples']} resamples: 95 % interval "
                       f"{ci[0]}–{ci[1] if ci[1] else f'not reached by {ns[-1]}'}; N < {ns[-1]} in "
                       f"{b['share_of_resamples_below_max']:.0%} of resamples)")
        lines += ["", f"Smallest N at which ReST reaches BC's best-of-{ns[-1]} ({b['bc_best_of_max']:.4f}): "
                  + (f"**{reach}**" if reach else f"not reached within N ≤ {ns[-1]}") + ci_text + "."]
        if b.get("control"):
            c = b.get("smallest_n_control_reaches_bc_max")
            lines += ["", "The references-only control reaches it at: "
                      + (f"N = {c}" if c else f"not within N ≤ {ns[-1]}") + "."]
    flagged = [r["policy"] for r in result["rows"] if r.get("reward_hacking")]
    lines += ["", f"Reward hacking (validation reward up, test {other} down by more than "
              f"{HACKING_DROP} vs BC): " + (", ".join(flagged) if flagged else "none") + "."]
    return "\n".join(lines) + "\n"


def plot(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r for r in result["rows"] if not r.get("control")]
    labels = [r["policy"].replace("ReST ", "").replace(" (unfiltered)", "") for r in steps]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    ax = axes[0]
    x = range(len(steps))
    ax.plot(x, [r["test_reward"] for r in steps], "o-", color="C0", label=f"test reward ({result['reward']})")
    ctrl = next((r for r in result["rows"] if r.get("control")), None)
    if ctrl:
        ax.axhline(ctrl["test_reward"], color="C0", ls=":", label="control reward")
    ax.set_xticks(list(x), labels, rotation=30, ha="right")
    ax.set_ylabel("reward")
    ax2 = ax.twinx()
    ax2.plot(x, [r["test_bleu"] for r in steps], "s--", color="C1", label="test BLEU")
    if ctrl:
        ax2.axhline(ctrl["test_bleu"], color="C1", ls=":", label="control BLEU")
    ax2.set_ylabel("BLEU")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=8, loc="lower right")
    ax.set_title("Across ReST steps (test split)")
    ax = axes[1]
    b = result["best_of_n"]
    for name, curve in (("BC", b["bc"]), (b.get("rest_policy") or "ReST", b["rest"]),
                        ("control (references only)", b.get("control"))):
        if curve:
            ns = sorted(curve, key=int)
            ax.plot([int(n) for n in ns], [curve[n] for n in ns], "o-", label=name)
    if b.get("bc_best_of_max") is not None:
        ax.axhline(b["bc_best_of_max"], color="grey", ls=":", label="BC's best of the largest N")
        if b.get("smallest_n_rest_reaches_bc_max"):
            ax.axvline(b["smallest_n_rest_reaches_bc_max"], color="C1", ls=":",
                       label=f"ReST reaches it at N = {b['smallest_n_rest_reaches_bc_max']}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("N (samples per source)")
    ax.set_ylabel(f"best-of-N {result['reward']}")
    ax.set_title("Best-of-N")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(result: dict, out: str, suffix: str = "") -> None:
    paths = {f"quality.{ext}": os.path.join(out, f"quality{suffix}.{ext}") for ext in ("md", "json", "png")}
    with open(paths["quality.md"], "w", encoding="utf-8") as f:
        f.write(markdown(result))
    with open(paths["quality.json"], "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2, default=str)
    plot(result, paths["quality.png"])
    print(markdown(result))
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        import mlflow

        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment(os.environ.get("REST_MLFLOW_EXPERIMENT", "rest-bench"))
        with mlflow.start_run(run_name="bench-quality" + ("-quick" if result["quick"] else "")):
            mlflow.log_param("policy", result["policy"])
            mlflow.log_param("reward", result["reward"])
            for k, r in enumerate(result["rows"]):
                tag = r["policy"].replace(" ", "_").replace("(", "").replace(")", "").replace("=", "")
                for m in ("test_reward", "test_bleu", "test_chrf", "kept_fraction"):
                    if isinstance(r.get(m), (int, float)):
                        mlflow.log_metric(f"{m}.{tag}", r[m])
                        mlflow.log_metric(m, r[m], step=k)
            for path in paths.values():
                mlflow.log_artifact(path)


def main(argv=None) -> dict:
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    return run(_parse(argv))


if __name__ == "__main__":
    main()
