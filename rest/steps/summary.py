"""The run's report: one row per evaluated policy, and the verdict people read first.

Each evaluate step appends its row to the previous step's report (the pipeline chains
them), so the last report holds the whole run however G and I were unrolled.
``summary.json`` is read by other tools: its ``steps`` list holds the baseline first, then
every (g, i), then the references-only control (``"control": true``).

The verdict compares the last ReST step with BC and the control by paired bootstrap over
the test sentences (:mod:`rest.stats`), so the report also carries the per-sentence outputs
of the policies it compares (``sentences/bc.jsonl``, ``sentences/g1-i3.jsonl``,
``sentences/control.jsonl``). Each row also carries the wall seconds of the tasks that fed
it (``tasks``), so the summary can say where the run's time went.
"""
from __future__ import annotations

import os
import time

from rest import stats as st
from rest.services.files import read_jsonl, write_json, write_jsonl
# A reward gain with BLEU (points) or the true metric (a [0, 1] sentence mean) down by more than
# these is flagged: the one rule, rest.rewards.spec.is_reward_hacking.
from rest.rewards.spec import POINTS_TOLERANCE, TRUE_METRIC_TOLERANCE, is_reward_hacking

ROW_FIELDS = ("label", "g", "i", "control", "threshold", "kept_fraction", "test_bleu", "test_chrf", "test_reward",
              "valid_reward", "optimizer_steps", "wall_s", "model_path")
SENTENCES = "sentences"
HARD_SUFFIX = ".hard"  # per-sentence outputs on data.hard_test: sentences/KEY.hard.jsonl
# A verifiable (0/1) reward: its mean is the accuracy, and it alone decides (chrF/BLEU against an
# answer-only reference mean nothing).
BINARY_RULE = ("ReST \"beats\" a baseline only when the 95 % paired-bootstrap interval of the accuracy "
               "difference (the mean of the verifiable 0/1 reward) lies above 0")
# What "beats" means, shown beside the verdict so nobody has to guess.
BEATS_RULE = ("ReST \"beats\" a baseline only when the 95 % paired-bootstrap intervals of both the chrF "
              "difference and the mean-reward difference lie above 0 (BLEU is reported, not part of the rule)")
COMPARED = (("test_chrf", "chrF", 2), ("test_reward", "reward", 4), ("test_bleu", "BLEU", 2))
# The last ReST step's output length may drift this much (relative to BC's) before the summary says so.
LENGTH_TOLERANCE = 0.03
# Tasks whose time no row carries: no output of theirs reaches the summarize task with a time on it.
UNTIMED_TASKS = ("validate", "prepare", "merge (sharded Grow)", "reward-model", "register (runs after summarize)",
                 "finish (the exit task, runs last)")


def make_row(label: str, g: int, i: int, metrics: dict, model_path: str, model_info: dict | None = None,
             filter_stats: dict | None = None, wall_s: float = 0.0, control: bool = False) -> dict:
    """One report row for an evaluated policy."""
    info = model_info or {}
    fstats = filter_stats or {}
    row = {"label": label, "g": g, "i": i, "control": control,
           "threshold": fstats.get("threshold_used"), "kept_fraction": fstats.get("kept_fraction"),
           "kept": fstats.get("kept"), "mean_reward_kept": fstats.get("mean_reward_kept"),
           "mean_reward_all": fstats.get("mean_reward_all"),
           "valid_reward": info.get("best_valid_reward", info.get("bc_training", {}).get("best_valid_reward")),
           "optimizer_steps": info.get("optimizer_steps_since_bc", 0), "wall_s": round(wall_s, 2),
           "model_path": model_path, "valid_true": info.get("best_valid_true"),
           # The parent's validation reward, checked by this step on this run's valid split.
           "start_valid_reward": info.get("start_valid_reward"),
           "true_metric": metrics.get("true_metric") or info.get("true_metric"),
           "hacking_in_validation": bool(info.get("reward_hacking")), "rolled_back": bool(info.get("rolled_back"))}
    row.update({k: v for k, v in metrics.items()
                if k.startswith(("test_", "best_of_n", "hard_", "pass_at_k"))})
    return row


def sentence_key(row: dict) -> str:
    """The name of a row's per-sentence file in the report: ``bc``, ``g1-i3`` or ``control``."""
    if row.get("control"):
        return "control"
    return "bc" if row["g"] == 0 else f"g{row['g']}-i{row['i']}"


def _compared_keys(rows: list[dict]) -> set[str]:
    # BC, the newest ReST step and the control: all the verdict compares. Older steps' outputs
    # stay in their own evaluate task's eval/translations.jsonl; carrying them on would copy
    # every earlier step into every later report.
    keys = {sentence_key(r) for r in rows if r.get("control") or r["g"] == 0}
    rest_rows = [r for r in rows if r["g"] > 0 and not r.get("control")]
    if rest_rows:
        keys.add(sentence_key(rest_rows[-1]))
    return keys


def append_row(previous_report_dir: str | None, row: dict, out_dir: str, translations: str | None = None) -> list[dict]:
    """Write the previous report's rows plus ``row`` into ``out_dir/rows.jsonl``.

    ``translations`` (the evaluation's ``translations.jsonl``) becomes this row's per-sentence
    file; the previous report's files that the verdict still needs are carried over.
    """
    rows = []
    if previous_report_dir:
        rows = list(read_jsonl(os.path.join(previous_report_dir, "rows.jsonl")))
    rows.append(row)
    write_jsonl(os.path.join(out_dir, "rows.jsonl"), rows)
    own = sentence_key(row)
    # data.hard_test: the evaluation's hard_translations.jsonl beside translations.jsonl, carried as KEY.hard.
    hard = os.path.join(os.path.dirname(translations), "hard_translations.jsonl") if translations else None
    for key in _compared_keys(rows):
        for suffix, source in (("", translations), (HARD_SUFFIX, hard)):
            name = f"{key}{suffix}.jsonl"
            if key == own:
                if source and os.path.isfile(source):
                    write_jsonl(os.path.join(out_dir, SENTENCES, name),
                                ({k: t.get(k) for k in ("id", "hypothesis", "reference", "reward")}
                                 for t in read_jsonl(source)))
            elif previous_report_dir and os.path.isfile(os.path.join(previous_report_dir, SENTENCES, name)):
                write_jsonl(os.path.join(out_dir, SENTENCES, name),
                            read_jsonl(os.path.join(previous_report_dir, SENTENCES, name)))
    return rows


def read_sentences(report_dir: str) -> dict[str, list[dict]]:
    """The per-sentence outputs a report carries, by :func:`sentence_key`."""
    d = os.path.join(report_dir, SENTENCES)
    if not os.path.isdir(d):
        return {}
    return {name[:-len(".jsonl")]: list(read_jsonl(os.path.join(d, name)))
            for name in sorted(os.listdir(d)) if name.endswith(".jsonl")}


def compare(baseline: list[dict], candidate: list[dict], n_bootstrap: int = st.N_BOOTSTRAP,
            seed: int = st.SEED, cache: dict | None = None) -> dict:
    """Paired bootstrap of ``candidate`` − ``baseline`` per-sentence outputs on the same test sentences.

    Each item is ``{"id", "hypothesis", "reference", "reward"}``. Returns, for ``test_chrf``,
    ``test_bleu`` (sacrebleu's paired resampling of the corpus score) and ``test_reward``
    (resampling sentences for the mean), ``delta``, ``delta_ci`` (95 %) and ``p_value``.
    ``cache`` (a dict kept across calls) resamples a system compared twice only once.
    """
    by_id = {c["id"]: c for c in candidate}
    if len(baseline) != len(candidate) or set(by_id) != {b["id"] for b in baseline}:
        raise ValueError(f"paired test: the two evaluations cover different test sentences "
                         f"({len(baseline)} vs {len(candidate)})")
    cand = [by_id[b["id"]] for b in baseline]  # pair by sentence id, whatever the file order
    refs = [b["reference"] for b in baseline]
    cache = {} if cache is None else cache

    def resampled(system: list[dict], metric: str) -> dict:
        key = (tuple(o["hypothesis"] for o in system), metric)
        if key not in cache:
            cache[key] = st.resample_corpus(list(key[0]), refs, metric, n_bootstrap, seed)
        return cache[key]

    out = {}
    for key, metric in (("test_chrf", "chrf"), ("test_bleu", "bleu")):
        r = st.paired_from_resamples(resampled(baseline, metric), resampled(cand, metric))
        out[key] = {"delta": r["delta"], "delta_ci": r["delta_ci"], "p_value": r["delta_p_value"],
                    "sacrebleu_p_value": r["p_value"]}
    r = st.paired_bootstrap_mean([b["reward"] for b in baseline], [c["reward"] for c in cand], n_bootstrap, seed)
    out["test_reward"] = {"delta": r["delta"], "delta_ci": r["delta_ci"], "p_value": r["delta_p_value"]}
    return out


def _paired(baseline: list[dict], candidate: list[dict]) -> list[dict]:
    """``candidate``'s outputs in ``baseline``'s order (paired by id)."""
    by_id = {c["id"]: c for c in candidate}
    if len(baseline) != len(candidate) or set(by_id) != {b["id"] for b in baseline}:
        raise ValueError(f"paired test: the two evaluations cover different sentences ({len(baseline)} vs "
                         f"{len(candidate)})")
    return [by_id[b["id"]] for b in baseline]


def beats(significance: dict, binary: bool = False) -> bool:
    """The verdict's rule (:data:`BEATS_RULE`): chrF's and the reward's 95 % intervals both above 0
    (:data:`BINARY_RULE`, for a verifiable reward: the accuracy's interval above 0)."""
    keys = ("test_reward",) if binary else ("test_chrf", "test_reward")
    return all(significance[k]["delta_ci"][0] > 0 for k in keys)


def verdict(rows: list[dict], sentences: dict[str, list[dict]] | None = None, n_bootstrap: int = st.N_BOOTSTRAP,
            seed: int = st.SEED) -> dict:
    """Compare the last ReST step with the BC baseline and the references-only control.

    With the compared policies' per-sentence outputs (``sentences``, by :func:`sentence_key`)
    each comparison gets its paired-bootstrap interval (``significance``) and ``beats_bc`` /
    ``beats_control`` follow :data:`BEATS_RULE`; without them they are None: untested.
    """
    base = next((r for r in rows if r["g"] == 0 and not r["control"]), None)
    rest_rows = [r for r in rows if r["g"] > 0 and not r["control"]]
    ctrl = next((r for r in rows if r["control"]), None)
    if base is None or not rest_rows:
        return {}
    last = rest_rows[-1]
    out = {"last_step": {"g": last["g"], "i": last["i"]}}
    for key in ("test_chrf", "test_reward", "test_bleu"):
        out[f"{key}_vs_bc"] = last[key] - base[key]
        if ctrl is not None:
            out[f"{key}_vs_control"] = last[key] - ctrl[key]
    sentences = sentences or {}
    binary = "test_accuracy" in last
    out["binary_reward"] = binary
    for key in ("test_accuracy", "hard_reward", "hard_accuracy"):
        if key in last and key in base:
            out[f"{key}_vs_bc"] = last[key] - base[key]
            if ctrl is not None and key in ctrl:
                out[f"{key}_vs_control"] = last[key] - ctrl[key]
    out["significance"] = {}
    cache: dict = {}
    for name, other in (("bc", base), ("control", ctrl)):
        if other is None:
            continue
        a, b = sentences.get(sentence_key(other)), sentences.get(sentence_key(last))
        sig = compare(a, b, n_bootstrap, seed, cache) if a and b else None
        ha, hb = (sentences.get(sentence_key(r) + HARD_SUFFIX) for r in (other, last))
        if sig is not None and ha and hb:  # the hard set: the mean reward (accuracy), sentences resampled
            r = st.paired_bootstrap_mean([x["reward"] for x in ha], [x["reward"] for x in _paired(ha, hb)],
                                         n_bootstrap, seed)
            sig["hard_reward"] = {"delta": r["delta"], "delta_ci": r["delta_ci"], "p_value": r["delta_p_value"]}
        if sig is not None:
            out["significance"][name] = sig
        out[f"beats_{name}"] = beats(sig, binary) if sig is not None else None
    # Where the control is significantly better: the summary says so in plain words.
    out["control_better_on"] = control_wins(out)
    # A policy whose test outputs are BC's, sentence for sentence, kept its start: none of its checkpoints beat
    # BC on validation. For the control that means BC is converged on these references (said in plain words).
    bc_out = sentences.get(sentence_key(base))
    for name, row in (("control", ctrl), ("rest", last)):
        got = sentences.get(sentence_key(row)) if row is not None else None
        out[f"{name}_kept_start"] = bool(bc_out and got and [o["hypothesis"] for o in _paired(bc_out, got)]
                                         == [o["hypothesis"] for o in bc_out])
    out["significance_rule"] = BINARY_RULE if binary else BEATS_RULE
    out["n_bootstrap"], out["bootstrap_seed"] = n_bootstrap, seed
    out["test_sentences"] = len(sentences.get(sentence_key(last)) or [])
    out["bleu_held"] = out["test_bleu_vs_bc"] >= -POINTS_TOLERANCE
    if base.get("test_length_ratio") and last.get("test_length_ratio"):
        out["length_ratio"] = {"bc": base["test_length_ratio"], "rest": last["test_length_ratio"],
                               "change": last["test_length_ratio"] / base["test_length_ratio"] - 1}
    # Reward hacking: the training reward rose while a held-out metric fell.
    reasons = {}
    for p, r in zip([base] + rest_rows, rest_rows):
        why = hacking_reasons(p, r)
        if why:
            reasons[f"g{r['g']}/i{r['i']}"] = why
    out["reward_hacking"] = list(reasons)
    out["reward_hacking_reasons"] = reasons
    out["rolled_back"] = [f"g{r['g']}/i{r['i']}" for r in rest_rows if r.get("rolled_back")]
    return out


def hacking_reasons(previous: dict, row: dict) -> list[str]:
    """Why ``row`` looks like reward hacking against the step before it (empty: it does not)."""
    why = []
    if row.get("hacking_in_validation"):
        why.append(f"validation: reward up, {row.get('true_metric') or 'true metric'} down")
    rewards = previous["test_reward"], row["test_reward"]
    if is_reward_hacking(*rewards, previous["test_bleu"], row["test_bleu"], POINTS_TOLERANCE):
        why.append(f"test: reward up, BLEU {row['test_bleu'] - previous['test_bleu']:+.2f}")
    if is_reward_hacking(*rewards, previous.get("test_true"), row.get("test_true"), TRUE_METRIC_TOLERANCE):
        why.append(f"test: reward up, {row.get('true_metric')} {row['test_true'] - previous['test_true']:+.4f}")
    return why


def task_times(rows: list[dict], extra: dict[str, float] | None = None) -> dict:
    """Wall seconds per task, in pipeline order, with each one's share of their total.

    Rows carry the times of the tasks that fed them (``row["tasks"]``); a task that fed
    several rows (a Grow step's sample and score feed every Improve step) counts once.
    """
    walls: dict[str, float] = {}
    for r in rows:
        for name, wall in (r.get("tasks") or {}).items():
            if wall is not None:
                walls.setdefault(name, float(wall))
    walls.update(extra or {})
    walls = dict(sorted(walls.items(), key=lambda kv: _task_order(kv[0])))
    total = sum(walls.values())
    return {"tasks": [{"task": k, "wall_s": round(v, 1), "share": v / total if total else 0.0} for k, v in walls.items()],
            "total_s": round(total, 1), "not_timed": list(UNTIMED_TASKS),
            "note": "Wall seconds measured inside each task (from its start to its outputs written); the few "
                    "seconds each task spends starting its process and importing are not counted, so the total "
                    "is below the pipeline's wall time. Sharded sampling counts its slowest shard; a task taken from "
                    "KFP's cache shows the time of the run that computed it. Not timed here: "
                    + ", ".join(UNTIMED_TASKS) + "."}


_FIXED_ORDER = ("validate", "prepare", "bootstrap", "evaluate-bc", "reward-model")
_STEP_ORDER = ("sample", "merge", "score", "filter", "finetune", "evaluate")


def _task_order(name: str) -> tuple:
    # Pipeline order, whatever order the timings arrived in (KFP metadata comes back key-sorted).
    if name in _FIXED_ORDER:
        return (0, _FIXED_ORDER.index(name))
    parts = name.split("/")
    last = _STEP_ORDER.index(parts[-1]) if parts[-1] in _STEP_ORDER else len(_STEP_ORDER)
    if parts[0].startswith("grow-"):
        g = int(parts[0][5:])
        i = int(parts[1][8:]) if len(parts) > 2 and parts[1].startswith("improve-") else 0
        return (1, g, i, last)
    return (2 if parts[0] == "control" else 3, last, name)


def time_table(timing: dict) -> str:
    """The per-task wall-time table of summary.md."""
    lines = ["| task | wall s | share |", "|---|---|---|"]
    lines += [f"| {t['task']} | {t['wall_s']:.1f} | {t['share']:.1%} |" for t in timing["tasks"]]
    lines.append(f"| total | {timing['total_s']:.1f} | 100% |")
    return "\n".join(lines) + "\n\n" + timing["note"] + "\n"


def measured_bc_valid(rows: list[dict]) -> list[dict]:
    """``rows`` with the BC row's valid reward as this run measured it.

    The BC row's figure comes from the policy's lineage: for a given policy, that is its own
    training's validation, on whatever data that used. The first Improve step checks its
    parent, the same BC policy, on this run's valid split before its first optimizer step;
    that figure sits beside the ReST rows' and is comparable with them.
    """
    first = next((r for r in rows if r["g"] == 1 and r["i"] == 1 and not r["control"]), None)
    if first is None or first.get("start_valid_reward") is None:
        return rows
    return [{**r, "valid_reward": first["start_valid_reward"], "valid_reward_from": "g1/i1 step 0"}
            if r["g"] == 0 and not r["control"] else r for r in rows]


def write_summary(report_dir: str, out_dir: str, config: dict | None = None, started: float | None = None,
                  n_bootstrap: int = st.N_BOOTSTRAP, seed: int = st.SEED) -> dict:
    """Write ``summary.json`` and ``summary.md`` for the report in ``report_dir``.

    ``started`` (the summarize task's start, ``time.time()``) adds its own time to the task table.
    """
    rows = measured_bc_valid(list(read_jsonl(os.path.join(report_dir, "rows.jsonl"))))
    v = verdict(rows, read_sentences(report_dir), n_bootstrap, seed)
    timing = task_times(rows, {"summarize": time.time() - started} if started is not None else None)
    summary = {"steps": rows, "verdict": v, "timing": timing, "config": config or {}}
    write_json(os.path.join(out_dir, "summary.json"), summary)
    md = (markdown_table(rows) + "\n" + verdict_text(v) + "\n\n## Where the time went\n\n" + time_table(timing))
    with open(os.path.join(out_dir, "summary.md"), "w", encoding="utf-8") as f:
        f.write(md)
    return summary


def _fmt(v, nd=2):
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def markdown_table(rows: list[dict]) -> str:
    """The step table: one line per evaluated policy."""
    true = any(r.get("test_true") is not None for r in rows)
    acc = any(r.get("test_accuracy") is not None for r in rows)  # a verifiable reward: accuracy columns
    hard = any(r.get("hard_reward") is not None for r in rows)
    length = any(r.get("test_length_ratio") is not None for r in rows)  # older reports lack it
    head = ("| policy | g | i | τ | kept | test BLEU | test chrF | test reward | "
            + ("test accuracy | " if acc else "") + ("hard accuracy | " if acc and hard else "")
            + ("hard reward | " if hard and not acc else "")
            + ("test true metric | " if true else "") + ("length | " if length else "")
            + "valid reward | steps | wall s |")
    lines = [head, "|---" * (head.count("|") - 1) + "|"]
    for r in rows:
        label = r["label"] + (" (rolled back)" if r.get("rolled_back") else "") + \
            (" ⚠ reward hacking" if r.get("hacking_in_validation") else "")
        lines.append("| " + " | ".join([
            label, str(r["g"]), str(r["i"]), _fmt(r.get("threshold"), 3),
            _fmt(r.get("kept_fraction") * 100, 1) + "%" if r.get("kept_fraction") is not None else "–",
            _fmt(r.get("test_bleu")), _fmt(r.get("test_chrf")), _fmt(r.get("test_reward"), 4)]
            + ([_pct(r.get("test_accuracy"))] if acc else [])
            + ([_pct(r.get("hard_accuracy"))] if acc and hard else [])
            + ([_fmt(r.get("hard_reward"), 4)] if hard and not acc else [])
            + ([_fmt(r.get("test_true"), 4)] if true else [])
            + ([_fmt(r.get("test_length_ratio"), 3)] if length else [])
            + [_fmt(r.get("valid_reward"), 4), str(r.get("optimizer_steps", 0)), _fmt(r.get("wall_s"), 0)]) + " |")
    return "\n".join(lines) + "\n"


def _pct(v) -> str:
    return "–" if v is None else f"{100 * v:.1f} %"


def _beats_words(v: dict, name: str, what: str) -> str:
    b = v.get(f"beats_{name}")
    if b is None:
        return f"{what}: not tested (the report has no per-sentence outputs to compare)"
    if b:
        return f"ReST beats {what}"
    sig = v["significance"][name]
    if v.get("binary_reward"):
        return f"ReST does NOT beat {what} (accuracy interval not above 0)"
    why = [label for key, label, _ in COMPARED[:2] if sig[key]["delta_ci"][0] <= 0]
    return f"ReST does NOT beat {what} ({' and '.join(why)} interval{'s' if len(why) > 1 else ''} not above 0)"


def significance_table(v: dict) -> str:
    """Δ, 95 % interval and p of the last ReST step against BC and the control (markdown)."""
    sig = v.get("significance") or {}
    if not sig:
        return ""
    lines = ["| last ReST step vs | metric | Δ | 95 % interval | p |", "|---|---|---|---|---|"]
    compared = COMPARED
    if v.get("binary_reward"):  # accuracy (in [0, 1]) first; chrF/BLEU against answers are shown, not judged
        compared = (("test_reward", "accuracy", 4), ("hard_reward", "hard accuracy", 4)) + COMPARED[::2]
    elif any("hard_reward" in s for s in sig.values()):
        compared = COMPARED + (("hard_reward", "hard reward", 4),)
    for name, label in (("bc", "BC"), ("control", "control")):
        for key, metric, nd in compared:
            if name in sig and key in sig[name]:
                r = sig[name][key]
                lo, hi = r["delta_ci"]
                lines.append(f"| {label} | {metric} | {r['delta']:+.{nd}f} | [{lo:+.{nd}f}, {hi:+.{nd}f}] | "
                             f"{r['p_value']:.3f} |")
    return ("\n".join(lines) + f"\n\nPaired bootstrap over the {v.get('test_sentences', '?')} test sentences "
            f"({v.get('n_bootstrap')} resamples, seed {v.get('bootstrap_seed')}; sacrebleu's paired resampling for "
            "BLEU and chrF, sentences resampled for the mean reward); p is two-sided. "
            f"{v.get('significance_rule', BEATS_RULE)}.\n")


def control_wins(v: dict) -> list[str]:
    """The judged metrics on which the control beats the last ReST step (its 95 % interval of ReST minus
    control lies wholly below 0): what the summary says in plain words when ReST loses."""
    sig = (v.get("significance") or {}).get("control") or {}
    compared = (("test_reward", "accuracy", 4),) if v.get("binary_reward") else COMPARED[:2]
    return [label for key, label, _ in compared if key in sig and sig[key]["delta_ci"][1] < 0]


def length_words(v: dict) -> list[str]:
    """Plain words when the last ReST step's outputs got longer or shorter than BC's by more than
    :data:`LENGTH_TOLERANCE`: a reward can be raised by length alone (chrF's beta 2 pays for recall)."""
    length = v.get("length_ratio")
    if not length or abs(length["change"]) <= LENGTH_TOLERANCE or v.get("binary_reward"):
        return []
    words = [f"ReST's translations are {100 * abs(length['change']):.1f} % "
             f"{'longer' if length['change'] > 0 else 'shorter'} than BC's (length against the references "
             f"{length['bc']:.3f} -> {length['rest']:.3f})."]
    if length["change"] > 0:
        words.append("A recall-heavy reward pays for length: chrF with beta 2 (the chrf reward and the chrF column) "
                     "weighs recall twice precision, so longer outputs can raise it while BLEU falls, and part of "
                     "the gain may be length, not quality. The chrf1 reward (score.reward=chrf1) weighs both alike.")
    return words


def verdict_text(v: dict) -> str:
    """The verdict in plain words, control included, hiding nothing: intervals and the rule behind "beats"."""
    if not v:
        return "No ReST step was evaluated."
    s = []
    table = significance_table(v)
    if table:
        s.append(table)
    if v.get("binary_reward"):
        def acc(base):
            hard = f", hard accuracy {100 * v[f'hard_reward_vs_{base}']:+.1f} points" \
                if f"hard_reward_vs_{base}" in v else ""
            return f"accuracy {100 * v[f'test_reward_vs_{base}']:+.1f} points{hard}"
        s.append(f"Last ReST step (g={v['last_step']['g']}, i={v['last_step']['i']}) vs BC: {acc('bc')} — "
                 f"{_beats_words(v, 'bc', 'BC')}.")
        if "test_reward_vs_control" in v:
            s.append(f"Vs the references-only control (same optimizer steps on the references): {acc('control')} — "
                     f"{_beats_words(v, 'control', 'the control')}.")
    else:
        s.append(f"Last ReST step (g={v['last_step']['g']}, i={v['last_step']['i']}) vs BC: "
                 f"chrF {v['test_chrf_vs_bc']:+.2f}, reward {v['test_reward_vs_bc']:+.4f}, "
                 f"BLEU {v['test_bleu_vs_bc']:+.2f} — {_beats_words(v, 'bc', 'BC')}.")
    if "test_chrf_vs_control" in v and not v.get("binary_reward"):
        s.append(f"Vs the references-only control (same optimizer steps on the human references): "
                 f"chrF {v['test_chrf_vs_control']:+.2f}, reward {v['test_reward_vs_control']:+.4f}, "
                 f"BLEU {v['test_bleu_vs_control']:+.2f} — {_beats_words(v, 'control', 'the control')}.")
    worse = control_wins(v)
    if worse:
        s.append(f"The references-only control is significantly better than ReST on {' and '.join(worse)}: on this "
                 "data, plain fine-tuning on the human references was the better use of these optimizer steps. "
                 "If the starting policy was not trained to convergence on this data (e.g. a model being adapted "
                 "to a new domain), set bootstrap.converge=true so ReST and the control both start from BC "
                 "continued on these references until patience stops it.")
    if v.get("control_kept_start"):
        s.append("No checkpoint of the control beat the starting policy on validation: more supervised steps on "
                 "these human references do not improve it (it is converged on this data), so the control is BC "
                 "and any gain ReST shows comes from its own samples.")
    if v.get("rest_kept_start"):
        s.append("No Improve step beat the starting policy on validation: the last ReST step is BC itself.")
    if not v["bleu_held"] and not v.get("binary_reward"):
        s.append(f"BLEU fell by more than {POINTS_TOLERANCE} against BC.")
    s.extend(length_words(v))
    if v["reward_hacking"]:
        s.append("Possible reward hacking at: " + "; ".join(
            f"{k} ({', '.join(why)})" for k, why in v.get("reward_hacking_reasons", {}).items()) + ".")
    if v.get("rolled_back"):
        s.append("Rolled back to the previous policy (loop.on_reward_hacking=rollback) at: "
                 + ", ".join(v["rolled_back"]) + ".")
    return "\n".join(s)
