"""Resume on a fresh pod, with real containers (marker ``container``): a finetune step and a
Grow step run in the component image as a pod would (uid 1000, read-only root, ``/tmp`` a
tmpfs), the container is SIGKILLed once the step's first state is in the object store, and
a new container — a new tmpfs, a new empty output directory, the same pipeline run —
finishes the step. It must end exactly as an uninterrupted container run: the same
optimizer steps and byte-identical weights; the same grown set.

Like tests/test_container_run.py these build the component image from the working tree
first (cached layers: seconds once the base is built) and run only when selected:
``python -m pytest -m container tests/test_container_resume.py``.
"""
from __future__ import annotations

import json
import os
import shutil
import time
import uuid

import pytest

from tests.test_container_run import CONTAINERS, _build, engine  # noqa: F401  (fixture)
from tests.test_resume import (BUCKET, FT_CFG, SAMPLE_CFG, STEP_SCRIPT, _objects, filtered_set,  # noqa: F401
                               sources)
from tests.servers import s3_server  # noqa: F401  (fixture)

pytestmark = [pytest.mark.container]
SCRIPT = STEP_SCRIPT.format(root="/opt/rest")  # the project's place in the image


@pytest.fixture(scope="module")
def image(engine):
    return _build("cpu")[0]


@pytest.fixture(scope="module")
def staged(tmp_path_factory, tiny_policy, filtered_set, sources):
    """The step inputs in one directory uid 1000 can read, mounted read-only at /in (as a pod's
    inputs come from the object store, not from the submitter's disk)."""
    d = tmp_path_factory.mktemp("container_resume_inputs")
    shutil.copytree(tiny_policy, d / "policy")
    shutil.copytree(filtered_set["filtered"], d / "filtered")
    shutil.copyfile(filtered_set["valid"], d / "valid.jsonl")
    shutil.copyfile(sources, d / "sources.jsonl")
    for dirpath, _, files in os.walk(d):
        os.chmod(dirpath, 0o755)
        for f in files:
            os.chmod(os.path.join(dirpath, f), 0o644)
    return str(d)


def _out_dir(path) -> str:
    """A new, empty output directory the container's uid 1000 may write (mounted at /out)."""
    os.makedirs(path)
    os.chmod(path, 0o1777)
    return str(path)


def _start(engine, image, staged, args, env, out_dir=None):
    import sys

    sys.path.insert(0, CONTAINERS)
    from run_tiny_pipeline import CONTAINER_SECURITY

    volumes = {staged: {"bind": "/in", "mode": "ro"}}
    if out_dir:
        volumes[out_dir] = {"bind": "/out", "mode": "rw"}
    return engine.containers.run(image, ["python", "-c", SCRIPT, json.dumps(args)], environment=env,
                                 volumes=volumes, detach=True, **CONTAINER_SECURITY)


def _finish(container, timeout=300) -> tuple[int, str, str]:
    """Wait for the container; (exit code, stdout, stderr); the container (and its tmpfs) is removed."""
    try:
        code = container.wait(timeout=timeout)["StatusCode"]
        return (code, container.logs(stdout=True, stderr=False).decode(),
                container.logs(stdout=False, stderr=True).decode())
    finally:
        container.remove(force=True)


def _env(s3, run: str | None) -> dict:
    env = {"OMP_NUM_THREADS": "1"}
    if run:  # the object store and the run id, as a pod gets them from the Secret and its label
        env.update({**s3.env(), "REST_S3_BUCKET": BUCKET, "REST_PIPELINE_RUN": run})
    return env


def test_finetune_container_killed_resumes_in_a_fresh_container(engine, image, staged, s3_server, tmp_path):
    args = dict(call="improve", policy="/in/policy", filtered="/in/filtered", valid="/in/valid.jsonl", cfg=FT_CFG)
    # The uninterrupted run, in the image, without an object store.
    clean_dir = _out_dir(tmp_path / "clean")
    code, out, err = _finish(_start(engine, image, staged, {**args, "out": "/out/improved"}, _env(s3_server, None),
                                    clean_dir))
    assert code == 0, err[-4000:]
    steps = json.loads(out.strip().splitlines()[-1])["optimizer_steps"]

    # First pod: state only in its /tmp (a tmpfs, gone with the container) and the object store.
    run = f"ctr-ft-{uuid.uuid4().hex[:8]}"
    first = _start(engine, image, staged, {**args, "out": "/tmp/improved", "slow": 0.3}, _env(s3_server, run))
    deadline, uploaded = time.time() + 180, []
    while not uploaded and time.time() < deadline:
        first.reload()
        if first.status == "exited":
            break
        uploaded = [k for k in _objects(s3_server, run) if k.endswith("/train_state.pt")]
        time.sleep(0.1)
    assert uploaded, "no checkpoint reached the object store: " + first.logs().decode()[-3000:]
    first.kill()  # SIGKILL, as a preempted pod's container
    code, _, err1 = _finish(first)
    assert code == 137, err1[-3000:]

    # A fresh pod: a new container, a new tmpfs, a new empty output directory; the same run.
    pod2 = _out_dir(tmp_path / "pod2")
    code, out, err = _finish(_start(engine, image, staged, {**args, "out": "/out/improved"}, _env(s3_server, run),
                                    pod2))
    assert code == 0, err[-4000:]
    assert "fetched 1 saved state file(s) from s3://" in err and "resuming from checkpoint at step" in err, err[-4000:]
    resumed_at = int(err.split("resuming from checkpoint at step ")[1].split()[0])
    assert 5 <= resumed_at < steps
    assert json.loads(out.strip().splitlines()[-1])["optimizer_steps"] == steps
    with open(os.path.join(pod2, "improved", "model.safetensors"), "rb") as a, \
            open(os.path.join(clean_dir, "improved", "model.safetensors"), "rb") as b:
        assert a.read() == b.read()
    assert _objects(s3_server, run) == []


def test_grow_container_killed_resumes_in_a_fresh_container(engine, image, staged, s3_server, tmp_path):
    args = dict(call="grow", policy="/in/policy", sources="/in/sources.jsonl", cfg=SAMPLE_CFG, chunk_sources=16)
    clean_dir = _out_dir(tmp_path / "clean")
    code, _, err = _finish(_start(engine, image, staged, {**args, "out": "/out/grown"}, _env(s3_server, None),
                                  clean_dir))
    assert code == 0, err[-4000:]

    run = f"ctr-grow-{uuid.uuid4().hex[:8]}"
    # The step stops as its third chunk starts (two chunks are then in the object store) and is
    # SIGKILLed from outside, as a preempted pod's container.
    first = _start(engine, image, staged, {**args, "out": "/tmp/grown", "hang_on_chunk": 3}, _env(s3_server, run))
    deadline, chunks = time.time() + 180, []
    while len(chunks) < 2 and time.time() < deadline:
        first.reload()
        if first.status == "exited":
            break
        chunks = _objects(s3_server, run)
        time.sleep(0.1)
    assert len(chunks) == 2, "two chunks did not reach the object store: " + first.logs().decode()[-3000:]
    first.kill()
    code, _, err1 = _finish(first)
    assert code == 137, err1[-3000:]
    assert len(_objects(s3_server, run)) == 2

    pod2 = _out_dir(tmp_path / "pod2")
    code, out, err = _finish(_start(engine, image, staged, {**args, "out": "/out/grown"}, _env(s3_server, run), pod2))
    assert code == 0, err[-4000:]
    assert "fetched 2 saved state file(s) from s3://" in err
    stats = json.loads(out.strip().splitlines()[-1])
    assert stats["reused_chunks"] == 2 and stats["rows"] == 40 * 3
    with open(os.path.join(pod2, "grown", "data.jsonl"), "rb") as a, \
            open(os.path.join(clean_dir, "grown", "data.jsonl"), "rb") as b:
        assert a.read() == b.read()
    assert _objects(s3_server, run) == []
