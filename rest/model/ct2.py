"""What the two CTranslate2 paths share: seq2seq (``Translator``, :mod:`rest.model.backends`) and
causal (``Generator``, :mod:`rest.model.causal`).

A model held in memory is converted once per distinct set of weights (a fingerprint of its
parameters) and the last few conversions are kept; CTranslate2 seeds a runner's sampling
when its worker starts, so a seeded runner is a fresh one, while an unseeded one (greedy,
beam) is reused. Each path keeps its own :class:`Ct2Cache`.
"""
from __future__ import annotations

import atexit
import hashlib
import logging
import os
import shutil
import tempfile
import time
import weakref
from collections import OrderedDict
from typing import Callable

import torch

from rest.model.device import ct2_device, model_device

_FINGERPRINTS: dict = {}  # id(model) -> (weak reference, cheap key, weights hash)


def weights_fingerprint(model) -> str:
    """Hash of the model's parameters and config: a changed model gets a fresh conversion.

    Hashing reads every weight (from the GPU too); while the same model object's tensors
    are unchanged (same storage, same in-place version counters, same config) the last
    hash is reused, so a large policy is not hashed again for every batch of sources.
    """
    state = model.state_dict()
    config = model.config.to_json_string()
    quick = (config, tuple((name, t.data_ptr(), t._version) for name, t in state.items()))
    cached = _FINGERPRINTS.get(id(model))
    if cached is not None and cached[0]() is model and cached[1] == quick:
        return cached[2]
    h = hashlib.sha256(config.encode())
    for name, t in state.items():
        h.update(name.encode())
        h.update(t.detach().contiguous().cpu().numpy().tobytes())
    digest = h.hexdigest()[:20]
    _FINGERPRINTS[id(model)] = (weakref.ref(model), quick, digest)
    return digest


def ct2_search(mode: str, num_return: int, temperature: float, top_k: int, beam_size: int) -> dict:
    """CTranslate2's decoding settings of a ``mode`` (sample, beam or greedy), for Translator and Generator."""
    if mode == "sample":
        return dict(beam_size=1, sampling_topk=top_k or 0, sampling_temperature=temperature,
                    num_hypotheses=num_return)
    if mode == "beam":
        return dict(beam_size=beam_size, num_hypotheses=num_return)
    return dict(beam_size=1, num_hypotheses=1)


class Ct2Cache:
    """Converted model directories by weights fingerprint (the last ``keep``) and the reusable runner."""

    def __init__(self, prefix: str, what: str, logger: logging.Logger, keep: int = 2):
        self.prefix, self.what, self.log, self.keep = prefix, what, logger, keep
        self.dirs: "OrderedDict[str, str]" = OrderedDict()  # weights fingerprint -> converted directory
        self.runners: dict = {}  # (directory, threads, device, index, compute type) -> the unseeded runner
        atexit.register(self.clear)

    def converted(self, model, convert: Callable[[str], None]) -> str:
        """The directory holding the conversion of ``model``'s current weights; ``convert(path)``
        writes one into an empty directory when there is none yet."""
        key = weights_fingerprint(model)
        if key in self.dirs:
            self.dirs.move_to_end(key)
            return self.dirs[key]
        t0 = time.time()
        path = tempfile.mkdtemp(prefix=self.prefix)
        try:
            convert(path)
        except BaseException:
            shutil.rmtree(path, ignore_errors=True)
            raise
        self.dirs[key] = path
        while len(self.dirs) > self.keep:
            shutil.rmtree(self.dirs.popitem(last=False)[1], ignore_errors=True)
        self.log.info("ctranslate2: converted %s in %.1f s", self.what, time.time() - t0)
        return path

    def runner(self, kind: str, path: str, model, threads: int = 0, seed: int | None = None,
               compute_type: str = "default"):
        """A ``ctranslate2.<kind>`` (Translator or Generator) for ``path`` on the model's device.

        CPU threads (``threads``, else torch's count) are set only on the CPU; ``compute_type``
        is CTranslate2's (default: the converted float32 weights as they are).
        """
        import ctranslate2

        device, index = ct2_device(model_device(model))
        n = (threads or torch.get_num_threads() or os.cpu_count() or 1) if device == "cpu" else 0
        where = dict(device=device, device_index=index, compute_type=compute_type, inter_threads=1,
                     intra_threads=n)
        if device == "cpu" and compute_type == "default":
            where = dict(device="cpu", inter_threads=1, intra_threads=n)  # CTranslate2's own defaults for the rest
        cls = getattr(ctranslate2, kind)
        if seed is not None:
            ctranslate2.set_random_seed(seed % 2**32)  # its seed is an unsigned 32-bit integer
            return cls(path, **where)
        key = (path, n, device, index, compute_type)
        if key not in self.runners:
            self.runners.clear()
            self.runners[key] = cls(path, **where)
        return self.runners[key]

    def clear(self) -> None:
        """Drop the runners and delete every converted directory (at exit)."""
        self.runners.clear()
        for path in self.dirs.values():
            shutil.rmtree(path, ignore_errors=True)
        self.dirs.clear()
