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
from dataclasses import dataclass, field

from rest.model.device import Amp, amp_for, autocast, is_cuda, resolve

log = logging.getLogger(__name__)

# How long a collective may wait for the other processes: rank 0 validates (greedy decoding
# of the validation rows) while the others wait at the next step's gradient all-reduce.
COLLECTIVE_TIMEOUT = datetime.timedelta(minutes=30)
READY_TIMEOUT_S = 600.0  # workers importing torch and loading the policy


@dataclass
class TrainRuntime:
    """Where one training process computes and which share of each global batch is its own."""

    device: object = None                     # torch.device; None = the CPU
    amp: Amp = field(default_factory=Amp)
    rank: int = 0
    world: int = 1
    _scaler: object = None
    _ddp: object = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    # -- model --------------------------------------------------------------------------------
    def prepare(self, model):
        """Move ``model`` to the device; with several processes, the DDP wrapper to run forward through."""
        import torch

        if self.device is not None and is_cuda(self.device):
            model.to(self.device)
        if self.amp.scaler:
            self._scaler = torch.amp.GradScaler("cuda")
        if not self.distributed:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if is_cuda(self.device) else None
        # The construction broadcasts rank 0's weights, so every process starts from the same ones.
        self._ddp = DistributedDataParallel(model, device_ids=ids, forward_sync_buffers=False)
        return self._ddp

    def to_device(self, tensors):
        """A collated batch (tensors or None) on the device (unchanged on the CPU)."""
        if self.device is None or not is_cuda(self.device):
            return tensors
        return tuple(t.to(self.device, non_blocking=True) if t is not None else None for t in tensors)

    def autocast(self):
        return autocast(self.device, self.amp) if self.device is not None else contextlib.nullcontext()

    # -- batches ------------------------------------------------------------------------------
    def shard(self, batch: list[int]) -> tuple[list[int], bool]:
        """This process's contiguous slice of a global batch, and whether it is a real one.

        A batch with fewer sentences than processes leaves some with none: those run one
        sentence with zero weight, so that every process joins the gradient all-reduce.
        """
        if not self.distributed:
            return batch, True
        n, w = len(batch), self.world
        lo, hi = self.rank * n // w, (self.rank + 1) * n // w
        return (batch[lo:hi], True) if hi > lo else (batch[:1], False)

    def global_loss(self, loss, local_tokens: int, global_tokens: int, real: bool = True):
        """The loss to back-propagate: DDP averages gradients over processes, so each one's
        token-mean loss is re-weighted by its share of the global batch's target tokens."""
        if not self.distributed:
            return loss
        return loss * (self.world * local_tokens / max(1, global_tokens) if real else 0.0)

    def loss_value(self, loss) -> float:
        """The global batch's loss (the mean over its target tokens) as a float, on every process."""
        if not self.distributed:
            return float(loss.detach())
        import torch.distributed as dist

        t = loss.detach().float() / self.world
        dist.all_reduce(t)
        return float(t)

    # -- optimizer step -----------------------------------------------------------------------
    def backward_step(self, loss, model, opt, clip: float = 1.0) -> None:
        """Backward (loss-scaled for fp16), clip the gradient norm, step the optimizer."""
        import torch

        if self._scaler is None:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            opt.step()
            return
        self._scaler.scale(loss).backward()
        self._scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        self._scaler.step(opt)   # skipped when the scaled gradients overflowed
        self._scaler.update()

    def agree(self, stop: bool) -> bool:
        """Rank 0's stop decision (early stopping, time budget), taken by every process."""
        if not self.distributed:
            return stop
        import torch
        import torch.distributed as dist

        t = torch.tensor([1 if stop else 0], dtype=torch.int32,
                         device=self.device if is_cuda(self.device) else "cpu")
        dist.broadcast(t, src=0)
        return bool(t.item())

    # -- checkpoint extras --------------------------------------------------------------------
    def extra_state(self) -> dict:
        """What a resumable checkpoint needs beyond the CPU RNG: the GPU's RNG and the loss scaler."""
        import torch

        out = {}
        if self.device is not None and is_cuda(self.device):
            out["cuda_rng_state"] = torch.cuda.get_rng_state(self.device)
        if self._scaler is not None:
            out["grad_scaler"] = self._scaler.state_dict()
        return out

    def load_extra_state(self, saved: dict) -> None:
        import torch

        if saved.get("cuda_rng_state") is not None and self.device is not None and is_cuda(self.device):
            torch.cuda.set_rng_state(saved["cuda_rng_state"], self.device)
        if saved.get("grad_scaler") and self._scaler is not None:
            self._scaler.load_state_dict(saved["grad_scaler"])


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
    from rest.model.train import checkpoint_store, fetch_checkpoint, train_nll

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
    from rest.model.train import train_nll

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
