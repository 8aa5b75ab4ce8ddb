"""Where self-training adds what the references cannot: a learned reward on source-only text.

Two cases, each on the held-out test split of its own domain:

- ``hidden``: hide the references of most training pairs (``--visible 0.25`` keeps a quarter);
  the hidden pairs' German sides become source-only text. The base policy is BC trained on
  the visible pairs only (``--base`` to reuse one).
- ``domain``: domain adaptation. The base is the shipped BC policy (trained on the other
  LibreOffice help modules); the source-only text is half of the Math/Draw help pages (the
  test domain), the evaluation split is the other half (split by page, no page on both sides).

In each case, from the same base and the same Grow samples:

1. ReST with the reference-based reward (sentence chrF) on the visible pairs only;
2. ReST with the learned reward: a cross-encoder trained on the visible pairs' samples
   scored by chrF (Kendall τ / Spearman ρ reported on a test split of held-out sources,
   its epoch picked on a separate selection split), scoring the visible pairs' samples and
   references and the source-only samples; Improve mixes them (a global and a per-source
   filter); their checkpoints are picked by the learned reward on validation, rolled back
   when validation chrF falls (``--on-reward-hacking``);
3. one references-only control per ReST arm: the base continued on the visible references
   for exactly that arm's optimizer steps, with as many validation checks, the same
   checkpoint metric and the same guard (``rest.steps.finetune.control(guard=True)``).

Both ReST runs keep the same shares at each Improve step (``--keep 0.5,0.25``: the thresholds
are the matching quantiles of each run's own scores), so neither gets more data. Reported:
test BLEU, chrF, learned reward, true reward (sentence chrF), kept fractions, CPU seconds,
and paired bootstrap tests of test chrF: each ReST arm vs its own control, the learned arm
and its control vs the base, and learned vs chrF reward as the difference of their gains
over their own controls; the p-values are Holm-corrected over the comparisons of a case.

    python bench/reward_model.py --output-dir runs/reward-model              # both cases
    python bench/reward_model.py --case domain --output-dir runs/rm-domain
    python bench/reward_model.py --quick --output-dir /tmp/rm-quick          # minutes; meaningless numbers
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import DATA_DIR, ROOT, machine, staged  # noqa: E402

SHIPPED_BC = os.path.join(ROOT, "models", "bc-libreoffice-de-en")


def _parse(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", choices=["hidden", "domain", "both"], default="both")
    ap.add_argument("--output-dir", default="runs/reward-model")
    ap.add_argument("--visible", type=float, default=0.25, help="hidden case: share of train pairs kept parallel")
    ap.add_argument("--base", help="hidden case: BC policy trained on the visible pairs (default: train one)")
    ap.add_argument("--bc-minutes", type=float, default=20.0, help="hidden case: BC training budget (minutes)")
    ap.add_argument("--grow-sources", type=int, default=2000, help="visible parallel sources per Grow")
    ap.add_argument("--max-sources", type=int, default=2000, help="source-only sentences per Grow (0 = all)")
    ap.add_argument("--num-samples", type=int, default=8)
    ap.add_argument("--keep", default="0.5,0.25", help="share kept at each Improve step (one per step)")
    ap.add_argument("--rm-epochs", type=int, default=2,
                    help="reward-model epochs (the epoch with the best selection-split τ is kept)")
    ap.add_argument("--on-reward-hacking", choices=["warn", "rollback", "stop"], default="rollback",
                    help="the guard of the learned-reward runs (true metric: chrF on validation)")
    ap.add_argument("--bootstrap-samples", type=int, default=1000, help="paired bootstrap resamples")
    ap.add_argument("--reuse", action="store_true", help="reuse finished stages found in --output-dir")
    ap.add_argument("--quick", action="store_true", help="tiny smoke run (numbers are meaningless)")
    return ap.parse_args(argv)


def _page(row_id: str) -> str:
    return row_id.split("#", 1)[0]


def _half(key: str) -> bool:
    return hashlib.sha256(key.encode()).digest()[0] < 128


def _write_tsv(path: str, rows: list[dict], with_target: bool = True) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write("id\tde\ten\n" if with_target else "id\tde\n")
        for r in rows:
            f.write("\t".join([r["id"], r["source"]] + ([r["target"]] if with_target else [])) + "\n")
    return path


def _bundled(split: str) -> list[dict]:
    from rest.config import DataConfig
    from rest.steps.data import load_pairs

    return load_pairs(os.path.join(DATA_DIR, f"{split}.tsv"), DataConfig())


def hidden_case_data(work: str, visible: float, quick: bool) -> dict:
    """Visible train pairs, the hidden pairs' sources as source-only text, the default valid/test."""
    train = _bundled("train")
    if quick:
        train = train[:600]
    # By a hash of the id: the same pairs stay visible however the file is ordered.
    share = {r["id"]: int(hashlib.sha256(r["id"].encode()).hexdigest()[:8], 16) / 16**8 for r in train}
    vis = [r for r in train if share[r["id"]] < visible]
    hid = [r for r in train if share[r["id"]] >= visible]
    return {"train": _write_tsv(os.path.join(work, "visible.tsv"), vis),
            "sources": _write_tsv(os.path.join(work, "hidden-sources.tsv"), hid, with_target=False),
            "valid": os.path.join(DATA_DIR, "valid.tsv"), "test": os.path.join(DATA_DIR, "test.tsv"),
            "visible_pairs": len(vis), "source_only": len(hid)}


def domain_case_data(work: str, quick: bool) -> dict:
    """Default train; Math/Draw help pages split in two: source-only text and the test split."""
    test = _bundled("test")
    mono = [r for r in test if _half(_page(r["id"]))]
    held = [r for r in test if not _half(_page(r["id"]))]
    return {"train": os.path.join(DATA_DIR, "train.tsv"),
            "sources": _write_tsv(os.path.join(work, "domain-sources.tsv"), mono, with_target=False),
            "valid": os.path.join(DATA_DIR, "valid.tsv"), "test": _write_tsv(os.path.join(work, "domain-test.tsv"), held),
            "source_only": len(mono), "test_pairs": len(held),
            "pages": {"source_only": len({_page(r["id"]) for r in mono}), "test": len({_page(r["id"]) for r in held})}}


def _quantile_thresholds(scored_dir: str, keep: list[float], only_parallel: bool = False) -> list[float]:
    """Thresholds that keep the given shares of a scored set (rising: the shares fall)."""
    from rest.services.files import read_jsonl

    rewards = sorted(r["reward"] for r in read_jsonl(os.path.join(scored_dir, "data.jsonl"))
                     if not (only_parallel and r.get("reference") is None))
    out = []
    for share in keep:
        k = min(len(rewards) - 1, max(0, int(round(len(rewards) * (1.0 - share)))))
        out.append(rewards[k])
    # Equal quantiles (many ties) would not rise: nudge, the filter requires rising thresholds.
    for j in range(1, len(out)):
        out[j] = max(out[j], out[j - 1] + 1e-6)
    return [min(1.0, t) for t in out]


def _parallel_only(grown_dir: str, out_dir: str) -> str:
    """The grown rows that have a reference (the reference-based reward cannot score the rest)."""
    from rest.services.files import read_json, read_jsonl, write_json, write_jsonl

    n = write_jsonl(os.path.join(out_dir, "data.jsonl"),
                    (r for r in read_jsonl(os.path.join(grown_dir, "data.jsonl")) if r.get("reference") is not None))
    write_json(os.path.join(out_dir, "stats.json"), {**read_json(os.path.join(grown_dir, "stats.json")), "rows": n})
    return out_dir


def run_case(name: str, data_files: dict, base: str | None, args, out: str) -> dict:
    """One case: base, control, ReST with chrF, ReST with the learned reward; returns its result."""
    from rest.steps.bootstrap import bootstrap
    from rest.config import BootstrapConfig, EvaluateConfig, FilterConfig, load_config
    from rest.steps.data import prepare
    from rest.steps.evaluate import evaluate
    from rest.steps.filter import filter_scored
    from rest.rewards.spec import RewardSpec
    from rest.steps.finetune import control, improve
    from rest.stats import resample_corpus
    from rest.services.files import read_jsonl
    from rest.rewards.learned import train_reward_model
    from rest.steps.sample import grow
    from rest.steps.score import score

    work = os.path.join(out, name)
    reuse = args.reuse
    keep = [float(x) for x in args.keep.split(",") if x.strip()]
    o = {"data.train": data_files["train"], "data.valid": data_files["valid"], "data.test": data_files["test"],
         "data.sources": data_files["sources"], "data.grow_sources": str(args.grow_sources),
         "data.max_sources": str(args.max_sources), "sample.num_samples": str(args.num_samples),
         "sample.backend": "ctranslate2", "evaluate.backend": "ctranslate2", "finetune.epochs": "2",
         "score.reward": "chrf"}
    if args.quick:
        o.update({"data.max_valid": "24", "data.max_test": "40", "finetune.epochs": "1",
                  "reward_model.epochs": "1", "reward_model.d_model": "32", "reward_model.ffn_dim": "64",
                  "reward_model.heads": "2", "reward_model.layers": "1"})
    if args.rm_epochs:
        o["reward_model.epochs"] = str(args.rm_epochs)
    cfg = load_config(None, o)
    data = prepare(cfg.data, os.path.join(work, "data"))
    timing: dict = {}
    if base is None:  # BC on the visible pairs only: its own tokenizer, its own training budget
        bc_cfg = dataclasses.replace(BootstrapConfig(), policy="", max_minutes=args.bc_minutes,
                                     eval_every=100 if args.quick else 400, patience=3,
                                     **({"d_model": 32, "ffn_dim": 64, "layers": 1, "heads": 2, "vocab_size": 500,
                                         "max_epochs": 1} if args.quick else {}))
        base = os.path.join(work, "base")
        info = staged(timing, "bc", os.path.join(work, "bench-bc.json"),
                      lambda: {k: v for k, v in bootstrap(bc_cfg, data.train, data.valid, base,
                                                          checkpoint_dir=os.path.join(work, "bc-ckpt")).items()
                               if k in ("bc_training", "sha256")}, reuse)
        timing["bc_training"] = info.get("bc_training", {})

    grown = os.path.join(work, "grown")
    staged(timing, "sample", os.path.join(work, "bench-sample.json"),
           lambda: grow(base, data.grow, cfg.sample, grown, 1), reuse)
    parallel = _parallel_only(grown, os.path.join(work, "grown-parallel"))
    scored_true = os.path.join(work, "scored-chrf")
    true_stats = staged(timing, "score_chrf", os.path.join(work, "bench-score-chrf.json"),
                        lambda: score(parallel, cfg.score, scored_true), reuse)
    rm_dir = os.path.join(work, "reward-model")
    rm = staged(timing, "reward_model", os.path.join(work, "bench-reward-model.json"),
                lambda: train_reward_model([scored_true], cfg.reward_model, rm_dir, base), reuse)
    learned_score_cfg = dataclasses.replace(cfg.score, reward="reward_model", reward_model_path=rm_dir)
    scored_rm = os.path.join(work, "scored-learned")
    rm_stats = staged(timing, "score_learned", os.path.join(work, "bench-score-learned.json"),
                      lambda: score(grown, learned_score_cfg, scored_rm), reuse)

    eval_cfg = EvaluateConfig(backend="ctranslate2")
    rows = []

    eval_dirs: dict[str, str] = {}

    def evaluate_row(label, policy_dir, row, key=None):
        key = key or label  # names the record: another policy under the same label needs another key
        eval_dirs[label] = os.path.join(work, f"eval-{key}")
        m = staged(row, "evaluate", os.path.join(work, f"bench-eval-{key}.json"),
                   lambda: evaluate(policy_dir, data.test, eval_cfg, eval_dirs[label],
                                    reward=RewardSpec("reward_model", rm_dir, true_metric="chrf")), reuse)
        row.update(policy=label, path=policy_dir, test_bleu=m["test_bleu"], test_chrf=m["test_chrf"],
                   test_learned_reward=m["test_reward"], test_true_reward=m["test_true"])
        rows.append(row)
        return row

    evaluate_row("base", base, {"optimizer_steps": 0})

    def rest_run(label, scored_dir, spec, thresholds, per_source=False):
        policy, steps, row = base, 0, {"thresholds": thresholds, "kept": [], "filter": "global"}
        # The paper's filter with the references, as every figure of this bench was measured (the default
        # filter since 2026-12-03 keeps one sample per source and no references).
        fcfg = FilterConfig(thresholds=thresholds, guard="off", max_per_source=0, keep_references=True)
        if per_source:  # each source keeps its own top share: source-only text cannot be crowded out
            row["filter"] = "per-source"
            fcfg = FilterConfig(mode="percentile", thresholds=[k / 10.0 for k in range(1, len(keep) + 1)],
                                percentiles=[100.0 * (1.0 - k) for k in keep], guard="off", max_per_source=0,
                                keep_references=True)
        for i in range(1, len(thresholds) + 1):
            fdir, pdir = os.path.join(work, f"{label}-filter-{i}"), os.path.join(work, f"{label}-policy-{i}")
            fs = staged(row, f"filter{i}", os.path.join(work, f"bench-{label}-filter-{i}.json"),
                        lambda: filter_scored(scored_dir, fcfg, i, fdir), reuse)
            info = staged(row, f"finetune{i}", os.path.join(work, f"bench-{label}-improve-{i}.json"),
                          lambda: {k: v for k, v in improve(policy, fdir, data.valid, cfg.finetune, i, pdir, spec).items()
                                   if k not in ("losses", "finetune_config")}, reuse)
            row["kept"].append({"step": i, "threshold": fs["threshold_used"], "kept_fraction": fs["kept_fraction"],
                                "kept_references": fs["kept_references"], "kept_samples": fs["kept_samples"],
                                "valid_reward": info["best_valid_reward"], "valid_true": info.get("best_valid_true"),
                                "kept_source_only": sum(1 for r in read_jsonl(os.path.join(fdir, "data.jsonl"))
                                                        if r.get("reference") is None),
                                "reward_hacking": info.get("reward_hacking"), "rolled_back": info.get("rolled_back")})
            steps += info["optimizer_steps"]
            policy = pdir
        row["optimizer_steps"] = steps
        return evaluate_row(label, policy, row)

    chrf_spec = RewardSpec(reward="chrf", true_metric="chrf")
    learned_spec = RewardSpec(reward="reward_model", reward_model_path=rm_dir, true_metric="chrf",
                              on_reward_hacking=args.on_reward_hacking)
    guard = "" if args.on_reward_hacking == "warn" else f"-{args.on_reward_hacking}"
    learned, per_source = "rest-learned" + guard, "rest-learned-per-source" + guard
    arms = {"rest-chrf": rest_run("rest-chrf", scored_true, chrf_spec, _quantile_thresholds(scored_true, keep)),
            learned: rest_run(learned, scored_rm, learned_spec, _quantile_thresholds(scored_rm, keep)),
            per_source: rest_run(per_source, scored_rm, learned_spec, _quantile_thresholds(scored_rm, keep),
                                 per_source=True)}
    for arm, spec in ((learned, learned_spec), (per_source, learned_spec), ("rest-chrf", chrf_spec)):
        arms[arm]["rule"] = selection_rule(spec)

    # One control per ReST arm, held to that arm's rules: its optimizer steps, as many
    # validation checks, the same checkpoint metric and the same reward-hacking guard.
    control_of = {}
    for arm, label, spec in ((learned, "control", learned_spec), (per_source, "control-per-source", learned_spec),
                             ("rest-chrf", "control-chrf", chrf_spec)):
        steps = arms[arm]["optimizer_steps"]
        key = f"control-{spec.reward}-{spec.on_reward_hacking}-{steps}"  # the rule is part of the record's name
        ctrl_dir = os.path.join(work, key)
        ctrl_row = {"matches": arm, "rule": selection_rule(spec), "target_steps": steps}
        info = staged(ctrl_row, "finetune", os.path.join(work, f"bench-{key}.json"),
                      lambda: {k: v for k, v in control(base, data.grow, data.valid, cfg.finetune, steps, ctrl_dir,
                                                        spec, rest_checks=len(keep) * cfg.finetune.epochs,
                                                        guard=True).items()
                               if k not in ("losses", "finetune_config")}, reuse)
        ctrl_row["optimizer_steps"] = info["optimizer_steps"]  # 0 when its guard rolled it back
        ctrl_row.update(reward_hacking=info.get("reward_hacking"), rolled_back=info.get("rolled_back"))
        evaluate_row(label, ctrl_dir, ctrl_row, key=key)
        control_of[arm] = label

    def hyps(label):
        return [r["hypothesis"] for r in read_jsonl(os.path.join(eval_dirs[label], "translations.jsonl"))]

    refs = [r["reference"] for r in read_jsonl(os.path.join(eval_dirs["base"], "translations.jsonl"))]
    paired = compare(lambda label: resample_corpus(hyps(label), refs, "chrf", args.bootstrap_samples),
                     {r["policy"]: r for r in rows}, control_of, learned, per_source)
    return {"case": name, "data": {k: v for k, v in data_files.items() if not isinstance(v, str)},
            "prepared": data.stats, "base": base, "timing": timing, "reward_model": rm,
            "grown_mean_chrf": true_stats["mean_reward"], "grown_mean_learned": rm_stats["mean_reward"],
            "learned_by_origin": rm_stats.get("mean_reward_by_origin"), "rows": rows, "paired_bootstrap": paired,
            "holm_family": len(paired)}


def selection_rule(spec) -> str:
    """How an arm picks its checkpoint and when it is rolled back, in words (the same for an arm and its control)."""
    metric = "learned reward" if spec.reward == "reward_model" else spec.reward
    rule = f"best valid {metric}"
    if spec.true_metric and spec.true_metric != spec.reward and spec.on_reward_hacking != "warn":
        rule += f"; {spec.on_reward_hacking} if valid {spec.true_metric} falls"
    return rule


def _shifted_test(resampled_delta, delta: float) -> tuple[list[float], float]:
    """95 % percentile interval and two-sided bootstrap p-value of a difference (as rest.stats computes them)."""
    import numpy as np

    lo, hi = np.quantile(resampled_delta, [0.025, 0.975])
    far = int(np.sum(np.abs(resampled_delta - delta) >= abs(delta)))
    return [float(lo), float(hi)], float(min(1.0, (far + 1) / (len(resampled_delta) + 1)))


def compare(resample, rows: dict, control_of: dict, learned: str, per_source: str) -> dict:
    """The case's paired chrF tests, each step-matched or against the start, Holm-corrected together.

    ``resample(label)`` gives a system's :func:`rest.stats.resample_corpus` (all with the same
    seed, hence the same resampled sentences); ``rows`` are the result rows by policy label;
    ``control_of`` maps each ReST arm to its own control (same steps and selection rule).
    Every test reads the two-sided bootstrap p-value of the difference (``delta_p_value``);
    ``p_holm`` is it adjusted over all comparisons of the case (Holm–Bonferroni).
    """
    from rest.stats import holm, paired_from_resamples

    cache: dict = {}

    def res(label):
        if label not in cache:
            cache[label] = resample(label)
        return cache[label]

    def steps(label):
        return rows[label]["optimizer_steps"]

    out = {}
    for arm in (learned, per_source, "rest-chrf"):  # each ReST arm against the control run by its rules
        ctrl = control_of[arm]
        # The control's budget is the arm's steps; it keeps fewer only when its guard rolled it back.
        out[f"{arm} vs {ctrl}"] = {**paired_from_resamples(res(ctrl), res(arm)), "kind": "step-matched control",
                                   "steps": [steps(arm), steps(ctrl)], "control_budget": rows[ctrl]["target_steps"],
                                   "rule": rows[arm]["rule"]}
    for label in (learned, control_of[learned]):  # does training help at all: against the start
        out[f"{label} vs base"] = {**paired_from_resamples(res("base"), res(label)), "kind": "vs the start",
                                   "steps": [steps(label), 0], "rule": rows[label]["rule"]}
    # Learned vs chrF reward at matched steps: their kept sets (hence step counts) differ, so
    # compare each one's gain over its own step-matched control: (L − C_L) − (R − C_R).
    a, ca = res(learned), res(control_of[learned])
    b, cb = res("rest-chrf"), res(control_of["rest-chrf"])
    delta = (a["score"] - ca["score"]) - (b["score"] - cb["score"])
    ci, p = _shifted_test((a["resampled"] - ca["resampled"]) - (b["resampled"] - cb["resampled"]), delta)
    out[f"{learned} gain vs rest-chrf gain"] = {
        "kind": "difference of step-matched gains", "metric": a["name"], "delta": delta, "delta_ci": ci,
        "delta_p_value": p, "candidate_score": a["score"] - ca["score"], "baseline_score": b["score"] - cb["score"],
        "steps": [steps(learned), steps("rest-chrf")], "n_bootstrap": a["n_bootstrap"], "seed": a["seed"]}
    for comp, adj in zip(out.values(), holm([c["delta_p_value"] for c in out.values()])):
        comp["p_holm"] = adj
    return out


def markdown(results: list[dict], quick: bool) -> str:
    lines = ["# Learned reward on source-only text vs the references-only control", ""]
    if quick:
        lines += ["**Quick smoke run: the numbers are meaningless.**", ""]
    for res in results:
        rm = res["reward_model"]
        lines += [f"## Case `{res['case']}`", "",
                  f"Data: {json.dumps(res['data'])}; Grow set {res['prepared']['grow']['rows']} sources "
                  f"({res['prepared']['grow'].get('source_only_rows', 0)} source-only); test "
                  f"{res['prepared']['test']['rows']} pairs.", "",
                  f"Reward model (predicts sentence chrF from source + candidate): Kendall τ "
                  f"**{_num(rm.get('kendall_tau'))}**, Spearman ρ **{_num(rm.get('spearman_rho'))}** on a test split "
                  f"of {rm.get('test_pairs')} pairs of held-out sources; its epoch was picked on a separate selection "
                  f"split ({rm.get('valid_pairs')} pairs, τ {_num(rm.get('selection_kendall_tau'))}); trained on "
                  f"{rm.get('train_pairs')}. "
                  f"Mean learned reward of the grown set by origin: "
                  + ", ".join(f"{k} {v:.3f}" for k, v in (res.get("learned_by_origin") or {}).items()) + ".", "",
                  "| policy | test BLEU | test chrF | learned reward | true reward (chrF) | opt. steps | kept per step "
                  "(source-only rows) | checkpoint rule | guard | CPU s (finetune + filter) |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in res["rows"]:
            kept = ", ".join(f"{k['kept_fraction']:.0%} ({k.get('kept_source_only', 0)})"
                             for k in r.get("kept", [])) or "–"
            flags = [f"I{k['step']} " + ("rolled back" if k.get("rolled_back") else "flagged")
                     for k in r.get("kept", []) if k.get("reward_hacking")]
            if r.get("reward_hacking"):  # a control: one run, guarded like the arm it matches
                flags.append("rolled back" if r.get("rolled_back") else "flagged")
            steps = str(r["optimizer_steps"])
            if r.get("matches"):
                steps += f" (of {r['target_steps']}, as {r['matches']})"
            cpu = sum(v for k, v in r.items() if k.endswith("_cpu_s") and k != "evaluate_cpu_s")
            lines.append(f"| {r['policy']} | {r['test_bleu']:.2f} | {r['test_chrf']:.2f} | "
                         f"{r['test_learned_reward']:.4f} | {r['test_true_reward']:.4f} | {steps} | "
                         f"{kept} | {r.get('rule', '–')} | {', '.join(flags) or '–'} | {cpu:.0f} |")
        comps = res["paired_bootstrap"]
        n_bs = next(iter(comps.values()))["n_bootstrap"] if comps else 0
        lines += ["", f"Paired bootstrap of test chrF (sacrebleu's resampling, {n_bs} resamples, the same for every "
                  "system). Each ReST arm is compared with its own control (same optimizer steps, validation checks, "
                  "checkpoint rule and guard); learned vs chrF reward compares their gains over their own controls. "
                  "p: two-sided bootstrap p-value of the difference; Holm: adjusted over the "
                  f"{len(comps)} comparisons of this case. Significant at 5 % only where Holm < 0.05.", "",
                  "| comparison | kind | steps (cand. / base.) | candidate chrF | baseline chrF | difference [95 % CI] "
                  "| p | Holm |", "|---|---|---|---|---|---|---|---|"]
        for k, p in comps.items():
            cand = (f"{p['candidate_mean']:.2f} ± {p['candidate_ci']:.2f}" if "candidate_mean" in p
                    else f"gain {p['candidate_score']:+.2f}")
            base = (f"{p['baseline_mean']:.2f} ± {p['baseline_ci']:.2f}" if "baseline_mean" in p
                    else f"gain {p['baseline_score']:+.2f}")
            lo, hi = p["delta_ci"]
            mark = "**" if p["p_holm"] < 0.05 else ""
            budget = p.get("control_budget")
            steps = f"{p['steps'][0]} / {p['steps'][1]}" + (
                f" (budget {budget}, rolled back)" if budget is not None and budget != p["steps"][1] else "")
            lines.append(f"| {k} | {p['kind']} | {steps} | {cand} | {base} | "
                         f"{mark}{p['delta']:+.2f}{mark} [{lo:+.2f}, {hi:+.2f}] | {p['delta_p_value']:.4f} | "
                         f"{mark}{p['p_holm']:.4f}{mark} |")
        t = res["timing"]
        lines += ["", "CPU seconds: " + ", ".join(f"{k[:-6]} {v:.0f}" for k, v in t.items() if k.endswith("_cpu_s")), ""]
    return "\n".join(lines) + "\n"


def _num(v) -> str:
    return "n/a" if not isinstance(v, (int, float)) or v != v else f"{v:.3f}"


def plot(results: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4.2), squeeze=False)
    for ax, res in zip(axes[0], results):
        labels = [r["policy"] for r in res["rows"]]
        x = range(len(labels))
        ax.bar([i - 0.2 for i in x], [r["test_chrf"] for r in res["rows"]], 0.4, label="test chrF")
        ax.bar([i + 0.2 for i in x], [r["test_bleu"] for r in res["rows"]], 0.4, label="test BLEU")
        lo = min(min(r["test_bleu"] for r in res["rows"]), min(r["test_chrf"] for r in res["rows"]))
        ax.set_ylim(max(0, lo - 5), None)
        ax.set_xticks(list(x), labels, rotation=20)
        ax.set_title(f"case {res['case']}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> list[dict]:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    args = _parse(argv)
    if args.quick:
        args.grow_sources, args.max_sources, args.num_samples = min(args.grow_sources, 60), 30, 2
        args.bootstrap_samples = min(args.bootstrap_samples, 50)
    out = os.path.abspath(args.output_dir)
    os.makedirs(out, exist_ok=True)
    results = []
    cases = ["domain", "hidden"] if args.case == "both" else [args.case]
    for case in cases:
        if case == "domain":
            files = domain_case_data(os.path.join(out, "domain-data"), args.quick)
            results.append(run_case("domain", files, SHIPPED_BC, args, out))
        else:
            files = hidden_case_data(os.path.join(out, "hidden-data"), args.visible, args.quick)
            results.append(run_case("hidden", files, args.base, args, out))
        write_outputs(results, out, args.quick)
    return results


def write_outputs(results: list[dict], out: str, quick: bool) -> None:
    result = {"bench": "reward_model", "machine": machine(), "cases": results}
    with open(os.path.join(out, "reward_model.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2, default=str)
    md = markdown(results, quick)
    with open(os.path.join(out, "reward_model.md"), "w", encoding="utf-8") as f:
        f.write(md)
    plot(results, os.path.join(out, "reward_model.png"))
    print(md)
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        import mlflow

        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment(os.environ.get("REST_MLFLOW_EXPERIMENT", "rest-bench"))
        with mlflow.start_run(run_name="bench-reward-model" + ("-quick" if quick else "")):
            for res in results:
                for k in ("kendall_tau", "spearman_rho"):
                    if isinstance(res["reward_model"].get(k), (int, float)):
                        mlflow.log_metric(f"{res['case']}.reward_model.{k}", res["reward_model"][k])
                for r in res["rows"]:
                    for m in ("test_bleu", "test_chrf", "test_learned_reward", "test_true_reward"):
                        mlflow.log_metric(f"{res['case']}.{r['policy']}.{m}", r[m])
            for name in ("reward_model.json", "reward_model.md", "reward_model.png"):
                mlflow.log_artifact(os.path.join(out, name))


if __name__ == "__main__":
    main()
