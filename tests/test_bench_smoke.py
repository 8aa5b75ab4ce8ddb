"""The ctranslate2 generation backend against the reference path, and the bench scripts at tiny scale."""
import os
import sys

import pytest

from rest.config import ConfigError, EvaluateConfig, SampleConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Appended, not prepended: bench/pipeline.py must not shadow the top-level pipeline.py for other tests.
sys.path.append(os.path.join(ROOT, "bench"))

ct2 = pytest.importorskip("ctranslate2")

SOURCES = ["Was ist Access2Base?", "Die bereitgestellten Makros enthalten:", "Klicken Sie auf OK.",
           "Wählen Sie Format - Zeichen.", "Ein Beispiel", "Öffnet einen Dialog, in dem Sie die Tabelle auswählen."]


@pytest.fixture(scope="module")
def policy(tiny_policy):
    from rest.model.policy import load_policy

    return load_policy(tiny_policy)


@pytest.fixture(scope="module")
def shipped():
    """The shipped BC policy: it translates, so outputs differ by source and order can be checked."""
    from rest.model.policy import load_policy

    return load_policy(os.path.join(ROOT, "models", "bc-libreoffice-de-en"))


def test_backend_setting_is_checked():
    assert SampleConfig().backend == "ctranslate2" and EvaluateConfig().backend == "ctranslate2"
    with pytest.raises(ConfigError, match="sample.backend"):
        SampleConfig(backend="vllm")
    with pytest.raises(ConfigError, match="evaluate.backend"):
        EvaluateConfig(backend="onnx")


def test_ctranslate2_greedy_matches_hf(shipped):
    """Same weights, same decoding rule: greedy outputs agree (the conversion is exact in float32).
    On the shipped BC, whose outputs are real sentences (an untrained policy's are empty);
    tests/test_ctranslate2.py checks 200 sentences and the token log-probabilities."""
    from rest.model import backends as fast_generate
    from rest.model.policy import generate

    model, tok = shipped
    hf = generate(model, tok, SOURCES, mode="greedy", max_length_ratio=1.0)
    fast = fast_generate.generate(model, tok, SOURCES, mode="greedy", max_length_ratio=1.0)
    assert all(o[0].strip() for o in hf)
    assert fast == hf


def test_ctranslate2_sampling_shape_order_and_seed(policy, shipped):
    from rest.model import backends as fast_generate
    from rest.rewards.metrics import chrf_reward

    model, tok = policy
    kw = dict(mode="sample", num_return=3, temperature=0.8, max_length_ratio=0.5)
    a = fast_generate.generate(model, tok, SOURCES, seed=1, **kw)
    assert len(a) == len(SOURCES) and all(len(c) == 3 for c in a)
    assert fast_generate.generate(model, tok, SOURCES, seed=1, **kw) == a
    assert fast_generate.generate(model, tok, [], seed=1, **kw) == []

    # Order is the input order (the backend reorders sources into length buckets and back).
    model, tok = shipped
    greedy = [fast_generate.generate(model, tok, [s], mode="greedy")[0][0] for s in SOURCES]  # one at a time
    assert len(set(greedy)) == len(SOURCES)  # distinct outputs, so a mix-up would show
    assert [o[0] for o in fast_generate.generate(model, tok, SOURCES, mode="greedy")] == greedy
    assert [o[0] for o in fast_generate.generate(model, tok, SOURCES[::-1], mode="greedy")] == greedy[::-1]
    # Samples: each source's candidates are closest (mean chrF) to that source's own greedy
    # translation, not to another source's.
    samples = fast_generate.generate(model, tok, SOURCES, mode="sample", num_return=3, temperature=0.8, seed=1)
    for i, cands in enumerate(samples):
        closeness = [sum(chrf_reward([SOURCES[j]] * 3, cands, [greedy[j]] * 3)) for j in range(len(SOURCES))]
        assert max(range(len(SOURCES)), key=closeness.__getitem__) == i, (SOURCES[i], cands, greedy)


def test_converted_model_is_reused_until_weights_change(policy):
    import torch

    from rest.model import backends as fast_generate

    model, tok = policy
    t1 = fast_generate.translator_for(model, tok)
    assert fast_generate.translator_for(model, tok) is t1
    with torch.no_grad():
        p = next(model.parameters())
        p.add_(0.0)  # unchanged weights: same translator
        assert fast_generate.translator_for(model, tok) is t1
        p.add_(1e-3)
    try:
        assert fast_generate.translator_for(model, tok) is not t1
    finally:
        with torch.no_grad():
            p.sub_(1e-3)


def test_generate_with_names_backends():
    from rest.model.backends import generate_with
    from rest.model.policy import generate

    assert generate_with("hf") is generate
    with pytest.raises(ValueError, match="hf, ctranslate2"):
        generate_with("tensorrt")


def test_sampling_bench_tiny(tiny_policy, capsys):
    """Every path at tiny scale: seconds with one thread (minutes with two on a busy 2-core machine)."""
    import sampling

    r = sampling.main(["--policy", tiny_policy, "--sources", "4", "--num-samples", "2", "--rounds", "1",
                       "--max-length-ratio", "0.5", "--threads", "1"])
    assert set(r["paths"]) == {"per_sentence", "hf_batched", "hf", "ctranslate2"}
    assert r["speedup_ctranslate2_vs_hf_batched"] > 0 and r["speedup_hf_batched_vs_per_sentence"] > 0
    assert r["machine"]["load_avg_1min_at_end"] >= 0
    assert "speedup_ctranslate2_vs_hf_batched" in capsys.readouterr().out


def test_sampling_bench_batched_baseline_keeps_order(shipped):
    """bench/sampling.py's plain batched HF baseline returns N samples per source, in input order."""
    import sampling
    from rest.model.policy import generate

    model, tok = shipped
    out = sampling.batched_generate(model, tok, SOURCES, 2, 1e-4, 2.0, seed=0, batch_sequences=4)
    greedy = [o[0] for o in generate(model, tok, SOURCES, mode="greedy")]
    assert len(out) == len(SOURCES) and all(len(c) == 2 for c in out)
    assert [c[0] for c in out] == greedy  # T -> 0 sampling is greedy: same text at the same index


def test_finetune_bench_tiny(tiny_policy):
    import finetune

    r = finetune.main(["--policy", tiny_policy, "--rows", "40", "--steps", "1", "--rounds", "1",
                       "--batch-tokens", "400", "--threads", "1"])
    b, p, w = r["paths"]["bucketed"], r["paths"]["per_batch"], r["paths"]["dataset_max"]
    # Bucketing pads less than per-batch padding, which pads less than padding to the dataset's maximum.
    assert b["epoch_real_token_share"] > p["epoch_real_token_share"] > w["epoch_real_token_share"]
    assert 0 < w["real_token_share_of_padded"] <= p["real_token_share_of_padded"] <= 1  # same batches, more padding
    # The collator's batches train the same loss as rest.model.train (checked inside the bench).
    assert max(r["collator_loss_abs_diff_vs_train_nll"].values()) < 1e-4
    assert r["speedup_bucketed_vs_per_batch"] > 0 and r["speedup_bucketed_vs_dataset_max"] > 0


def test_quality_report_flags_hacking_and_best_of_n(tmp_path):
    """bench/quality.py's tables and checks on synthetic rows (its full run is minutes to hours)."""
    import quality

    rows = [{"policy": "BC", "test_reward": 0.50, "test_bleu": 20.0, "test_chrf": 45.0, "path": "bc",
             "best_of_n": {"1": 0.45, "4": 0.55, "16": 0.60, "64": 0.63}, "best_of_n_sources": 10},
            {"policy": "ReST G=1 I=1", "test_reward": 0.53, "test_bleu": 19.2, "test_chrf": 46.0, "path": "p1",
             "valid_reward": 0.55, "start_valid_reward": 0.50, "kept_fraction": 0.3, "optimizer_steps": 10,
             "best_of_n": {"1": 0.52, "4": 0.60, "16": 0.64, "64": 0.66}},
            {"policy": "control (references only)", "control": True, "test_reward": 0.51, "test_bleu": 20.3,
             "test_chrf": 45.5, "path": "c", "valid_reward": 0.52, "start_valid_reward": 0.50,
             "best_of_n": {"1": 0.46, "4": 0.56, "16": 0.61, "64": 0.64}}]
    quality.flag_reward_hacking(rows)
    assert rows[1]["reward_hacking"] and not rows[2]["reward_hacking"]
    summary = quality.best_of_n_summary(rows, "p1")
    assert summary["smallest_n_rest_reaches_bc_max"] == 16
    assert summary["smallest_n_control_reaches_bc_max"] == 64
    result = {"policy": "bc", "reward": "chrf", "other_metric": "BLEU", "quick": False, "rows": rows,
              "best_of_n": summary, "wall_s": 1.0, "data": {"test": {"rows": 10}, "grow": {"rows": 5}}}
    md = quality.markdown(result)
    assert "| ReST G=1 I=1 | 0.5300 | 19.20 |" in md and "**yes**" in md and "**16**" in md
    assert "| control (references only) | 0.4600 |" in md and "control reaches it at: N = 64" in md
    quality.plot(result, str(tmp_path / "q.png"))
    assert (tmp_path / "q.png").stat().st_size > 1000


def test_quality_best_of_n_summary_finds_n_between_grid_points():
    """With every sample's reward kept, the N is searched at every integer, with a bootstrap interval."""
    import quality

    # BC: one good sample in eight per sentence (best-of-8 = 1.0); ReST: three in eight.
    bc = [[0.0] * 7 + [1.0] for _ in range(20)]
    rest = [[0.0] * 5 + [1.0] * 3 for _ in range(20)]
    rows = [{"policy": "BC", "path": "bc", "best_of_n": {"1": 0.125, "8": 1.0}, "best_of_n_rewards": bc},
            {"policy": "ReST", "path": "p", "best_of_n": {"1": 0.375, "8": 1.0}, "best_of_n_rewards": rest}]
    summary = quality.best_of_n_summary(rows, "p", resamples=50)
    # ReST reaches 1.0 only when every subset holds a good sample: N >= 6 (5 bad ones).
    assert summary["smallest_n_rest_reaches_bc_max"] == 6
    assert summary["interval_95"] == [6, 6] and summary["share_of_resamples_below_max"] == 1.0
    md = quality.markdown({"policy": "bc", "reward": "chrf", "other_metric": "BLEU", "quick": False,
                           "rows": [{"policy": "BC", "test_reward": 0.5, "test_bleu": 20.0, "test_chrf": 45.0}],
                           "best_of_n": summary, "wall_s": 1.0, "data": {"test": {"rows": 20}, "grow": {"rows": 5}}})
    assert "**6** (paired bootstrap over test sentences, 50 resamples: 95 % interval 6–6" in md


def test_ctranslate2_sampling_accepts_large_seeds(tiny_policy):
    """Grow derives seeds far above 2**32 (seed × primes + offsets); the backend must take them."""
    from rest.model import backends as fast_generate
    from rest.model.policy import load_policy

    if not fast_generate.available():
        import pytest

        pytest.skip("ctranslate2 not installed")
    model, tok = load_policy(tiny_policy)
    out = fast_generate.generate(model, tok, ["Hallo Welt"], mode="sample", num_return=2, temperature=0.8,
                                 max_length_ratio=0.5, seed=13 * 1009 * 1_000_003 + 7919)
    assert len(out) == 1 and len(out[0]) == 2


def test_staged_records_then_reuses(tmp_path):
    """bench/_common.staged: a finished stage's result and times come back from its record."""
    from _common import staged

    calls, record = [], str(tmp_path / "stage.json")
    row = {}
    assert staged(row, "x", record, lambda: calls.append(1) or {"a": 1}) == {"a": 1}
    assert "x_cpu_s" in row and "x_wall_s" in row
    again = {}
    assert staged(again, "x", record, lambda: calls.append(1) or {"a": 2}, reuse=True) == {"a": 1}
    assert again == row and calls == [1]
    assert staged({}, "x", record, lambda: calls.append(1) or {"a": 3}) == {"a": 3}  # no reuse: runs


@pytest.mark.slow  # a few minutes: samples, trains a reward model, runs two tiny ReST loops and a control
def test_reward_model_bench_quick(tmp_path):
    import reward_model

    out = tmp_path / "rm"
    (res,) = reward_model.main(["--quick", "--case", "domain", "--output-dir", str(out)])
    assert [r["policy"] for r in res["rows"]] == ["base", "rest-chrf", "rest-learned-rollback",
                                               "rest-learned-per-source-rollback", "control"]
    assert {"kendall_tau", "spearman_rho"} <= set(res["reward_model"])
    assert res["prepared"]["grow"]["source_only_rows"] == 30
    assert "rest-learned-rollback vs control" in res["paired_bootstrap"]
    md = (out / "reward_model.md").read_text()
    assert "Kendall τ" in md and (out / "reward_model.png").exists()
    # A re-run with --reuse loads every stage and gives the same table.
    (again,) = reward_model.main(["--quick", "--case", "domain", "--output-dir", str(out), "--reuse"])
    assert [r["test_chrf"] for r in again["rows"]] == [r["test_chrf"] for r in res["rows"]]


def test_quality_hacking_flag_watches_chrf_when_the_reward_is_bleu():
    import quality

    rows = [{"policy": "BC", "test_bleu": 15.0, "test_chrf": 41.0},
            {"policy": "ReST", "test_bleu": 17.0, "test_chrf": 40.0, "valid_reward": 0.21, "start_valid_reward": 0.19}]
    quality.flag_reward_hacking(rows, "bleu")
    assert rows[1]["reward_hacking"] and rows[1]["other_change_vs_bc"] == -1.0
    quality.flag_reward_hacking(rows, "chrf")
    assert not rows[1]["reward_hacking"]


def test_quality_bench_quick_end_to_end(tmp_path):
    """bench/quality.py --quick on the shipped BC (≈40 s): every stage, the best-of-N summary with the
    control's curve, and a continued run that reuses all stage records."""
    import quality

    out = tmp_path / "q"
    r = quality.main(["--quick", "--backend", "ctranslate2", "--output-dir", str(out)])
    policies = [row["policy"] for row in r["rows"]]
    assert policies[0] == "BC" and policies[-1] == "control (references only)" and "ReST G=1 I=0 (unfiltered)" in policies
    b = r["best_of_n"]
    assert sorted(b["bc"], key=int) == ["1", "2", "4"] and b["control"] and b["rest"]
    assert all("best_of_n_rewards" not in row for row in r["rows"])  # per-sample rewards stay in the stage records
    md = (out / "quality.md").read_text()
    assert "| control (references only) |" in md and "Smallest N at which ReST reaches" in md
    again = quality.main(["--quick", "--backend", "ctranslate2", "--output-dir", str(out), "--reuse"])
    assert again["best_of_n"] == b


def test_ablation_arms_resolve_and_quick_mode_cuts_their_lists(tmp_path):
    """bench/ablation.py's arm table: every arm's flags resolve through rest.config (no new settings),
    and in quick mode an arm's own flags come after the tiny settings, per-step lists cut to one step."""
    import ablation

    assert ablation.ARMS["baseline"][0] == []  # today's defaults
    for name, (flags, why) in ablation.ARMS.items():
        assert why and flags == ablation.arm_flags(name, False, str(tmp_path), [])
        ablation.check_flags(flags)
    quick = ablation.arm_flags("percentile", True, str(tmp_path), ["--data.seed", "14"])
    assert quick[-6:] == ["--filter.mode", "percentile", "--filter.percentiles", "50", "--data.seed", "14"]
    assert "--no-tracking" in quick and quick[quick.index("--policy") + 1] == ablation.SHIPPED_POLICY
    ablation.check_flags(quick)
    assert ablation.main(["--list"]) == 0


@pytest.mark.slow  # ~2 CPU minutes: two tiny run-local arms; the default suite stays under its budget
def test_ablation_bench_quick_then_reuse(tmp_path):
    """`python bench/ablation.py --quick` as a user types it (≈2 CPU minutes: two tiny run-local arms),
    then `--reuse`, which re-reads both arms without running anything."""
    import json
    import subprocess
    import time

    out = tmp_path / "abl"
    cmd = [sys.executable, os.path.join("bench", "ablation.py"), "--quick", "--arms", "baseline,no-references",
           "--output-dir", str(out)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REST_", "MLFLOW_", "AWS_"))}
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    report = json.loads((out / "ablation.json").read_text())
    assert report["quick"] and not report["failed"]
    arms = {a["arm"]: a for a in report["arms"]}
    assert list(arms) == ["baseline", "no-references"]
    for a in arms.values():
        assert a["last_step"] == {"g": 1, "i": 1} and a["optimizer_steps"] >= 1 and a["cpu_s"] > 0
        assert all(isinstance(a[k], float) for k in ("test_bleu", "test_chrf", "test_reward", "kept_fraction"))
        for other in ("vs_bc", "vs_control"):
            for d in a[other].values():
                assert d["ci"][0] <= d["delta"] <= d["ci"][1]
            assert set(a[other]) == {"test_chrf", "test_reward", "test_bleu"}
    assert "--filter.keep_references false" in " ".join(arms["no-references"]["flags"])
    md = (out / "ablation.md").read_text()
    assert "| baseline |" in md and "| no-references |" in md and "chrF Δ vs control" in md
    assert (out / "ablation.png").stat().st_size > 1000

    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/arm.json")}
    t0 = time.time()
    again = subprocess.run(cmd + ["--reuse"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "[baseline] reused" in again.stdout and "[no-references] reused" in again.stdout
    assert "run-local --output-dir" not in again.stdout and time.time() - t0 < 120
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/arm.json")} == stamps  # nothing ran again
    assert json.loads((out / "ablation.json").read_text())["arms"] == report["arms"]


def test_domain_split_is_by_page_and_covers_the_test_modules(tmp_path):
    """bench/domain.py's split: every row of the bundled test modules on exactly one side, no page on two."""
    import domain

    paths = domain.domain_split(str(tmp_path))
    pages, total = {}, 0
    for name, path in paths.items():
        with open(path, encoding="utf-8") as f:
            header, *lines = f.read().splitlines()
        assert header == "id\tde\ten" and lines, name
        total += len(lines)
        for line in lines:
            pages.setdefault(line.split("#", 1)[0], set()).add(name)
    with open(os.path.join(ROOT, "data", "libreoffice-de-en", "test.tsv"), encoding="utf-8") as f:
        bundled = f.read().splitlines()[1:]
    assert 0.95 * len(bundled) < total <= len(bundled)  # only repeated sentences are dropped
    assert all(len(sides) == 1 for sides in pages.values())
    sources = {name: {line.split("\t")[1] for line in open(p, encoding="utf-8").read().splitlines()[1:]}
               for name, p in paths.items()}
    assert not sources["train"] & sources["valid"] and not sources["train"] & sources["test"]
    assert not sources["valid"] & sources["test"]  # what validate's overlap check demands
    flags = domain.arm_flags("converge", paths, False, [])
    assert flags[flags.index("--bootstrap.converge") + 1] == "true" and "--policy" in flags
    import ablation

    ablation.check_flags(flags)  # every --section.field of the arm resolves through rest.config


@pytest.mark.slow  # ~2 CPU minutes: two tiny run-local arms
def test_domain_bench_quick(tmp_path):
    """`python bench/domain.py --quick` as a user types it: both arms run, the converge arm's BC is the
    shipped BC continued on the domain pairs, and the report compares ReST with BC and the control."""
    import json
    import subprocess

    out = tmp_path / "dom"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REST_", "MLFLOW_", "AWS_"))}
    res = subprocess.run([sys.executable, os.path.join("bench", "domain.py"), "--quick", "--out", str(out)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    report = json.loads((out / "domain.json").read_text())
    assert set(report["arms"]) == {"given", "converge"}
    for arm in report["arms"].values():
        v = arm["summary"]["verdict"]
        assert set(v["significance"]) == {"bc", "control"} and "control_better_on" in v
    import domain

    trained = domain.converged_training(str(out / "converge"))
    assert trained and trained["steps"] > 0 and domain.converged_training(str(out / "given")) is None
    assert report["converged_vs_given_bc"]["test_chrf"]["delta_ci"][0] <= report["converged_vs_given_bc"]["test_chrf"]["delta"]
    md = (out / "domain.md").read_text()
    assert "| converge | BC (continued" in md and "Converged BC vs the given BC" in md


def test_best_of_n_bench_on_a_run(tmp_path):
    """bench/best_of_n.py as a user types it, on a run whose three policies are all the shipped BC:
    equal policies give equal samples (one seed), so ReST "reaches" BC's best-of-4 at N <= 4,
    and a second call re-reads the recorded rewards instead of sampling again."""
    import json
    import subprocess

    shipped = os.path.join(ROOT, "models", "bc-libreoffice-de-en")
    from _common import read_tsv

    rows = read_tsv(os.path.join(ROOT, "data", "libreoffice-de-en", "test.tsv"), limit=6)
    (tmp_path / "translations.jsonl").write_text("".join(
        json.dumps({"id": r["id"], "source": r["source"], "hypothesis": "", "reference": r["target"]}) + "\n"
        for r in rows))
    step = {"model_path": shipped, "eval_path": str(tmp_path), "g": 0, "i": 0, "control": False, "label": "bc"}
    summary = {"config": {"score": {"reward": "chrf"}, "evaluate": {"backend": "ctranslate2", "batch_sentences": 64.0}},
               "steps": [step, dict(step, g=1, i=1, label="rest g1 i1"), dict(step, control=True, label="control")],
               "verdict": {"last_step": {"g": 1, "i": 1}}}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    cmd = [sys.executable, os.path.join(ROOT, "bench", "best_of_n.py"), str(tmp_path), "--n", "4", "--resamples", "50"]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    result = json.loads((tmp_path / "best-of-n" / "best_of_n.json").read_text())
    curves = [p["curve"] for p in result["policies"]]
    assert [p["role"] for p in result["policies"]] == ["BC", "ReST G1 I1", "references-only control"]
    assert curves[0] == curves[1] == curves[2] and curves[0]["1"] <= curves[0]["2"] <= curves[0]["4"]
    assert result["summary"]["smallest_n_rest_reaches_bc_max"] <= 4
    assert "BC's best-of-4" in (tmp_path / "best-of-n" / "best_of_n.md").read_text()
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and again.stdout.count("re-read") == 3
    missing = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "best_of_n.py"), str(tmp_path / "nope")],
                             capture_output=True, text=True)
    assert missing.returncode == 2 and "no summary.json" in missing.stderr


def test_ablation_compares_a_converged_bc_with_the_shipped_one(tmp_path):
    """An arm that converges its own BC is also compared with the shipped BC (another arm's BC evaluation),
    paired over the same test sentences: its BC and its last ReST step, each with an interval."""
    import json

    import ablation

    refs = ["the cat sat on the mat", "open the dialog", "click OK to close", "select the table first"] * 3

    def run(name: str, bc_hyps: list[str], rest_hyps: list[str], flags: list[str]) -> dict:
        steps = []
        for label, g, hyps in (("bc", 0, bc_hyps), ("rest g1 i1", 1, rest_hyps)):
            d = tmp_path / name / label.replace(" ", "-")
            d.mkdir(parents=True)
            (d / "translations.jsonl").write_text("".join(
                json.dumps({"id": str(k), "source": "", "hypothesis": h, "reference": r, "reward": float(h == r)}) + "\n"
                for k, (h, r) in enumerate(zip(hyps, refs))))
            steps.append({"label": label, "g": g, "i": g, "control": False, "eval_path": str(d)})
        return {"arm": name, "flags": flags, "summary": {"steps": steps, "verdict": {"last_step": {"g": 1, "i": 1}}}}

    worse = ["the dog", "open it", "click", "select"] * 3
    records = [run("baseline", worse, worse, []),
               run("converge", refs, refs, [ablation.CONVERGE_FLAG, "true"])]
    rows = [{"arm": r["arm"]} for r in records]
    ablation.add_shipped_bc_comparison(records, rows)
    assert "vs_shipped_bc" not in rows[0]
    got = rows[1]["vs_shipped_bc"]
    assert set(got) == {"bc", "rest"}
    assert got["bc"]["test_reward"]["delta"] == pytest.approx(1.0)
    assert got["rest"]["test_chrf"]["delta"] > 0 and got["rest"]["test_chrf"]["ci"][0] > 0


def test_a_failed_bench_run_gives_the_earlier_run_back(tmp_path):
    """A bench arm run again (no --reuse) keeps the earlier finished run until the new one has
    finished: a run-local failure brings it back, and flags run-local does not take stop before
    anything is moved."""
    import main_job

    arm = tmp_path / "arm"
    arm.mkdir()
    (arm / "summary.json").write_text('{"earlier": true}')
    with pytest.raises(SystemExit, match="do not parse"):
        main_job.run_arm("arm", ["--report-only"], str(tmp_path), False, [])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["arm"]
    with pytest.raises(SystemExit, match="the earlier run is back"):
        main_job.run_arm("arm", ["--no-tracking", "--train", str(tmp_path / "missing.tsv")], str(tmp_path), False, [])
    assert (arm / "summary.json").read_text() == '{"earlier": true}'
    assert "validate" in (tmp_path / "arm.failed" / "stdout.log").read_text()
