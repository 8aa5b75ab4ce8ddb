"""Where a step computes: the ``device`` / ``precision`` / ``compute_type`` settings, resolved.

Every step that computes (sample, score with a learned reward, finetune and the control,
evaluate, reward-model training, bootstrap) has a ``device`` setting: ``auto`` (a CUDA GPU
when torch sees one, else the CPU), ``cpu``, ``cuda`` (the first visible GPU) or
``cuda:N``. A pod given ``nvidia.com/gpu`` by the cluster config sees its GPUs, so
``auto`` turns into ``cuda`` there and stays ``cpu`` on a laptop: the default run on a CPU
computes exactly what it computed before these settings existed.

This module holds the rules (which strings are settings, what ``auto`` means, which
mixed precision a GPU gets, which CTranslate2 compute types a device has) and the
per-step measurements (peak memory, throughput). It imports torch only inside functions,
so ``rest.config`` can check a setting's spelling without loading torch.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import resource
import sys
import time
from dataclasses import dataclass

log = logging.getLogger(__name__)

DEVICE_HELP = ("Where this step computes: auto (a CUDA GPU when torch sees one, e.g. in a pod given "
               "nvidia.com/gpu, else the CPU), cpu, cuda (the first visible GPU) or cuda:N.")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# CTranslate2's compute types (ctranslate2.Translator(compute_type=...)). "default" keeps the
# converted weights' type: float32, the same numbers as the torch model.
COMPUTE_TYPES = ("default", "auto", "float32", "float16", "bfloat16", "int8", "int8_float32", "int8_float16",
                 "int8_bfloat16", "int16")
_DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:[0-9]+)?)$")


class DeviceError(ValueError):
    """A device setting cannot be served on this machine; the message says what to change."""


def check_setting(value: str, where: str) -> str | None:
    """The problem with a ``device`` setting's spelling, or None (no torch needed)."""
    if not isinstance(value, str) or not _DEVICE_RE.match(value):
        return f"is {value!r}; use auto, cpu, cuda or cuda:N (e.g. cuda:0)"
    return None


def check_processes(value: str) -> str | None:
    """The problem with a ``processes`` setting (``auto`` or a whole number >= 1), or None."""
    if value == "auto" or (value.isdigit() and int(value) >= 1):
        return None
    return f"is {value!r}; use auto (one process per visible GPU, 1 on the CPU) or a whole number >= 1"


def resolve(setting: str = "auto", where: str = "device"):
    """The ``torch.device`` a setting means on this machine; a clear error when it cannot be had."""
    import torch

    problem = check_setting(setting, where)
    if problem:
        raise DeviceError(f"{where} {problem}")
    if setting == "cpu":
        return torch.device("cpu")
    if setting == "auto":
        return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    if not torch.cuda.is_available():
        why = ("this torch build has no CUDA support (a CPU wheel: use the CUDA image, containers/Dockerfile.cuda)"
               if torch.version.cuda is None else "torch sees no CUDA device (no GPU given to this pod or machine, "
               "or its driver is missing: give the step nvidia.com/gpu in the cluster config)")
        raise DeviceError(f"{where} is {setting!r} but {why}; set {where}=auto or cpu to run on the CPU")
    index = int(setting.split(":")[1]) if ":" in setting else 0
    count = torch.cuda.device_count()
    if index >= count:
        raise DeviceError(f"{where} is {setting!r} but only {count} CUDA device(s) are visible "
                          f"(cuda:0..cuda:{count - 1}); pick one of those or use cuda")
    return torch.device("cuda", index)


def is_cuda(device) -> bool:
    return getattr(device, "type", str(device)) == "cuda"


def model_device(model):
    """The device a model's weights are on (the CPU for a model without parameters)."""
    for p in model.parameters():
        return p.device
    import torch

    return torch.device("cpu")


def host_copy(model):
    """``model`` itself when its weights are on the CPU, else a CPU copy (ties between weights kept).

    CTranslate2's converter reads weights through host pointers, so a model on a GPU is
    converted from a copy. Each parameter and buffer is copied to the CPU once, before the
    module tree is copied around them: the GPU never holds a second copy of the model.
    """
    import copy
    import itertools

    import torch

    if model_device(model).type == "cpu":
        return model
    memo = {}
    for t in itertools.chain(model.parameters(), model.buffers()):
        if id(t) not in memo:
            host = t.detach().to("cpu", copy=True)
            memo[id(t)] = torch.nn.Parameter(host, requires_grad=t.requires_grad) \
                if isinstance(t, torch.nn.Parameter) else host
    return copy.deepcopy(model, memo).eval()


def cpu_threads(device, threads: int) -> None:
    """torch CPU threads (``threads``; 0 = all cores), only when the step computes on the CPU.

    On a GPU the CPU only feeds it; the thread count is left to torch.
    """
    if not is_cuda(device):
        set_threads(threads)


def set_threads(threads: int) -> None:
    """Use ``threads`` CPU threads for torch (0 = all cores)."""
    import torch

    n = threads or os.cpu_count() or 1
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


def place(model, setting: str, threads: int = 0, where: str = "device"):
    """Resolve ``setting``, set CPU threads when on the CPU, move ``model`` there; returns the device."""
    device = resolve(setting, where)
    cpu_threads(device, threads)
    if model is not None and model_device(model) != device:
        model.to(device)
    if is_cuda(device):
        log.info("%s: %s (%s)", where, device, describe(device).get("name", "cuda"))
    return device


# -- mixed precision ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Amp:
    """Resolved mixed precision of a training loop: the autocast dtype (None = fp32) and loss scaling."""

    dtype: object = None      # torch.bfloat16 / torch.float16 / None
    scaler: bool = False      # fp16 needs a GradScaler; bf16 has fp32's range and does not
    name: str = "fp32"


def amp_for(device, precision: str = "auto", where: str = "precision") -> Amp:
    """``auto``: bf16 autocast on a GPU that has it, else fp16 with loss scaling; fp32 on the CPU."""
    import torch

    if precision not in PRECISIONS:
        raise DeviceError(f"{where} is {precision!r}; use one of {', '.join(PRECISIONS)}")
    cuda = is_cuda(device)
    if precision == "fp32" or (precision == "auto" and not cuda):
        return Amp()
    if precision == "fp16":
        if not cuda:
            raise DeviceError(f"{where} is fp16 but the step computes on the CPU; fp16 training needs a CUDA GPU "
                              "(use fp32 or bf16 on the CPU)")
        return Amp(torch.float16, True, "fp16")
    bf16_ok = (not cuda) or torch.cuda.is_bf16_supported()
    if precision == "bf16":
        if not bf16_ok:
            raise DeviceError(f"{where} is bf16 but {describe(device).get('name', 'this GPU')} has no bf16 support; "
                              "use fp16 (loss-scaled) or auto")
        return Amp(torch.bfloat16, False, "bf16")
    return Amp(torch.bfloat16, False, "bf16") if bf16_ok else Amp(torch.float16, True, "fp16")


def autocast(device, amp: Amp):
    """The autocast context of ``amp`` on ``device`` (a no-op for fp32)."""
    if amp.dtype is None:
        return contextlib.nullcontext()
    import torch

    return torch.autocast(device_type=getattr(device, "type", "cpu"), dtype=amp.dtype)


# -- CTranslate2 -------------------------------------------------------------------------------

def ct2_device(device) -> tuple[str, int]:
    """(CTranslate2 device name, device index) of a torch device."""
    if is_cuda(device):
        return "cuda", device.index or 0
    return "cpu", 0


def check_compute_type(compute_type: str, device, where: str = "compute_type") -> None:
    """Fail clearly when CTranslate2 cannot run ``compute_type`` on ``device``."""
    if compute_type in ("default", "auto"):
        return
    if compute_type not in COMPUTE_TYPES:
        raise DeviceError(f"{where} is {compute_type!r}; use one of {', '.join(COMPUTE_TYPES)}")
    try:
        import ctranslate2
    except ImportError:
        return  # the step falls back to Hugging Face generate(); nothing to check
    name, index = ct2_device(device)
    supported = ctranslate2.get_supported_compute_types(name, index)
    if compute_type not in supported:
        raise DeviceError(f"{where} is {compute_type!r} but CTranslate2 on {name} supports only "
                          f"{', '.join(sorted(supported))} (or default / auto)")


# -- measurements ------------------------------------------------------------------------------

def describe(device) -> dict:
    """Name, compute capability and memory of a CUDA device; ``{"name": "cpu"}`` for the CPU."""
    if not is_cuda(device):
        return {"name": "cpu"}
    import torch

    p = torch.cuda.get_device_properties(device)
    return {"name": p.name, "capability": f"{p.major}.{p.minor}", "memory_gib": round(p.total_memory / 2**30, 1),
            "multiprocessors": p.multi_processor_count}


def _max_rss_mb() -> float:
    """This process's peak resident memory in MiB (ru_maxrss is KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024


class Meter:
    """Peak memory and wall time of a block of work on one device.

    On a GPU: ``torch.cuda.max_memory_allocated`` (tensors torch allocated, reset at the
    start; CTranslate2's own allocations are not in it). On the CPU: the process's peak
    resident set (``ru_maxrss``), which counts everything the process ever held, loading
    included, and cannot be reset: a step runs in its own process on a cluster, so it is
    that step's peak.
    """

    def __init__(self, device):
        self.device = device
        self.wall_s = 0.0
        self.peak_memory_mb = 0.0
        self.memory_kind = "cuda_max_allocated" if is_cuda(device) else "cpu_max_rss"

    def start(self) -> "Meter":
        if is_cuda(self.device):
            import torch

            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        self._t0 = time.perf_counter()
        return self

    def stop(self) -> "Meter":
        if is_cuda(self.device):
            import torch

            torch.cuda.synchronize(self.device)
            self.peak_memory_mb = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            self.peak_memory_mb = _max_rss_mb()
        self.wall_s = time.perf_counter() - self._t0
        return self

    def elapsed(self) -> float:
        """Seconds since ``start``."""
        return time.perf_counter() - self._t0

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    def record(self, **throughput) -> dict:
        """The step's device figures for its stats / metadata: device, peak memory, throughputs."""
        out = {"device": str(self.device), "peak_memory_mb": round(self.peak_memory_mb, 1),
               "peak_memory_kind": self.memory_kind}
        out.update({k: float(v) for k, v in throughput.items()})
        log.info("%s: peak memory %.0f MiB (%s)%s", self.device, self.peak_memory_mb, self.memory_kind,
                 "".join(f", {k} {v:.1f}" for k, v in throughput.items()))
        return out
