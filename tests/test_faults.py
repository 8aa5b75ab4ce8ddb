"""Faults: a killed step resumes, half-written files never replace good ones, a failed re-run
leaves the earlier output as it was.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from rest.services.files import atomic_path, copy_tree, read_jsonl, sha256_path, write_json, write_jsonl
from tests.conftest import ROOT, bundled_rows

# A child process: optionally slowed down (so the test can kill it mid-run) or set to
# SIGKILL itself at a given point, then one core call; prints its result as JSON.
CHILD = textwrap.dedent("""
    import json, logging, os, signal, sys, time
    sys.path.insert(0, {root!r})
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
    args = json.loads(sys.argv[1])
    import rest.model.train, rest.steps.sample
    if args.get("slow"):
        _loss = rest.model.train._loss
        def slow_loss(*a):
            time.sleep(args["slow"])
            return _loss(*a)
        rest.model.train._loss = slow_loss
    if args.get("chunk_sources"):
        rest.steps.sample.CHUNK_SOURCES = args["chunk_sources"]
    if args.get("die_on_generate"):  # SIGKILL ourselves when sampling chunk number N starts
        calls = []
        def dying(fn):
            def wrapped(*a, **kw):
                calls.append(1)
                if len(calls) == args["die_on_generate"]:
                    os.kill(os.getpid(), signal.SIGKILL)
                return fn(*a, **kw)
            return wrapped
        if hasattr(rest.steps.sample, "generate_with"):  # the backend switch (hf | ctranslate2)
            _gw = rest.steps.sample.generate_with
            rest.steps.sample.generate_with = lambda *a, **kw: dying(_gw(*a, **kw))
        else:
            rest.steps.sample.generate = dying(rest.steps.sample.generate)
    from rest.config import FinetuneConfig, SampleConfig
    if args["call"] == "improve":
        from rest.steps.finetune import improve
        info = improve(args["policy"], args["filtered"], args["valid"], FinetuneConfig(**args["cfg"]), 1,
                       args["out"], checkpoint_dir=args["ckpt"])
        print(json.dumps({{"optimizer_steps": info["optimizer_steps"]}}))
    else:
        from rest.steps.sample import grow
        print(json.dumps(grow(args["policy"], args["sources"], SampleConfig(**args["cfg"]), args["out"], 1)))
""").format(root=ROOT)


def run_child(args: dict, wait=True):
    cmd = [sys.executable, "-c", CHILD, json.dumps(args)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if wait:
        return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


@pytest.fixture(scope="module")
def filtered_set(tmp_path_factory):
    """A filtered-set dir (data.jsonl of {source, candidate, reward, ...}) and a validation split."""
    d = tmp_path_factory.mktemp("faults")
    rows = bundled_rows("train", 24)
    write_jsonl(str(d / "filtered" / "data.jsonl"), (
        {"id": f"{i}#ref", "source_id": i, "source": de, "candidate": en, "reference": en, "reward": 1.0,
         "origin": "reference"} for i, de, en in rows))
    # Short validation sources: the untrained policy's greedy outputs stay short too.
    write_jsonl(str(d / "valid.jsonl"), ({"id": i, "source": " ".join(de.split()[:3]), "target": en}
                                         for i, de, en in bundled_rows("valid", 3)))
    return {"filtered": str(d / "filtered"), "valid": str(d / "valid.jsonl")}


FT_CFG = dict(batch_tokens=64, epochs=1, checkpoint_every=5, warmup_steps=5, learning_rate=1e-3, threads=1)


def test_finetune_resumes_after_sigkill(tmp_path, tiny_policy, filtered_set):
    from rest.steps.finetune import improve
    from rest.config import FinetuneConfig
    from rest.model.policy import load_policy

    # The uninterrupted run, for comparison (in this process: same thread count, same ops).
    clean = improve(tiny_policy, filtered_set["filtered"], filtered_set["valid"], FinetuneConfig(**FT_CFG), 1,
                    str(tmp_path / "clean"), checkpoint_dir=str(tmp_path / "clean.ckpt"))
    steps = clean["optimizer_steps"]
    assert 18 <= steps <= 24  # 24 rows, (nearly) each alone in a 64-token batch

    out, ckpt = str(tmp_path / "out"), str(tmp_path / "ckpt")
    args = dict(call="improve", policy=tiny_policy, **filtered_set, cfg=FT_CFG, out=out, ckpt=ckpt)
    proc = run_child({**args, "slow": 0.15}, wait=False)
    state = os.path.join(ckpt, "train_state.pt")
    deadline = time.time() + 60
    while not os.path.exists(state) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before its first checkpoint: " + proc.stderr.read()[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not os.path.exists(out), "a killed run must not leave an output directory"

    again = run_child(args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming from checkpoint at step" in again.stderr
    resumed_at = int(again.stderr.split("resuming from checkpoint at step ")[1].split()[0])
    assert 5 <= resumed_at < steps and resumed_at % 5 == 0
    assert json.loads(again.stdout.strip().splitlines()[-1])["optimizer_steps"] == clean["optimizer_steps"]
    # Complete output: loadable, with lineage; and the very same weights as the clean run.
    for name in ("config.json", "model.safetensors", "rest_policy.json"):
        assert os.path.exists(os.path.join(out, name)), name
    load_policy(out)
    info = json.load(open(os.path.join(out, "rest_policy.json")))
    assert info["optimizer_steps"] == steps and info["train_rows"] == 24
    assert sha256_path(os.path.join(out, "model.safetensors")) == sha256_path(
        os.path.join(str(tmp_path / "clean"), "model.safetensors"))
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")], "temporary files left behind"


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    d = tmp_path_factory.mktemp("sources")
    rows = bundled_rows("train", 40)
    path = str(d / "grow.jsonl")
    # Short sources keep sampling with an untrained policy cheap.
    write_jsonl(path, ({"id": i, "source": " ".join(de.split()[:3]), "target": en} for i, de, en in rows))
    return path


SAMPLE_CFG = dict(num_samples=2, batch_sentences=128, max_length_ratio=0.5, threads=1)


def test_sampling_resumes_from_its_chunks(tmp_path, tiny_policy, sources, monkeypatch):
    from rest.steps import sample
    from rest.config import SampleConfig

    monkeypatch.setattr(sample, "CHUNK_SOURCES", 16)  # 40 sources = chunks of 16, 16, 8
    out = str(tmp_path / "grown")
    args = dict(call="grow", policy=tiny_policy, sources=sources, cfg=SAMPLE_CFG, out=out, chunk_sources=16)
    killed = run_child({**args, "die_on_generate": 3})  # dies as the third chunk starts
    assert killed.returncode == -signal.SIGKILL
    chunks = sorted(os.listdir(os.path.join(out, "chunks")))
    assert len(chunks) == 2 and not os.path.exists(os.path.join(out, "data.jsonl"))

    stats = sample.grow(tiny_policy, sources, SampleConfig(**SAMPLE_CFG), out, 1)
    assert stats["reused_chunks"] == 2  # only the missing third chunk was sampled again
    assert stats["rows"] == 40 * 3 and not os.path.exists(os.path.join(out, "chunks"))
    # Reused chunks hold exactly what an unbroken run samples.
    clean = str(tmp_path / "clean")
    clean_stats = sample.grow(tiny_policy, sources, SampleConfig(**SAMPLE_CFG), clean, 1)
    assert clean_stats["reused_chunks"] == 0
    assert sha256_path(os.path.join(out, "data.jsonl")) == sha256_path(os.path.join(clean, "data.jsonl"))
    # Chunks of other inputs (another seed) are never reused.
    os.makedirs(os.path.join(out, "chunks"))
    for c in chunks:
        open(os.path.join(out, "chunks", c), "w").write('{"bogus": 1}\n')
    other = sample.grow(tiny_policy, sources, SampleConfig(**{**SAMPLE_CFG, "seed": 99}), out, 1)
    assert other["reused_chunks"] == 0 and other["seed"] == 99


class Boom(RuntimeError):
    pass


def _rows(n, tag):
    for k in range(n):
        if tag == "fail" and k == n // 2:
            raise Boom("disk full")
        yield {"k": k, "tag": tag}


def _no_temps(d):
    return [n for n in os.listdir(d) if n.startswith(".") or n.endswith((".tmp", ".old"))]


def test_atomic_jsonl_write_keeps_old_content_on_failure(tmp_path):
    p = str(tmp_path / "data.jsonl")
    write_jsonl(p, _rows(100, "good"))
    before = sha256_path(p)
    with pytest.raises(Boom):
        write_jsonl(p, _rows(100, "fail"))
    assert sha256_path(p) == before and len(list(read_jsonl(p))) == 100
    assert _no_temps(tmp_path) == []
    with pytest.raises(Boom):
        write_jsonl(str(tmp_path / "new.jsonl"), _rows(100, "fail"))
    assert not os.path.exists(tmp_path / "new.jsonl") and _no_temps(tmp_path) == []


def test_atomic_json_write_keeps_old_content_on_failure(tmp_path):
    p = str(tmp_path / "stats.json")
    write_json(p, {"a": 1})
    before = sha256_path(p)
    with pytest.raises(TypeError):
        write_json(p, {"a": object()})  # not JSON-serialisable: fails mid-dump
    assert sha256_path(p) == before and json.load(open(p)) == {"a": 1}
    assert _no_temps(tmp_path) == []


def test_atomic_directory_replace_and_copy_tree(tmp_path):
    out = str(tmp_path / "out")
    with atomic_path(out) as tmp:
        os.makedirs(tmp)
        open(os.path.join(tmp, "a.txt"), "w").write("first")
    before = sha256_path(out)
    with pytest.raises(Boom):
        with atomic_path(out) as tmp:
            os.makedirs(tmp)
            open(os.path.join(tmp, "a.txt"), "w").write("half")
            raise Boom("killed mid-write")
    assert sha256_path(out) == before and _no_temps(tmp_path) == []
    # A successful replace swaps the whole directory (no stale files from the old one).
    src = tmp_path / "src"
    src.mkdir()
    (src / "b.txt").write_text("second")
    copy_tree(str(src), out)
    assert sorted(os.listdir(out)) == ["b.txt"] and _no_temps(tmp_path) == []
    # copy_tree failing half-way (a dangling link in the source) leaves the previous tree.
    before = sha256_path(out)
    os.symlink(str(tmp_path / "missing"), src / "dangling")
    with pytest.raises(Exception):
        copy_tree(str(src), out)
    assert sha256_path(out) == before and _no_temps(tmp_path) == []


def _scored_dir(d, rewards):
    rows = [{"id": f"s{k // 4}#{k}", "source_id": f"s{k // 4}", "source": "x", "candidate": f"c{k}",
             "reference": "r", "origin": "sample", "reward": r} for k, r in enumerate(rewards)]
    write_jsonl(os.path.join(d, "data.jsonl"), rows)
    write_json(os.path.join(d, "stats.json"), {"mean_reward": sum(rewards) / len(rewards)})
    return d


def test_failed_filter_rerun_keeps_the_earlier_output(tmp_path):
    from rest.config import FilterConfig
    from rest.steps.filter import FilterError, filter_scored

    scored = _scored_dir(str(tmp_path / "scored"), [0.1, 0.4, 0.6, 0.9] * 5)
    out = str(tmp_path / "filtered")
    first = filter_scored(scored, FilterConfig(thresholds=[0.5], max_per_source=0), 1, out)
    assert first["kept"] == 10
    before = sha256_path(out)
    with pytest.raises(FilterError, match=r"no candidate passed threshold 1\.0000"):
        filter_scored(scored, FilterConfig(thresholds=[1.0], max_per_source=0), 1, out)
    assert sha256_path(out) == before
    assert _no_temps(out) == [] and _no_temps(tmp_path) == []


def test_failed_score_rerun_keeps_the_earlier_output(tmp_path):
    from rest.rewards import metrics as rewards
    from rest.config import ScoreConfig
    from rest.steps.score import score

    grown = str(tmp_path / "grown")
    write_jsonl(os.path.join(grown, "data.jsonl"), ({"id": str(k), "source_id": str(k), "source": "Hallo",
                                                     "candidate": "Hello", "reference": "Hello"} for k in range(10)))
    out = str(tmp_path / "scored")
    score(grown, ScoreConfig(reward="chrf", batch_size=4), out)
    before = sha256_path(out)

    @rewards.register("test_faults_broken")
    def broken(sources, candidates, references):
        return [float("nan")] * len(candidates)

    with pytest.raises(rewards.RewardError, match="non-finite"):
        score(grown, ScoreConfig(reward="test_faults_broken", batch_size=4), out)
    assert sha256_path(out) == before and _no_temps(out) == []


def test_per_source_filter_refuses_interleaved_sources(tmp_path):
    """A grown set whose sources are interleaved would be cut per fragment: refuse it instead."""
    from rest.config import FilterConfig
    from rest.steps.filter import FilterError, filter_scored

    scored = _scored_dir(str(tmp_path / "scored"), [0.1, 0.4, 0.6, 0.9] * 3)
    rows = list(read_jsonl(os.path.join(scored, "data.jsonl")))
    write_jsonl(os.path.join(scored, "data.jsonl"), rows[4:6] + rows[:4] + rows[6:])  # s1, s0, s1, s2
    cfg = FilterConfig(thresholds=[0.5], mode="percentile", percentiles=[50.0])
    with pytest.raises(FilterError, match=r"rows of source 's1' are not contiguous"):
        filter_scored(scored, cfg, 1, str(tmp_path / "out"))
    assert not os.path.exists(tmp_path / "out" / "data.jsonl")
    # The global filter without a per-source cap reads row by row: no contiguity needed.
    assert filter_scored(scored, FilterConfig(thresholds=[0.5], max_per_source=0), 1, str(tmp_path / "out"))["kept"] == 6


def test_leftovers_of_a_killed_writer_are_cleaned_up(tmp_path):
    """A writer SIGKILLed mid-file leaves a temporary; the next write of that path removes it,
    so the directory's digest (what gets published) equals that of a clean run."""
    out = tmp_path / "scored"
    code = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {ROOT!r})
        from rest.services.files import write_jsonl
        def rows():
            yield {{"k": 1}}
            os.kill(os.getpid(), signal.SIGKILL)
        write_jsonl({str(out / "data.jsonl")!r}, rows())
    """)
    assert subprocess.run([sys.executable, "-c", code]).returncode == -signal.SIGKILL
    assert _no_temps(out), "expected the killed writer's temporary"
    write_jsonl(str(out / "data.jsonl"), _rows(3, "good"))
    clean = tmp_path / "clean"
    write_jsonl(str(clean / "data.jsonl"), _rows(3, "good"))
    assert _no_temps(out) == [] and sha256_path(str(out)) == sha256_path(str(clean))


def test_directory_moved_aside_before_a_kill_is_restored(tmp_path):
    out = tmp_path / "policy"
    out.mkdir()
    (out / "w").write_text("v1")
    before = sha256_path(str(out))
    # The state between the two renames of a directory replace, left by a dead writer (pid 999999).
    os.rename(out, tmp_path / ".policy.999999.abcd.tmp.old")
    with pytest.raises(Boom):
        with atomic_path(str(out)):
            raise Boom("this write fails too")
    assert sha256_path(str(out)) == before and _no_temps(tmp_path) == []


def test_unreadable_or_foreign_checkpoint_starts_afresh(tmp_path, tiny_policy, filtered_set, caplog):
    import logging

    from rest.config import FinetuneConfig
    from rest.steps.finetune import improve

    cfg = FinetuneConfig(**{**FT_CFG, "batch_tokens": 2000})
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "train_state.pt").write_bytes(b"not a checkpoint")
    caplog.set_level(logging.INFO)
    info = improve(tiny_policy, filtered_set["filtered"], filtered_set["valid"], cfg, 1, str(tmp_path / "a"),
                   checkpoint_dir=str(ckpt))
    assert "ignoring unreadable checkpoint" in caplog.text and info["optimizer_steps"] > 0
    # The checkpoint now belongs to this run; another run (other seed) must not resume from it.
    caplog.clear()
    improve(tiny_policy, filtered_set["filtered"], filtered_set["valid"], FinetuneConfig(**{**FT_CFG, "seed": 5,
            "batch_tokens": 2000}), 1, str(tmp_path / "b"), checkpoint_dir=str(ckpt))
    assert "ignoring checkpoint made for other inputs" in caplog.text and "resuming" not in caplog.text
