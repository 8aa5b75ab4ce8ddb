"""Grow-step sampling speed: the project's path versus a straightforward per-sentence loop.

All paths run in ONE process on the same model, the same sources and the same thread
count, and the rounds are interleaved (baseline, hf, ctranslate2, baseline, ...), so a
background load that comes and goes hits every path alike. Reported per path: candidates
per second over all rounds, and the mean sentence chrF of the samples against the
references (with its standard error) to show that a faster path samples as well.

    python bench/sampling.py --sources 200 --num-samples 8
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import DATA_DIR, Timer, default_policy, emit, machine, read_tsv  # noqa: E402

import torch  # noqa: E402


def baseline_generate(model, tokenizer, sources, num_return, temperature, max_length_ratio, seed):
    """The straightforward way: one ``model.generate`` call per sentence, no batching."""
    from rest.policy import decoder_start_id

    out = []
    with torch.no_grad():
        for k, s in enumerate(sources):
            enc = tokenizer(s, return_tensors="pt")
            torch.manual_seed(seed + k)
            ids = model.generate(**enc, do_sample=True, temperature=temperature, top_k=None, top_p=None,
                                 num_beams=1, num_return_sequences=num_return,
                                 max_new_tokens=int(enc["input_ids"].shape[1] * max_length_ratio) + 10,
                                 max_length=None, decoder_start_token_id=decoder_start_id(model))
            out.append([t.strip() for t in tokenizer.batch_decode(ids, skip_special_tokens=True)])
    return out


def sample_quality(outs, rows):
    """Mean and standard error (over sources) of the per-source mean sentence chrF of the samples."""
    from rest.rewards import chrf_reward

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
    ap.add_argument("--paths", default="baseline,hf,ctranslate2",
                    help="comma-separated: baseline, hf (rest.policy.generate), ctranslate2 (rest.fast_generate)")
    ap.add_argument("--out", default="", help="also write the JSON result here")
    args = ap.parse_args(argv)

    from rest.config import SampleConfig
    from rest.fast_generate import generate_with
    from rest.policy import load_policy, set_threads

    set_threads(args.threads)
    info = machine()
    model, tokenizer = load_policy(args.policy)
    rows = read_tsv(args.sources_file, args.sources)
    sources = [r["source"] for r in rows]
    batch = args.batch_sentences or SampleConfig().batch_sentences
    paths = [p.strip() for p in args.paths.split(",") if p.strip()]

    def run(path, seed):
        if path == "baseline":
            return baseline_generate(model, tokenizer, sources, args.num_samples, args.temperature,
                                     args.max_length_ratio, seed)
        return generate_with(path)(model, tokenizer, sources, mode="sample", num_return=args.num_samples,
                                   temperature=args.temperature, batch_sentences=batch,
                                   max_length_ratio=args.max_length_ratio, seed=seed)

    if "ctranslate2" in paths:  # convert once outside the timed rounds (a Grow step converts once too)
        from rest.fast_generate import translator_for
        with Timer() as t:
            translator_for(model, tokenizer)
        convert_s = t.wall
    else:
        convert_s = 0.0
    # Warm-up on a few sources (first-call allocations), not timed.
    for p in paths:
        if p == "baseline":
            baseline_generate(model, tokenizer, sources[:2], 2, args.temperature, args.max_length_ratio, 0)
        else:
            generate_with(p)(model, tokenizer, sources[:4], mode="sample", num_return=2, temperature=1.0)

    wall = {p: 0.0 for p in paths}
    cpu = {p: 0.0 for p in paths}
    outs = {}
    for rnd in range(args.rounds):
        for p in paths:
            with Timer() as t:
                o = run(p, seed=1000 * rnd + 7)
            wall[p] += t.wall
            cpu[p] += t.cpu
            outs.setdefault(p, []).append(o)
            print(f"round {rnd + 1} {p}: {len(sources) * args.num_samples / t.wall:.1f} candidates/s", flush=True)

    n_cand = len(sources) * args.num_samples * args.rounds
    result = {"bench": "sampling", "machine": info, "policy": args.policy, "sources": len(sources),
              "num_samples": args.num_samples, "temperature": args.temperature, "rounds": args.rounds,
              "batch_sentences": batch, "ctranslate2_convert_s": round(convert_s, 2), "paths": {}}
    for p in paths:
        q = sample_quality([c for o in outs[p] for c in o], rows * args.rounds)
        result["paths"][p] = {"candidates_per_s": round(n_cand / wall[p], 1), "wall_s": round(wall[p], 2),
                              "cpu_s": round(cpu[p], 2), **q}
    # Wall-time ratios are the figure asked for; CPU-second ratios (this process's CPU time)
    # are less sensitive to other jobs on a shared machine, so both are reported.
    for a, b in [("baseline", p) for p in paths if p != "baseline"] + [("hf", "ctranslate2")]:
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
