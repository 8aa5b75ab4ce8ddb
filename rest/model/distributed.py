"""Data-parallel NLL training: one process per device, the same global batch as one process.

``rest.model.train.train_nll`` is the one training loop; it takes a :class:`TrainRuntime`
that says where it computes (device, mixed precision) and, with more than one process,
which share of every batch is this process's. Every process builds the same global
batches (same data, same seeded order), takes its contiguous slice of each, and
``DistributedDataParallel`` sums the gradients. Each process scales its loss so that the
summed gradient is the gradient of the *global* batch's token-mean NLL, whatever the
split: a run on 1, 2 or 8 devices follows the same loss curve (up to float rounding; with
dropout the masks differ, as any data-parallel run's do). tests/test_distributed.py checks
this with 2 CPU processes on the gloo backend.

The calling process is rank 0: it holds the reward functions, runs the validation checks
and writes checkpoints; it starts ranks 1..N-1 with ``torch.multiprocessing`` (spawn),
which load the same policy directory and follow rank 0's stop decisions. A rendezvous
file in a temporary directory sets the group up (no ports, no environment variables).
"""
from __future__ import annotations

import contextlib
import datetime
import logging
import os
import shutil
import tempfile

from rest.model.device import Amp, amp_for, is_cuda, resolve
from rest.model.runtime import TrainRuntime
from rest.model.train import checkpoint_store, fetch_checkpoint, train_nll

log = logging.getLogger(__name__)

# How long a collective may wait for the other processes: rank 0 validates (greedy decoding
# of the validation rows) while the others wait at the next step's gradient all-reduce.
COLLECTIVE_TIMEOUT = datetime.timedelta(minutes=30)
READY_TIMEOUT_S = 600.0  # workers importing torch and loading the policy


def plan(device_setting: str = "auto", precision: str = "auto", processes: str = "auto",
         where: str = "finetune") -> tuple[object, Amp, int]:
    """(device of rank 0, mixed precision, number of processes) for a training step's settings.

    ``processes=auto``: one per visible CUDA device when the step computes on the GPU
    (``device`` auto or cuda), else 1. A step pinned to one device (``cuda:N``) runs one.
    """
    import torch

    device = resolve(device_setting, f"{where}.device")
    amp = amp_for(device, precision, f"{where}.precision")
    pinned = ":" in device_setting
    if processes == "auto":
        n = torch.cuda.device_count() if is_cuda(device) and not pinned else 1
    else:
        n = int(processes)
    if n > 1 and is_cuda(device):
        if pinned:
            raise ValueError(f"{where}.device is {device_setting!r} (one device) but {where}.processes is {n}; "
                             f"use {where}.device=cuda or auto to spread {n} processes over the GPUs")
        visible = torch.cuda.device_count()
        if n > visible:
            raise ValueError(f"{where}.processes is {n} but only {visible} CUDA device(s) are visible; "
                             f"use {where}.processes=auto or at most {visible}")
    return device, amp, max(1, n)


def train_parallel(model, tokenizer, rows, valid_rows, spec, reward_fn, *, device, amp: Amp, processes: int,
                   policy_dir: str = "", trust_remote_code: bool = False, threads: int = 0,
                   checkpoint_dir: str | None = None, weights=None, fingerprint: str = "", true_fn=None,
                   resume_uri: str | None = None):
    """``train_nll`` on ``processes`` processes (this one is rank 0); returns rank 0's TrainResult.

    With one process it is ``train_nll`` on ``device`` with ``amp``. With more, ranks 1..N-1
    load ``policy_dir`` (the policy ``model`` was loaded from) and train in step with this
    process; ``model`` ends with the trained (best) weights, as with one process.
    ``resume_uri``: the run's resume root in the object store (see ``train_nll``).
    """
    if processes <= 1:
        return train_nll(model, tokenizer, rows, valid_rows, spec, reward_fn, checkpoint_dir=checkpoint_dir,
                         weights=weights, fingerprint=fingerprint, true_fn=true_fn,
                         runtime=TrainRuntime(device=device, amp=amp), resume_uri=resume_uri)
    if not policy_dir:
        raise ValueError("data-parallel training needs the policy directory the other processes load")
    import torch
    import torch.distributed as dist
    import torch.multiprocessing as mp

    if resume_uri:
        # Every rank reads the checkpoint from the local disk: fetch the uploaded one (a fresh
        # pod) before the other ranks start, so none of them races the download.
        fetch_checkpoint(checkpoint_store(checkpoint_dir, resume_uri, fingerprint, spec.label), fingerprint,
                         spec.label)
    backend = "nccl" if is_cuda(device) else "gloo"
    per_process = _threads_per_process(threads, processes) if not is_cuda(device) else 0
    rendezvous = tempfile.mkdtemp(prefix="rest-ddp-")
    init_method = "file://" + os.path.join(rendezvous, "init")
    settings = {"backend": backend, "init_method": init_method, "world": processes, "cuda": is_cuda(device),
                "amp": amp, "threads": per_process, "rendezvous": rendezvous}
    log.info("%s: data-parallel on %d processes (%s, %s), global batch of %d tokens", spec.label, processes,
             backend, amp.name, spec.batch_tokens)
    # Rank 0's tokenizer itself (it carries the run's languages and source prefix, so every process
    # encodes the pairs alike) and generation config; the weights come from the directory and
    # DDP then broadcasts rank 0's.
    ctx = mp.spawn(_worker, args=(settings, policy_dir, trust_remote_code, tokenizer,
                                  getattr(model, "generation_config", None), list(rows), spec, checkpoint_dir,
                                  None if weights is None else list(weights), fingerprint),
                   nprocs=processes - 1, join=False)
    try:
        if per_process:
            torch.set_num_threads(per_process)
        if is_cuda(device):
            torch.cuda.set_device(device)
        _wait_ready(ctx, rendezvous, processes - 1)
        dist.init_process_group(backend, init_method=init_method, world_size=processes, rank=0,
                                timeout=COLLECTIVE_TIMEOUT)
        try:
            result = train_nll(model, tokenizer, rows, valid_rows, spec, reward_fn, checkpoint_dir=checkpoint_dir,
                               weights=weights, fingerprint=fingerprint, true_fn=true_fn,
                               runtime=TrainRuntime(device=device, amp=amp, rank=0, world=processes),
                               resume_uri=resume_uri)
        finally:
            dist.destroy_process_group()
        while not ctx.join():
            pass
        return result
    except BaseException:
        # A worker's own error says more than rank 0's broken collective: raise that one.
        with contextlib.suppress(Exception):
            ctx.join(timeout=5)
        for p in ctx.processes:
            if p.is_alive():
                p.terminate()
        raise
    finally:
        shutil.rmtree(rendezvous, ignore_errors=True)


def _wait_ready(ctx, rendezvous: str, workers: int, timeout_s: float = READY_TIMEOUT_S) -> None:
    """Wait until every worker has loaded the policy, before the group forms.

    A worker that fails while starting (an import error, a policy it cannot load, no GPU)
    would otherwise leave rank 0 waiting for it at the rendezvous until the collective
    timeout; here its own error is raised as soon as it exits.
    """
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        if all(os.path.exists(os.path.join(rendezvous, f"ready-{r}")) for r in range(1, workers + 1)):
            return
        for k, p in enumerate(ctx.processes):
            if not p.is_alive() and not os.path.exists(os.path.join(rendezvous, f"ready-{k + 1}")):
                ctx.join(timeout=1)  # raises the worker's own error (or its exit code / signal)
                raise RuntimeError(f"data-parallel worker rank {k + 1} exited (code {p.exitcode}) before it was ready")
        if time.monotonic() > deadline:
            raise RuntimeError(f"data-parallel workers not ready after {timeout_s:.0f} s")
        time.sleep(0.05)


def _threads_per_process(threads: int, processes: int) -> int:
    total = threads or os.cpu_count() or 1
    return max(1, total // processes)


def _worker(index: int, settings: dict, policy_dir: str, trust_remote_code: bool, tokenizer, generation_config,
            rows, spec, checkpoint_dir, weights, fingerprint) -> None:
    """Rank ``index + 1``: load the policy, join the group, train in step with rank 0, discard the result."""
    import torch
    import torch.distributed as dist

    from rest.model.policy import load_policy

    rank = index + 1
    if settings["threads"]:
        torch.set_num_threads(settings["threads"])
    device = torch.device("cuda", rank) if settings["cuda"] else torch.device("cpu")
    if settings["cuda"]:
        torch.cuda.set_device(device)
    model, _ = load_policy(policy_dir, trust_remote_code=trust_remote_code)
    if generation_config is not None:
        model.generation_config = generation_config  # the decoder start token, as rank 0 has it
    open(os.path.join(settings["rendezvous"], f"ready-{rank}"), "w").close()  # rank 0 waits for this
    dist.init_process_group(settings["backend"], init_method=settings["init_method"], world_size=settings["world"],
                            rank=rank, timeout=COLLECTIVE_TIMEOUT)
    try:
        # No validation rows, no reward: rank 0 validates and decides; this process follows.
        train_nll(model, tokenizer, rows, [], spec, None, checkpoint_dir=checkpoint_dir, weights=weights,
                  fingerprint=fingerprint, runtime=TrainRuntime(device=device, amp=settings["amp"], rank=rank,
                                                                world=settings["world"]))
    finally:
        dist.destroy_process_group()
