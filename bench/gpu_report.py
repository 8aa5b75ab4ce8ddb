"""The GPU check's report: HF vs CTranslate2 sampling, fine-tuning, peak memory, against the device's peak.

Reads what bench/gpu_check.sh ran (bench/sampling.py and bench/finetune.py JSON, the gpu
tests' result) and writes ``report.json`` and ``report.md`` beside them.

Achieved FLOP/s are estimates from the model size, not counted operations:

- training: 6 · parameters · tokens (forward 2, backward 4 per parameter and token),
  tokens = source + target tokens of the batches (real tokens, no padding);
- generation: 2 · parameters · tokens, tokens = each candidate's source (the encoder
  runs per candidate) + its output tokens (re-tokenized from the text).

For an encoder-decoder every token passes through only its own stack (about half the
parameters), and decoding re-reads cached states, so these over-count the work and the
utilization they give is an upper bound; for the project's 2M-parameter policy the GPU is
mostly idle anyway (launch overhead, not arithmetic, bounds it).

Peak figures: NVIDIA's datasheets, dense Tensor Core figures (the datasheets print bf16
*with* 2:4 sparsity; dense is half) and plain FP32 (non-tensor) figures, by device name.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

# name fragment -> (label, dense bf16 Tensor TFLOP/s, fp32 TFLOP/s, source). First match wins:
# more specific names first. T4 (Turing) has no bf16: its fp16 Tensor figure stands in.
PEAK_TFLOPS = [
    ("H200 NVL", "H200 NVL", 835.0, 60.0, "NVIDIA H200 datasheet: BF16 Tensor 1,671 TFLOPS with sparsity; FP32 60"),
    ("H200", "H200 SXM", 989.5, 67.0, "NVIDIA H200 datasheet: BF16 Tensor 1,979 TFLOPS with sparsity; FP32 67"),
    ("H100 PCIe", "H100 PCIe", 756.5, 51.0, "NVIDIA H100 datasheet: BF16 Tensor 1,513 TFLOPS with sparsity; FP32 51"),
    ("H100 NVL", "H100 NVL", 835.0, 60.0, "NVIDIA H100 datasheet: BF16 Tensor 1,671 TFLOPS with sparsity; FP32 60"),
    ("H100", "H100 SXM", 989.5, 67.0, "NVIDIA H100 datasheet: BF16 Tensor 1,979 TFLOPS with sparsity; FP32 67"),
    ("A100", "A100", 312.0, 19.5, "NVIDIA A100 datasheet: BF16 Tensor 312 TFLOPS (624 with sparsity); FP32 19.5"),
    ("L4", "L4", 121.0, 30.3, "NVIDIA L4 datasheet: BF16 Tensor 242 TFLOPS with sparsity; FP32 30.3"),
    ("T4", "T4", 65.0, 8.1, "NVIDIA T4 datasheet: no bf16; FP16 Tensor 65 TFLOPS (mixed precision); FP32 8.1"),
]


def device_peak(name: str) -> dict | None:
    """The peak figures of a device name (``torch.cuda.get_device_name``), or None when unknown."""
    for fragment, label, bf16, fp32, source in PEAK_TFLOPS:
        if fragment.lower() in (name or "").lower():
            return {"label": label, "bf16_tflops": bf16, "fp32_tflops": fp32, "source": source}
    return None


def _load(path: str) -> dict | None:
    if not path or not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def build(samplings: dict, finetunes: dict, tests: dict | None) -> dict:
    """The report from bench results keyed by model label (``{"shipped": {...}, "wide": {...}}``)."""
    first = next(iter([*samplings.values(), *finetunes.values()]), {}) or {}
    dev = first.get("machine", {}).get("device", {})
    peak = device_peak(dev.get("name", ""))
    report = {"device": dev, "peak": peak, "tests": tests, "sampling": {}, "finetune": {}, "notes": []}
    for label, sampling in samplings.items():
        params = sampling["parameters"]
        rows = {}
        for path, r in sampling["paths"].items():
            flops = 2.0 * params * r["tokens_per_s"]
            # HF generation runs the float32 weights; CTranslate2 its compute type (default: float32 too).
            fp = "fp32" if path != "ctranslate2" or sampling.get("compute_type") in ("default", "float32") else "bf16"
            row = {"candidates_per_s": r["candidates_per_s"], "tokens_per_s": r["tokens_per_s"],
                   "peak_memory_mb": r.get("peak_memory_mb"), "mean_chrf": r["mean_chrf"],
                   "achieved_tflops": flops / 1e12, "precision": fp}
            if peak:
                row["share_of_peak"] = flops / 1e12 / peak[f"{fp}_tflops"]
            rows[path] = row
        report["sampling"][label] = {
            "paths": rows, "speedups": {k: v for k, v in sampling.items() if k.startswith("speedup_")},
            "settings": {k: sampling.get(k) for k in ("sources", "num_samples", "temperature", "rounds",
                                                       "batch_sentences", "compute_type", "parameters", "policy")}}
    for label, finetune in finetunes.items():
        params = finetune["parameters"]
        rows = {}
        for path, r in finetune["paths"].items():
            flops = 6.0 * params * r["real_tokens_per_s"]
            fp = "bf16" if finetune.get("precision") in ("bf16", "fp16") else "fp32"
            row = {"tokens_per_s": r["real_tokens_per_s"], "peak_memory_mb": r.get("peak_memory_mb"),
                   "achieved_tflops": flops / 1e12, "precision": finetune.get("precision")}
            if peak:
                row["share_of_peak"] = flops / 1e12 / peak[f"{fp}_tflops"]
            rows[path] = row
        report["finetune"][label] = {
            "paths": rows, "speedups": {k: v for k, v in finetune.items() if k.startswith("speedup_")},
            "settings": {k: finetune.get(k) for k in ("rows", "batch_tokens", "steps_per_round", "rounds",
                                                       "precision", "parameters", "policy")}}
    if peak is None and dev.get("name") == "cpu":
        report["notes"].append("a CPU dry check: no peak figures (the table holds GPUs)")
    elif peak is None:
        report["notes"].append(f"no peak figures for device {dev.get('name')!r}: add it to PEAK_TFLOPS")
    return report


def markdown(report: dict) -> str:
    dev, peak = report["device"], report["peak"]
    lines = ["# GPU check", "",
             f"Device: **{dev.get('name', '?')}** ({dev.get('device', '?')}, capability {dev.get('capability', '?')}, "
             f"{dev.get('memory_gib', '?')} GiB)."]
    if peak:
        lines.append(f"Peak used: {peak['label']}: {peak['bf16_tflops']:g} TFLOP/s bf16 dense Tensor, "
                     f"{peak['fp32_tflops']:g} TFLOP/s FP32 ({peak['source']}).")
    t = report.get("tests") or {}
    lines += ["", f"GPU tests (`pytest -m gpu`): {t.get('summary', 'not run')}", ""]

    def pct(v):
        return f"{100 * v:.3f} %" if isinstance(v, (int, float)) else "–"

    for label, block in report["sampling"].items():
        s = block["settings"]
        lines += [f"## Sampling (Grow), {label} policy: HF vs CTranslate2", "",
                  f"{s['sources']} sources × {s['num_samples']} samples at T = {s['temperature']}, {s['rounds']} "
                  f"round(s), {s['parameters'] / 1e6:.2f} M parameters, CTranslate2 compute type "
                  f"{s['compute_type']}.", "",
                  "| path | candidates/s | tokens/s | est. TFLOP/s (2·P·tokens) | of peak | peak memory MiB | "
                  "sample chrF |", "|---|---|---|---|---|---|---|"]
        for path, r in block["paths"].items():
            lines.append(f"| {path} | {r['candidates_per_s']:.1f} | {r['tokens_per_s']:.0f} | "
                         f"{r['achieved_tflops']:.4f} | {pct(r.get('share_of_peak'))} ({r['precision']}) | "
                         f"{r.get('peak_memory_mb') or '–'} | {r['mean_chrf']:.4f} |")
        lines += [""] + [f"- {k}: {v}×" for k, v in block["speedups"].items()] + [""]
    for label, block in report["finetune"].items():
        s = block["settings"]
        lines += [f"## Fine-tuning (Improve), {label} policy", "",
                  f"{s['rows']} pairs, {s['batch_tokens']} tokens per batch, {s['steps_per_round']} steps × "
                  f"{s['rounds']} round(s), precision {s['precision']}, {s['parameters'] / 1e6:.2f} M parameters.", "",
                  "| path | real tokens/s | est. TFLOP/s (6·P·tokens) | of peak | peak memory MiB |",
                  "|---|---|---|---|---|"]
        for path, r in block["paths"].items():
            lines.append(f"| {path} | {r['tokens_per_s']:.0f} | {r['achieved_tflops']:.4f} | "
                         f"{pct(r.get('share_of_peak'))} | {r.get('peak_memory_mb') or '–'} |")
        lines += [""] + [f"- {k}: {v}×" for k, v in block["speedups"].items()] + [""]
    lines += ["FLOP/s are estimates from the parameter count (see bench/gpu_report.py), an upper bound for an "
              "encoder-decoder; the shares of peak use the bf16 figure for bf16/fp16 work and FP32 for fp32 work. "
              "Sampling peak memory is the larger of torch's peak allocation and the device-wide use after the "
              "path ran (CTranslate2 allocates outside torch)."]
    lines += [f"- {n}" for n in report["notes"]]
    return "\n".join(lines) + "\n"


def _labelled(items: list[str]) -> dict:
    out = {}
    for item in items:
        label, _, path = item.partition("=")
        data = _load(path)
        if data is not None:
            out[label] = data
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sampling", action="append", default=[], metavar="LABEL=JSON",
                    help="a bench/sampling.py --out file, labelled by its policy (repeatable)")
    ap.add_argument("--finetune", action="append", default=[], metavar="LABEL=JSON",
                    help="a bench/finetune.py --out file, labelled by its policy (repeatable)")
    ap.add_argument("--tests-summary", default="", help="the gpu tests' pytest summary line")
    ap.add_argument("--tests-rc", type=int, default=None, help="the gpu tests' exit code")
    ap.add_argument("--out-dir", required=True)
    args = ap.parse_args(argv)
    tests = None
    if args.tests_rc is not None:
        tests = {"rc": args.tests_rc, "summary": args.tests_summary or f"exit code {args.tests_rc}"}
    report = build(_labelled(args.sampling), _labelled(args.finetune), tests)
    os.makedirs(args.out_dir, exist_ok=True)
    with open(os.path.join(args.out_dir, "report.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2, sort_keys=True)
        f.write("\n")
    text = markdown(report)
    with open(os.path.join(args.out_dir, "report.md"), "w", encoding="utf-8") as f:
        f.write(text)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
