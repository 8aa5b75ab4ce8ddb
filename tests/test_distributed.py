"""Data-parallel fine-tuning: 2 CPU processes on gloo follow one process's loss curve.

``rest.model.distributed`` splits every global batch (the batches ``train_nll`` builds
from ``batch_tokens``) across processes and re-weights each process's loss by its share
of the batch's target tokens, so the summed gradient is the global batch's gradient. With
dropout 0, 2 processes and 1 process see the same batches and should take the same steps;
they differ only by float rounding (each process pads its slice to its own longest pair,
and the gradient is summed in another order).

Tolerance: rtol 1e-4 on every step's loss over 10 steps (measured here: max relative
difference ~1e-7), and atol 1e-4 on every weight after the 10 AdamW steps.
"""
from __future__ import annotations

import time

import pytest
import torch

from rest.model.device import Amp, DeviceError
from rest.model.distributed import TrainRuntime, plan, train_parallel
from rest.model.policy import load_policy
from rest.model.train import TrainSpec
from tests.conftest import bundled_rows

STEPS = 10
LOSS_RTOL = 1e-4
WEIGHT_ATOL = 1e-4


def _train(policy: str, processes: int):
    model, tok = load_policy(policy)
    rows = [{"source": de, "target": en} for _, de, en in bundled_rows("train", 160)]
    valid = [{"source": de, "target": en} for _, de, en in bundled_rows("valid", 2)]
    calls = []

    def rising_reward(sources, hyps, refs):  # every check "improves": the last step's weights are kept
        calls.append(1)
        return [float(len(calls))] * len(hyps)

    spec = TrainSpec(learning_rate=3e-3, warmup_steps=0, batch_tokens=700, max_steps=STEPS, eval_every=STEPS,
                     checkpoint_every=1000, seed=7, label=f"ddp-{processes}", valid_backend="hf")
    threads = torch.get_num_threads()
    try:
        result = train_parallel(model, tok, rows, valid, spec, rising_reward, device=torch.device("cpu"), amp=Amp(),
                                processes=processes, policy_dir=policy, threads=1)
    finally:
        torch.set_num_threads(threads)
    return result, model


def test_two_gloo_processes_follow_the_single_process_loss_curve(tiny_policy):
    t0 = time.time()
    one, m1 = _train(tiny_policy, 1)
    two, m2 = _train(tiny_policy, 2)
    assert one.steps == two.steps == STEPS
    assert len(one.step_losses) == len(two.step_losses) == STEPS
    # The curve moves (training happened), and the two runs agree step by step.
    assert one.step_losses[-1] < one.step_losses[0]
    for k, (a, b) in enumerate(zip(one.step_losses, two.step_losses)):
        assert b == pytest.approx(a, rel=LOSS_RTOL), f"step {k + 1}: {a} (1 process) vs {b} (2 processes)"
    assert one.best_step == two.best_step == STEPS
    for (name, p1), p2 in zip(m1.state_dict().items(), m2.state_dict().values()):
        assert torch.allclose(p1, p2, atol=WEIGHT_ATOL, rtol=0), name
    # The same number of tokens went through both: the global batch did not change.
    assert one.tokens_per_s > 0 and two.tokens_per_s > 0
    assert time.time() - t0 < 120


def test_a_slice_per_process_and_the_loss_reweighted():
    rt = [TrainRuntime(rank=r, world=3) for r in range(3)]
    batch = [5, 6, 7, 8, 9, 10, 11]
    parts = [r.shard(batch) for r in rt]
    assert [p for p, _ in parts] == [[5, 6], [7, 8], [9, 10, 11]]  # contiguous, covering the batch once
    assert all(real for _, real in parts)
    # Fewer sentences than processes: the one left without runs a sentence at zero weight.
    assert TrainRuntime(rank=0, world=2).shard([4]) == ([4], False)
    assert TrainRuntime(rank=1, world=2).shard([4]) == ([4], True)
    loss = torch.tensor(2.0)
    assert float(TrainRuntime(rank=0, world=2).global_loss(loss, 30, 100)) == pytest.approx(2.0 * 2 * 30 / 100)
    assert float(TrainRuntime(rank=1, world=2).global_loss(loss, 10, 100, real=False)) == 0.0
    assert TrainRuntime().shard(batch) == (batch, True)


def test_process_count_from_the_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    device, amp, n = plan("auto", "auto", "auto")
    assert (device.type, amp.name, n) == ("cpu", "fp32", 1)  # auto on a CPU: one process, fp32
    assert plan("cpu", "auto", "2")[2] == 2                 # asked for: gloo processes on the CPU
    with pytest.raises(DeviceError, match="finetune.device is 'cuda'.*set finetune.device=auto or cpu"):
        plan("cuda", "auto", "auto")
    with pytest.raises(DeviceError, match="fp16 training needs a CUDA GPU"):
        plan("cpu", "fp16", "auto")


def test_a_worker_that_cannot_start_fails_the_step_at_once(tiny_policy):
    """A worker's own error (here: no policy where it looks) ends the step; rank 0 does not wait for it."""
    from rest.model.policy import PolicyError  # noqa: F401  (the worker's error type, raised in its process)

    model, tok = load_policy(tiny_policy)
    rows = [{"source": de, "target": en} for _, de, en in bundled_rows("train", 20)]
    spec = TrainSpec(learning_rate=1e-3, warmup_steps=0, batch_tokens=700, max_steps=2, eval_every=0, seed=1)
    t0 = time.time()
    threads = torch.get_num_threads()
    try:
        with pytest.raises(Exception, match="policy directory not found"):
            train_parallel(model, tok, rows, rows[:1], spec, lambda s, h, r: [0.0] * len(h),
                           device=torch.device("cpu"), amp=Amp(), processes=2, policy_dir="/nonexistent/policy",
                           threads=1)
    finally:
        torch.set_num_threads(threads)
    assert time.time() - t0 < 120
