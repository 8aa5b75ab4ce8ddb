"""Where one training process computes: device, mixed precision, and its share of each global batch.

``rest.model.train.train_nll`` (the one training loop) takes a :class:`TrainRuntime`; one
process on the CPU in fp32 is the default. ``rest.model.distributed`` starts several
processes and gives each its rank. The runtime lives apart from both so that neither
imports the other's caller (train -> runtime <- distributed -> train).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

from rest.model.device import Amp, autocast, is_cuda


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
