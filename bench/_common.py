"""Shared helpers of the bench scripts: the machine description, default paths, timing."""
from __future__ import annotations

import functools
import json
import os
import platform
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # run as `python bench/x.py` from anywhere
    sys.path.insert(0, ROOT)

DATA_DIR = os.path.join(ROOT, "data", "libreoffice-de-en")
# The shipped BC policy: every bench figure in BENCHMARKS.md is measured on it unless its
# command names another --policy (no paths outside the repository).
SHIPPED_POLICY = os.path.join(ROOT, "models", "bc-libreoffice-de-en")


def default_policy() -> str:
    return SHIPPED_POLICY


def machine() -> dict:
    """nproc, CPU model, RAM, load, torch version and threads: printed beside every figure."""
    import torch

    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    mem_gib = 0.0
    try:
        with open("/proc/meminfo") as f:
            kb = next(int(line.split()[1]) for line in f if line.startswith("MemTotal"))
            mem_gib = round(kb / 2**20, 1)
    except (OSError, StopIteration):
        pass
    import transformers

    return {"nproc": os.cpu_count(), "cpu": cpu or platform.processor(), "ram_gib": mem_gib,
            "python": platform.python_version(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "transformers": transformers.__version__, "load_avg_1min_at_start": load_avg()}


def load_avg() -> float:
    """The 1-minute load average now (-1 where the OS does not say): other jobs on the machine."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return -1.0


def read_tsv(path: str, limit: int = 0, src: str = "de", tgt: str = "en") -> list[dict]:
    """Rows of a bundled TSV as {"id", "source", "target"} (first ``limit`` rows; 0 = all)."""
    import csv

    rows = []
    with open(path, encoding="utf-8", newline="") as f:
        for k, r in enumerate(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)):
            rows.append({"id": r.get("id") or str(k), "source": r[src], "target": r[tgt]})
            if limit and len(rows) >= limit:
                break
    return rows


class Timer:
    """Wall and CPU seconds of a block."""

    def __enter__(self):
        self.wall0, self.cpu0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.wall0
        self.cpu = time.process_time() - self.cpu0


def staged(row: dict, name: str, record: str, fn, reuse: bool = False):
    """Run ``fn`` as stage ``name``, adding ``name_cpu_s``/``name_wall_s`` to ``row``; return its result.

    The result and the times are kept in ``record`` (JSON); with ``reuse`` an existing record
    is loaded instead of running again, so an interrupted benchmark continues where it
    stopped and still reports the figures measured when each stage ran.
    """
    if reuse and os.path.exists(record):
        with open(record, encoding="utf-8") as f:
            saved = json.load(f)
        row.update(saved.get("times", {}))
        return saved["result"]
    with Timer() as t:
        result = fn()
    times = {f"{name}_cpu_s": round(t.cpu, 1), f"{name}_wall_s": round(t.wall, 1)}
    row.update(times)
    os.makedirs(os.path.dirname(os.path.abspath(record)), exist_ok=True)
    tmp = record + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"result": result, "times": times}, f, default=str)
    os.replace(tmp, record)
    return result


def emit(result: dict, out: str | None) -> None:
    """Print the result as JSON (and write it to ``out``)."""
    text = json.dumps(result, indent=2, sort_keys=True)
    print(text)
    if out:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out, "w", encoding="utf-8") as f:
            f.write(text + "\n")


def compared_steps(summary: dict) -> tuple[dict, dict, dict]:
    """A run summary's BC step, last ReST step (``verdict.last_step``) and control step; {} for one it lacks."""
    steps = summary.get("steps", [])
    last = (summary.get("verdict") or {}).get("last_step") or {}
    bc = next((r for r in steps if not r.get("control") and r["g"] == 0), {})
    rest = next((r for r in steps if not r.get("control") and r["g"] == last.get("g") and r["i"] == last.get("i")), {})
    ctrl = next((r for r in steps if r.get("control")), {})
    return bc, rest, ctrl


def evaluated_translations(summary: dict, which: str) -> list[dict] | None:
    """The test translations of a run's BC (``which="bc"``) or last ReST step (``"rest"``), from its
    evaluation's output (the step row's ``eval_path``); None where the run's files are gone."""
    from rest.services.files import read_jsonl

    bc, rest, _ = compared_steps(summary)
    step = bc if which == "bc" else rest
    path = os.path.join(step.get("eval_path") or "", "translations.jsonl")
    return list(read_jsonl(path)) if step and os.path.exists(path) else None


@functools.lru_cache(maxsize=1)
def _run_local_cli():
    """pipeline.py as a module, loaded once and by path: `pipeline` may name bench/pipeline.py (the
    overhead bench) on this sys.path."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("rest_pipeline_cli", os.path.join(ROOT, "pipeline.py"))
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    return cli


def check_run_local_args(args: list[str]) -> None:
    """Parse ``args`` as ``python pipeline.py run-local`` would, before a bench script clears an output
    directory or spends hours: a flag run-local does not take (say ``--report-only`` after ``--``) stops
    here with run-local's own message instead of failing every arm."""
    import contextlib
    import io

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            _run_local_cli().build_parser().parse_args(["run-local", *args])
    except SystemExit as e:
        if e.code:
            raise SystemExit(f"these run-local flags do not parse: {' '.join(args)}\n"
                             + err.getvalue().strip().splitlines()[-1]) from None
