"""Resume on a fresh pod: finetune checkpoints and Grow chunks mirrored to the run's object store.

A step runs in a child process with the object store configured the way a component
gets it (environment → ``rest_kfp.runtime``), is SIGKILLed once its first piece of state
is uploaded, and a second child — a "fresh pod": a new, empty local directory, the same
pipeline run — finishes it. It must resume (not start over) and end with exactly what an
uninterrupted run produces: the same optimizer steps and byte-identical weights; the
same grown set. The S3 server is moto's, over HTTP on 127.0.0.1.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid

import pytest

from rest.services import storage
from rest.services.files import read_jsonl, sha256_file, write_jsonl
from rest.services.resume import ResumeStore
from rest.services.storage import ArtifactStore
from tests.conftest import ROOT, bundled_rows
from tests.servers import s3_server  # noqa: F401  (fixture)

BUCKET = "resume-test"

# One step, as its component runs it: rest_kfp.runtime.step() reads the object store from
# the environment and configures the core; resume_uri() names the run's resume root.
# Arguments: one JSON object. tests/test_container_resume.py runs it inside the image.
STEP_SCRIPT = textwrap.dedent("""
    import json, os, signal, sys, time
    sys.path.insert(0, {root!r})
    args = json.loads(sys.argv[1])
    import rest.model.train, rest.steps.sample
    if args.get("slow"):  # slow each optimizer step down, so the test can kill the run mid-way
        _loss = rest.model.train._loss
        def slow_loss(*a):
            time.sleep(args["slow"])
            return _loss(*a)
        rest.model.train._loss = slow_loss
    if args.get("chunk_sources"):
        rest.steps.sample.CHUNK_SOURCES = args["chunk_sources"]
    # As sampling chunk number N starts: SIGKILL ourselves (die_on_chunk), or hang until killed
    # from outside (hang_on_chunk: in a container this process is PID 1, which ignores its own SIGKILL).
    stop_at = args.get("die_on_chunk") or args.get("hang_on_chunk")
    if stop_at:
        _gw, calls = rest.steps.sample.generate_with, []
        def stopping_generate_with(*a, **kw):
            fn = _gw(*a, **kw)
            def wrapped(*b, **kwb):
                calls.append(1)
                if len(calls) == stop_at:
                    if args.get("die_on_chunk"):
                        os.kill(os.getpid(), signal.SIGKILL)
                    time.sleep(3600)
                return fn(*b, **kwb)
            return wrapped
        rest.steps.sample.generate_with = stopping_generate_with
    from rest.config import FinetuneConfig, SampleConfig
    from rest_kfp.runtime import resume_uri, step
    if args["call"] == "improve":
        from rest.steps.finetune import improve
        with step("finetune", g=1, i=1):
            info = improve(args["policy"], args["filtered"], args["valid"], FinetuneConfig(**args["cfg"]), 1,
                           args["out"], checkpoint_dir=args["out"] + ".ckpt", resume_uri=resume_uri())
        print(json.dumps({{"optimizer_steps": info["optimizer_steps"]}}))
    else:
        from rest.steps.sample import grow
        with step("sample", g=1):
            stats = grow(args["policy"], args["sources"], SampleConfig(**args["cfg"]), args["out"], 1,
                         resume_uri=resume_uri())
        print(json.dumps(stats))
""")
CHILD = STEP_SCRIPT.format(root=ROOT)


def _env(s3, run: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("REST_", "MLFLOW_", "AWS_"))}  # only what this test sets
    return {**env, **s3.env(), "REST_S3_BUCKET": BUCKET, "REST_PIPELINE_RUN": run, "OMP_NUM_THREADS": "1"}


def _child(args: dict, env: dict, wait: bool = True):
    cmd = [sys.executable, "-c", CHILD, json.dumps(args)]
    if wait:
        return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=180)
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _objects(s3, run: str) -> list[str]:
    store = ArtifactStore(s3.settings(bucket=BUCKET))
    store.ensure_bucket()
    return store.list(f"runs/{run}/resume/")


# -- the store itself -------------------------------------------------------------------------------

def test_resume_uri_is_under_the_run(s3_server, monkeypatch):
    from rest_kfp import runtime

    settings = s3_server.settings(bucket=BUCKET, prefix="team/runs")
    assert storage.resume_uri("run-7", settings) == f"s3://{BUCKET}/team/runs/run-7/resume"
    assert storage.resume_uri("run-7", None) is None  # nothing configured
    with pytest.raises(storage.StorageError, match="object key"):
        storage.resume_uri("../other", settings)
    for k, v in {**s3_server.env(), "REST_S3_BUCKET": BUCKET, "REST_PIPELINE_RUN": "run-8"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("REST_S3_PREFIX", raising=False)
    assert runtime.resume_uri() == f"s3://{BUCKET}/runs/run-8/resume"
    monkeypatch.delenv("REST_S3_ENDPOINT")
    monkeypatch.delenv("MLFLOW_S3_ENDPOINT_URL")
    assert runtime.resume_uri() is None  # no object store: state stays on the local disk


def test_resume_store_round_trip_keys_and_cleanup(s3_server, tmp_path):
    settings = s3_server.settings(bucket=BUCKET)
    root = storage.resume_uri(f"unit-{uuid.uuid4().hex[:8]}", settings)
    pod1 = ResumeStore(str(tmp_path / "pod1"), root, "fp1", settings=settings)
    with pod1.saving("state.bin", background=True) as tmp:
        with open(tmp, "wb") as f:
            f.write(os.urandom(50_000))
    pod1.wait()
    pod1.push("missing.bin")  # a failed upload is logged, not raised
    # A fresh disk: the same key finds the file, byte for byte; another fingerprint finds nothing.
    pod2 = ResumeStore(str(tmp_path / "pod2"), root, "fp1", settings=settings)
    assert pod2.pull() == ["state.bin"]
    assert sha256_file(pod2.path("state.bin")) == sha256_file(pod1.path("state.bin"))
    assert pod2.pull() == []  # already on the local disk
    assert ResumeStore(str(tmp_path / "pod3"), root, "fp2", settings=settings).pull() == []
    # An object whose bytes do not match its recorded digest never counts.
    store = ArtifactStore(settings)
    bucket, key = storage.parse_uri(root + "/fp1/state.bin")
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"half a checkpoint")
    store.client.fput_object(bucket, key, str(bad), metadata={"sha256": sha256_file(pod1.path("state.bin"))})
    pod4 = ResumeStore(str(tmp_path / "pod4"), root, "fp1", settings=settings)
    assert pod4.pull() == [] and not os.path.exists(pod4.path("state.bin"))
    assert pod1.clear() == 1 and pod2.pull(replace=True) == []
    # Local only: no store, nothing to do.
    local = ResumeStore(str(tmp_path / "local"), None, "fp1")
    assert not local.mirrored and local.pull() == [] and local.clear() == 0


# -- finetune: kill after the first upload, finish on a fresh disk ---------------------------------

@pytest.fixture(scope="module")
def filtered_set(tmp_path_factory):
    """A filtered-set dir (data.jsonl of {source, candidate, reward, ...}) and a validation split."""
    d = tmp_path_factory.mktemp("resume")
    rows = bundled_rows("train", 24)
    write_jsonl(str(d / "filtered" / "data.jsonl"), (
        {"id": f"{i}#ref", "source_id": i, "source": de, "candidate": en, "reference": en, "reward": 1.0,
         "origin": "reference"} for i, de, en in rows))
    # Short validation sources: the untrained policy's greedy outputs stay short too.
    write_jsonl(str(d / "valid.jsonl"), ({"id": i, "source": " ".join(de.split()[:3]), "target": en}
                                         for i, de, en in bundled_rows("valid", 3)))
    return {"filtered": str(d / "filtered"), "valid": str(d / "valid.jsonl")}


FT_CFG = dict(batch_tokens=64, epochs=1, checkpoint_every=5, warmup_steps=5, learning_rate=1e-3, threads=1)


@pytest.mark.integration
def test_finetune_resumes_on_a_fresh_disk_from_the_object_store(s3_server, tmp_path, tiny_policy, filtered_set):
    from rest.config import FinetuneConfig
    from rest.steps.finetune import improve

    # The uninterrupted run, with no object store (in this process: one thread, as the children).
    clean = improve(tiny_policy, filtered_set["filtered"], filtered_set["valid"], FinetuneConfig(**FT_CFG), 1,
                    str(tmp_path / "clean"), checkpoint_dir=str(tmp_path / "clean.ckpt"))
    steps = clean["optimizer_steps"]
    assert steps >= 15

    run = f"ft-{uuid.uuid4().hex[:8]}"
    env = _env(s3_server, run)
    pod1 = tmp_path / "pod1"
    args = dict(call="improve", policy=tiny_policy, **filtered_set, cfg=FT_CFG)
    proc = _child({**args, "out": str(pod1 / "improved"), "slow": 0.2}, env, wait=False)
    deadline, uploaded = time.time() + 90, []
    while not uploaded and proc.poll() is None and time.time() < deadline:
        uploaded = [k for k in _objects(s3_server, run) if k.endswith("/train_state.pt")]
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before its first upload: " + proc.stderr.read()[-3000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert len(uploaded) == 1 and uploaded[0].startswith(f"runs/{run}/resume/")

    # A fresh pod: a new, empty local directory; the same pipeline run.
    pod2 = tmp_path / "pod2"
    again = _child({**args, "out": str(pod2 / "improved")}, env)
    assert again.returncode == 0, again.stderr[-4000:]
    assert "fetched 1 saved state file(s) from s3://" in again.stderr
    assert "resuming from checkpoint at step" in again.stderr, again.stderr[-4000:]
    resumed_at = int(again.stderr.split("resuming from checkpoint at step ")[1].split()[0])
    assert 5 <= resumed_at < steps and resumed_at % 5 == 0
    assert json.loads(again.stdout.strip().splitlines()[-1])["optimizer_steps"] == steps
    info = json.load(open(pod2 / "improved" / "rest_policy.json"))
    assert info["optimizer_steps"] == steps
    # The very same weights as the uninterrupted run, byte for byte.
    with open(pod2 / "improved" / "model.safetensors", "rb") as a, \
            open(tmp_path / "clean" / "model.safetensors", "rb") as b:
        assert a.read() == b.read()
    # The step wrote its output: its state in the object store is gone.
    assert _objects(s3_server, run) == []


# -- Grow: kill after two chunks, finish on a fresh disk --------------------------------------------

@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    d = tmp_path_factory.mktemp("resume_sources")
    path = str(d / "grow.jsonl")
    # Short sources keep sampling with an untrained policy cheap.
    write_jsonl(path, ({"id": i, "source": " ".join(de.split()[:3]), "target": en}
                       for i, de, en in bundled_rows("train", 40)))
    return path


SAMPLE_CFG = dict(num_samples=2, batch_sentences=128, max_length_ratio=0.5, threads=1)


@pytest.mark.integration
def test_grow_resumes_on_a_fresh_disk_from_the_object_store(s3_server, tmp_path, tiny_policy, sources,
                                                            monkeypatch):
    from rest.config import SampleConfig
    from rest.steps import sample

    run = f"grow-{uuid.uuid4().hex[:8]}"
    env = _env(s3_server, run)
    args = dict(call="grow", policy=tiny_policy, sources=sources, cfg=SAMPLE_CFG, chunk_sources=16)
    killed = _child({**args, "out": str(tmp_path / "pod1" / "grown"), "die_on_chunk": 3}, env)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    chunks = _objects(s3_server, run)
    assert len(chunks) == 2 and all(k.split("/")[-1].startswith(("chunk-00000-", "chunk-00001-")) for k in chunks)

    # A fresh pod: a new, empty local directory; the same pipeline run.
    out = tmp_path / "pod2" / "grown"
    again = _child({**args, "out": str(out)}, env)
    assert again.returncode == 0, again.stderr[-4000:]
    assert "fetched 2 saved state file(s) from s3://" in again.stderr
    stats = json.loads(again.stdout.strip().splitlines()[-1])
    assert stats["reused_chunks"] == 2 and stats["rows"] == 40 * 3
    assert not os.path.exists(out / "chunks")

    # The same grown set as an uninterrupted run with no object store.
    monkeypatch.setattr(sample, "CHUNK_SOURCES", 16)
    clean = str(tmp_path / "clean")
    assert sample.grow(tiny_policy, sources, SampleConfig(**SAMPLE_CFG), clean, 1)["reused_chunks"] == 0
    assert sha256_file(str(out / "data.jsonl")) == sha256_file(os.path.join(clean, "data.jsonl"))
    assert len(list(read_jsonl(str(out / "data.jsonl")))) == 120
    assert _objects(s3_server, run) == []


# -- a step lost after training ended resumes without another optimizer step ------------------------

@pytest.mark.parametrize("stop", [{"max_steps": 6}, {"epochs": 1}])
def test_resuming_a_finished_training_takes_no_further_step(tmp_path, tiny_policy, filtered_set, stop):
    """The pod died after the last checkpoint (training over) but before the policy was saved:
    the retry must not train on, whatever stopped the training (step budget, epochs)."""
    from rest.config import FinetuneConfig
    from rest.steps.finetune import improve

    cfg = FinetuneConfig(**{**FT_CFG, **stop})
    ckpt = str(tmp_path / "ckpt")
    first = improve(tiny_policy, filtered_set["filtered"], filtered_set["valid"], cfg, 1, str(tmp_path / "a"),
                    checkpoint_dir=ckpt)
    again = improve(tiny_policy, filtered_set["filtered"], filtered_set["valid"], cfg, 1, str(tmp_path / "b"),
                    checkpoint_dir=ckpt)
    assert again["optimizer_steps"] == first["optimizer_steps"]
    assert sha256_file(str(tmp_path / "a" / "model.safetensors")) == sha256_file(
        str(tmp_path / "b" / "model.safetensors"))


# -- data-parallel: every rank resumes from the checkpoint rank 0 fetched ---------------------------

@pytest.mark.integration
def test_data_parallel_ranks_resume_from_the_object_store(s3_server, tmp_path, tiny_policy, caplog):
    """Two gloo processes: rank 0 downloads the checkpoint before the other rank starts, both
    resume at its step, and the run ends as an unbroken two-process run does."""
    import itertools

    import torch

    from rest.model.device import Amp
    from rest.model.distributed import train_parallel
    from rest.model.policy import load_policy
    from rest.model.train import TrainSpec

    rows = [{"source": de, "target": en} for _, de, en in bundled_rows("train", 160)]
    valid = [{"source": de, "target": en} for _, de, en in bundled_rows("valid", 2)]
    counter = itertools.count()

    def rising_reward(sources, hyps, refs):  # every check is better than all before: the last weights are kept
        return [float(next(counter))] * len(hyps)

    def train(max_steps: int, ckpt: str, resume_uri: str | None):
        model, tok = load_policy(tiny_policy)
        spec = TrainSpec(learning_rate=3e-3, warmup_steps=0, batch_tokens=700, max_steps=max_steps, eval_every=3,
                         checkpoint_every=3, seed=7, label="ddp", valid_backend="hf")
        threads = torch.get_num_threads()
        try:
            # The same fingerprint for both budgets: the step budget only says when to stop.
            result = train_parallel(model, tok, rows, valid, spec, rising_reward, device=torch.device("cpu"),
                                    amp=Amp(), processes=2, policy_dir=tiny_policy, threads=1, checkpoint_dir=ckpt,
                                    fingerprint="ddp-test", resume_uri=resume_uri)
        finally:
            torch.set_num_threads(threads)
        return result, model

    settings = s3_server.settings(bucket=BUCKET)
    root = storage.resume_uri(f"ddp-{uuid.uuid4().hex[:8]}", settings)
    storage.configure(settings)  # as rest_kfp.runtime.step() does in a component
    try:
        first, _ = train(3, str(tmp_path / "pod1"), root)  # lost after its step-3 checkpoint was uploaded
        caplog.clear()
        with caplog.at_level(logging.INFO):
            resumed, m_resumed = train(6, str(tmp_path / "pod2"), root)  # a fresh, empty disk
    finally:
        storage.configure(None)
    # Rank 0 fetched it (before the other rank started: a rank that began at step 0 would take
    # other collectives than rank 0 and the run would fail).
    assert "fetched 1 saved state file(s) from s3://" in caplog.text
    assert "ddp: resuming from checkpoint at step 3" in caplog.text
    clean, m_clean = train(6, str(tmp_path / "clean"), None)
    assert first.steps == 3 and resumed.steps == clean.steps == 6
    assert resumed.step_losses == clean.step_losses
    for (name, a), b in zip(m_resumed.state_dict().items(), m_clean.state_dict().values()):
        assert torch.equal(a, b), name
