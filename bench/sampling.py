"""Grow-step sampling speed: the project's CTranslate2 path versus batched HF ``generate``.

All paths run in ONE process on the same model, the same sources and the same thread
count, and the rounds are interleaved (per_sentence, hf_batched, hf, ctranslate2,
per_sentence, ...), so a background load that comes and goes hits every path alike:

- hf_batched (the baseline, what users write): ``model.generate(do_sample=True,
  num_return_sequences=N)`` on fixed-size batches of the sources in file order,
  ``tokenizer(..., padding=True)``, as many sequences per call as the project's path;
- hf: ``rest.model.policy.generate``, the same HF ``generate`` on length-bucketed batches;
- ctranslate2: ``rest.model.backends.generate`` (the default ``sample.backend``), same
  weights, same bucketing;
- per_sentence (secondary): one ``model.generate`` call per sentence, no batching.

Reported per path: candidates per second over all rounds, and the mean sentence chrF of the
samples against the references (with its standard error) to show that a faster path
samples as well. The headline ratio is ctranslate2 vs hf_batched.

    python bench/sampling.py --sources 100 --num-samples 8 --rounds 2
    python bench/sampling.py --device cuda --paths hf_batched,hf,ctranslate2   # on a GPU

With ``--device cuda`` every path runs on the GPU (CTranslate2 with ``--compute-type``), and
each path also reports the tokens it generated and the device memory it held, for the
FLOP/s estimate of bench/gpu_report.py.
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import DATA_DIR, Timer, default_policy, emit, load_avg, machine, read_tsv  # noqa: E402

import torch  # noqa: E402

PATHS = ("per_sentence", "hf_batched", "hf", "ctranslate2")


def _max_new(n_tokens: int, ratio: float) -> int:
    return int(n_tokens * ratio) + 10  # the length limit rest.model.policy.generate uses


def per_sentence_generate(model, tokenizer, sources, num_return, temperature, max_length_ratio, seed):
    """One ``model.generate`` call per sentence, no batching."""
    from rest.model.policy import decoder_start_id

    out = []
    with torch.no_grad():
        for k, s in enumerate(sources):
            enc = tokenizer(s, return_tensors="pt").to(model.device)
            torch.manual_seed(seed + k)
            ids = model.generate(**enc, do_sample=True, temperature=temperature, top_k=None, top_p=None,
                                 num_beams=1, num_return_sequences=num_return,
                                 max_new_tokens=_max_new(enc["input_ids"].shape[1], max_length_ratio),
                                 max_length=None, decoder_start_token_id=decoder_start_id(model))
            out.append([t.strip() for t in tokenizer.batch_decode(ids, skip_special_tokens=True)])
    return out


def batched_generate(model, tokenizer, sources, num_return, temperature, max_length_ratio, seed,
                     batch_sequences):
    """Plain batched HF sampling: consecutive sources, padded per batch, ``batch_sequences``
    output sequences per ``generate`` call (``batch_sequences // num_return`` sources)."""
    from rest.model.policy import decoder_start_id

    per_call = max(1, batch_sequences // num_return)
    out = []
    model.eval()
    with torch.no_grad():
        for k in range(0, len(sources), per_call):
            enc = tokenizer(list(sources[k:k + per_call]), return_tensors="pt", padding=True).to(model.device)
            torch.manual_seed(seed + k)
            ids = model.generate(**enc, do_sample=True, temperature=temperature, top_k=None, top_p=None,
                                 num_beams=1, num_return_sequences=num_return,
                                 max_new_tokens=_max_new(enc["input_ids"].shape[1], max_length_ratio),
                                 max_length=None, decoder_start_token_id=decoder_start_id(model))
            texts = tokenizer.batch_decode(ids, skip_special_tokens=True)
            out.extend([t.strip() for t in texts[j * num_return:(j + 1) * num_return]]
                       for j in range(len(texts) // num_return))
    return out


def sample_quality(outs, rows):
    """Mean and standard error (over sources) of the per-source mean sentence chrF of the samples."""
    from rest.rewards.metrics import chrf_reward

    per_source = []
    for cands, r in zip(outs, rows):
        scores = chrf_reward([r["source"]] * len(cands), cands, [r["target"]] * len(cands))
        per_source.append(sum(scores) / len(scores))
    mean = statistics.fmean(per_source)
    se = statistics.stdev(per_source) / math.sqrt(len(per_source)) if len(per_source) > 1 else 0.0
    lengths = [len(c.split()) for cs in outs for c in cs]
    return {"mean_chrf": round(mean, 4), "stderr": round(se, 4), "mean_words": round(statistics.fmean(lengths), 2)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policy", default=default_policy(), help="policy directory (default: %(default)s)")
    ap.add_argument("--sources-file", default=os.path.join(DATA_DIR, "train.tsv"))
    ap.add_argument("--sources", type=int, default=200, help="first N sources of the file")
    ap.add_argument("--num-samples", type=int, default=8)
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--max-length-ratio", type=float, default=2.0)
    ap.add_argument("--batch-sentences", type=int, default=0,
                    help="sequences per generate() call (0 = SampleConfig's default)")
    ap.add_argument("--threads", type=int, default=0, help="torch/ctranslate2 threads (0 = all cores)")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds per path")
    ap.add_argument("--paths", default=",".join(PATHS),
                    help="comma-separated, of: " + ", ".join(PATHS) + " (hf_batched and ctranslate2 are "
                         "needed for the headline ratio)")
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default: %(default)s)")
    ap.add_argument("--compute-type", default="default",
                    help="CTranslate2 compute type on the device (default: the float32 weights as converted)")
    ap.add_argument("--out", default="", help="also write the JSON result here")
    args = ap.parse_args(argv)

    from rest.config import SampleConfig
    from rest.model.backends import generate_with
    from rest.model.device import describe, is_cuda, place
    from rest.model.policy import load_policy

    info = machine()
    model, tokenizer = load_policy(args.policy)
    device = place(model, args.device, args.threads, "--device")  # CPU threads only on the CPU
    info["device"] = {"device": str(device), **describe(device)}
    info["torch_threads"] = torch.get_num_threads()
    cuda = is_cuda(device)
    rows = read_tsv(args.sources_file, args.sources)
    sources = [r["source"] for r in rows]
    batch = args.batch_sentences or SampleConfig().batch_sentences
    paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    unknown = set(paths) - set(PATHS)
    if unknown:
        ap.error(f"unknown paths {sorted(unknown)}; choose from {', '.join(PATHS)}")

    def run(path, seed, srcs=sources, n=args.num_samples, temperature=args.temperature):
        if path == "per_sentence":
            return per_sentence_generate(model, tokenizer, srcs, n, temperature, args.max_length_ratio, seed)
        if path == "hf_batched":
            return batched_generate(model, tokenizer, srcs, n, temperature, args.max_length_ratio, seed, batch)
        return generate_with(path, args.compute_type)(model, tokenizer, srcs, mode="sample", num_return=n,
                                                      temperature=temperature, batch_sentences=batch,
                                                      max_length_ratio=args.max_length_ratio, seed=seed)

    if "ctranslate2" in paths:  # convert once outside the timed rounds (a Grow step converts once too)
        from rest.model.backends import translator_for
        with Timer() as t:
            translator_for(model, tokenizer)
        convert_s = t.wall
    else:
        convert_s = 0.0
    for p in paths:  # warm-up on a few sources (first-call allocations), not timed
        run(p, 0, sources[:4], 2, 1.0)

    wall = {p: 0.0 for p in paths}
    cpu = {p: 0.0 for p in paths}
    peak = {p: 0.0 for p in paths}
    outs = {}
    for rnd in range(args.rounds):
        for p in paths:
            if cuda:
                torch.cuda.synchronize(device)
                torch.cuda.reset_peak_memory_stats(device)
            with Timer() as t:
                o = run(p, seed=1000 * rnd + 7)
                if cuda:
                    torch.cuda.synchronize(device)
            if cuda:  # torch's own peak, and the device-wide use (CTranslate2 allocates outside torch)
                free, total = torch.cuda.mem_get_info(device)
                peak[p] = max(peak[p], torch.cuda.max_memory_allocated(device) / 2**20, (total - free) / 2**20)
            assert len(o) == len(sources) and all(len(c) == args.num_samples for c in o), p
            wall[p] += t.wall
            cpu[p] += t.cpu
            outs.setdefault(p, []).append(o)
            print(f"round {rnd + 1} {p}: {len(sources) * args.num_samples / t.wall:.1f} candidates/s", flush=True)

    info["load_avg_1min_at_end"] = load_avg()
    n_cand = len(sources) * args.num_samples * args.rounds
    result = {"bench": "sampling", "machine": info, "policy": args.policy, "sources": len(sources),
              "num_samples": args.num_samples, "temperature": args.temperature, "rounds": args.rounds,
              "batch_sentences": batch, "ctranslate2_convert_s": round(convert_s, 2), "paths": {},
              "device": str(device), "compute_type": args.compute_type,
              "parameters": sum(p.numel() for p in model.parameters())}
    src_tokens = sum(len(x) for x in tokenizer(sources)["input_ids"])
    for p in paths:
        q = sample_quality([c for o in outs[p] for c in o], rows * args.rounds)
        # Tokens through the model per round: each candidate's source (encoder) and its own output (decoder).
        out_tokens = sum(len(x) for o in outs[p] for c in o for x in tokenizer(list(c))["input_ids"]) / args.rounds
        result["paths"][p] = {"candidates_per_s": round(n_cand / wall[p], 1), "wall_s": round(wall[p], 2),
                              "cpu_s": round(cpu[p], 2),
                              "tokens_per_s": round((src_tokens * args.num_samples + out_tokens) * args.rounds
                                                    / wall[p], 1), **q}
        if cuda:
            result["paths"][p]["peak_memory_mb"] = round(peak[p], 1)
    # Wall-time ratios, and ratios of this process's CPU seconds (less sensitive to other jobs
    # on a shared machine). Headline: ctranslate2 vs hf_batched.
    pairs = [("hf_batched", "ctranslate2"), ("hf", "ctranslate2"), ("hf_batched", "hf"),
             ("per_sentence", "hf_batched"), ("per_sentence", "ctranslate2")]
    for a, b in pairs:
        if a in paths and b in paths:
            result[f"speedup_{b}_vs_{a}"] = round(wall[a] / wall[b], 2)
            result[f"cpu_speedup_{b}_vs_{a}"] = round(cpu[a] / max(1e-9, cpu[b]), 2)
    emit(result, args.out)
    for p in paths:
        r = result["paths"][p]
        print(f"{p:>12}: {r['candidates_per_s']:8.1f} candidates/s   sample chrF {r['mean_chrf']:.4f} "
              f"± {r['stderr']:.4f}")
    for k, v in result.items():
        if "speedup_" in k:
            print(f"{k}: {v}x")
    return result


if __name__ == "__main__":
    main()
