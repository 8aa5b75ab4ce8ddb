"""The run's report: one row per evaluated policy, and the verdict people read first.

Each evaluate step appends its row to the previous step's report (the pipeline chains
them), so the last report holds the whole run however G and I were unrolled.
``summary.json`` is read by other tools: its ``steps`` list holds the baseline first, then
every (g, i), then the references-only control (``"control": true``).
"""
from __future__ import annotations

import os

from .io import read_jsonl, write_json, write_jsonl

ROW_FIELDS = ("label", "g", "i", "control", "threshold", "kept_fraction", "test_bleu", "test_chrf", "test_reward",
              "valid_reward", "optimizer_steps", "wall_s", "model_path")
# A reward gain with the other metric down by more than this (BLEU points) is flagged.
HACKING_MARGIN = 0.5
# A reward gain with the true metric (a [0, 1] sentence mean) down by more than this is flagged.
TRUE_METRIC_MARGIN = 0.002


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
           "true_metric": metrics.get("true_metric") or info.get("true_metric"),
           "hacking_in_validation": bool(info.get("reward_hacking")), "rolled_back": bool(info.get("rolled_back"))}
    row.update({k: v for k, v in metrics.items() if k.startswith("test_") or k.startswith("best_of_n")})
    return row


def append_row(previous_report_dir: str | None, row: dict, out_dir: str) -> list[dict]:
    """Write the previous report's rows plus ``row`` into ``out_dir/rows.jsonl``."""
    rows = []
    if previous_report_dir:
        rows = list(read_jsonl(os.path.join(previous_report_dir, "rows.jsonl")))
    rows.append(row)
    write_jsonl(os.path.join(out_dir, "rows.jsonl"), rows)
    return rows


def verdict(rows: list[dict]) -> dict:
    """Compare the last ReST step with the BC baseline and the references-only control."""
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
    out["beats_bc"] = out["test_chrf_vs_bc"] > 0 and out["test_reward_vs_bc"] > 0
    out["bleu_held"] = out["test_bleu_vs_bc"] >= -HACKING_MARGIN
    if ctrl is not None:
        out["beats_control"] = out["test_chrf_vs_control"] > 0 and out["test_reward_vs_control"] > 0
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
    reward_up = row["test_reward"] > previous["test_reward"]
    if reward_up and row["test_bleu"] < previous["test_bleu"] - HACKING_MARGIN:
        why.append(f"test: reward up, BLEU {row['test_bleu'] - previous['test_bleu']:+.2f}")
    if reward_up and row.get("test_true") is not None and previous.get("test_true") is not None \
            and row["test_true"] < previous["test_true"] - TRUE_METRIC_MARGIN:
        why.append(f"test: reward up, {row.get('true_metric')} {row['test_true'] - previous['test_true']:+.4f}")
    return why


def write_summary(report_dir: str, out_dir: str, config: dict | None = None) -> dict:
    """Write ``summary.json`` and ``summary.md`` for the report in ``report_dir``."""
    rows = list(read_jsonl(os.path.join(report_dir, "rows.jsonl")))
    summary = {"steps": rows, "verdict": verdict(rows), "config": config or {}}
    write_json(os.path.join(out_dir, "summary.json"), summary)
    md = markdown_table(rows) + "\n" + verdict_text(summary["verdict"]) + "\n"
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
    head = ("| policy | g | i | τ | kept | test BLEU | test chrF | test reward | "
            + ("test true metric | " if true else "") + "valid reward | steps | wall s |")
    lines = [head, "|---" * (head.count("|") - 1) + "|"]
    for r in rows:
        label = r["label"] + (" (rolled back)" if r.get("rolled_back") else "") + \
            (" ⚠ reward hacking" if r.get("hacking_in_validation") else "")
        lines.append("| " + " | ".join([
            label, str(r["g"]), str(r["i"]), _fmt(r.get("threshold"), 3),
            _fmt(r.get("kept_fraction") * 100, 1) + "%" if r.get("kept_fraction") is not None else "–",
            _fmt(r.get("test_bleu")), _fmt(r.get("test_chrf")), _fmt(r.get("test_reward"), 4)]
            + ([_fmt(r.get("test_true"), 4)] if true else [])
            + [_fmt(r.get("valid_reward"), 4), str(r.get("optimizer_steps", 0)), _fmt(r.get("wall_s"), 0)]) + " |")
    return "\n".join(lines) + "\n"


def verdict_text(v: dict) -> str:
    """The verdict in plain words, control included, hiding nothing."""
    if not v:
        return "No ReST step was evaluated."
    s = [f"Last ReST step (g={v['last_step']['g']}, i={v['last_step']['i']}) vs BC: "
         f"chrF {v['test_chrf_vs_bc']:+.2f}, reward {v['test_reward_vs_bc']:+.4f}, BLEU {v['test_bleu_vs_bc']:+.2f}."]
    if "test_chrf_vs_control" in v:
        s.append(f"Vs the references-only control (same optimizer steps on the human references): "
                 f"chrF {v['test_chrf_vs_control']:+.2f}, reward {v['test_reward_vs_control']:+.4f}, "
                 f"BLEU {v['test_bleu_vs_control']:+.2f} — ReST "
                 + ("beats" if v["beats_control"] else "does NOT beat") + " the control.")
    if not v["bleu_held"]:
        s.append(f"BLEU fell by more than {HACKING_MARGIN} against BC.")
    if v["reward_hacking"]:
        s.append("Possible reward hacking at: " + "; ".join(
            f"{k} ({', '.join(why)})" for k, why in v.get("reward_hacking_reasons", {}).items()) + ".")
    if v.get("rolled_back"):
        s.append("Rolled back to the previous policy (loop.on_reward_hacking=rollback) at: "
                 + ", ".join(v["rolled_back"]) + ".")
    return "\n".join(s)
