"""Improve-step training speed: length-bucketed token batches versus naive fixed-length padding.

Both paths run the same NLL step as ``rest.train.train_nll`` (its collate, loss, AdamW
with clipping) on copies of the same policy and the same rows, in ONE process, rounds
interleaved so a varying background load hits both alike:

- bucketed: the batches ``train_nll`` uses, ``rest.policy.token_batches(lengths,
  batch_tokens, rng)`` — similar lengths together, about ``batch_tokens`` padded tokens each;
- naive: shuffled batches of the same mean number of sentences, every batch padded to the
  longest source and the longest target of the whole dataset.

Only real (non-pad) source+target tokens count, for both.

    python bench/finetune.py --rows 3000 --steps 8
"""
from __future__ import annotations

import argparse
import copy
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import DATA_DIR, Timer, default_policy, emit, machine, read_tsv  # noqa: E402

import torch  # noqa: E402


def naive_batches(n: int, per_batch: int, rng: random.Random) -> list[list[int]]:
    idx = list(range(n))
    rng.shuffle(idx)
    return [idx[k:k + per_batch] for k in range(0, n, per_batch)]


def collate_fixed(src_ids, tgt_ids, batch, pad_id, start_id, s_len, t_len):
    """Like rest.train's collate, but padded to fixed lengths (the dataset's maxima)."""
    from rest.train import _collate

    input_ids, attn, dec_in, labels, w = _collate(src_ids, tgt_ids, None, batch, pad_id, start_id)
    b = len(batch)

    def pad_to(x, length, value):
        out = torch.full((b, length), value, dtype=x.dtype)
        out[:, :x.shape[1]] = x
        return out

    return (pad_to(input_ids, s_len, pad_id), pad_to(attn, s_len, 0), pad_to(dec_in, t_len, pad_id),
            pad_to(labels, t_len, -100), w)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policy", default=default_policy(), help="policy directory (default: %(default)s)")
    ap.add_argument("--data", default=os.path.join(DATA_DIR, "train.tsv"))
    ap.add_argument("--rows", type=int, default=3000, help="first N pairs of the file")
    ap.add_argument("--batch-tokens", type=int, default=0, help="0 = FinetuneConfig's default")
    ap.add_argument("--steps", type=int, default=8, help="optimizer steps per path per round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", default="")
    args = ap.parse_args(argv)

    from rest.config import FinetuneConfig
    from rest.policy import decoder_start_id, load_policy, set_threads, token_batches
    from rest.train import _collate, _encode, _loss

    set_threads(args.threads)
    info = machine()
    base, tokenizer = load_policy(args.policy)
    rows = read_tsv(args.data, args.rows)
    batch_tokens = args.batch_tokens or FinetuneConfig().batch_tokens
    src_ids, tgt_ids = _encode(tokenizer, rows)
    lengths = [len(s) + len(t) for s, t in zip(src_ids, tgt_ids)]
    pad_id, start_id = base.config.pad_token_id, decoder_start_id(base)
    s_max, t_max = max(map(len, src_ids)), max(map(len, tgt_ids))

    bucketed = token_batches(lengths, batch_tokens, random.Random(13))
    per_batch = max(1, round(len(rows) / len(bucketed)))  # same mean sentences per batch
    naive = naive_batches(len(rows), per_batch, random.Random(13))

    def padded(batch, fixed):
        if fixed:
            return len(batch) * (s_max + t_max)
        return len(batch) * (max(len(src_ids[i]) for i in batch) + max(len(tgt_ids[i]) for i in batch))

    models = {p: copy.deepcopy(base).train() for p in ("bucketed", "naive")}
    opts = {p: torch.optim.AdamW(m.parameters(), lr=1e-4, betas=(0.9, 0.98)) for p, m in models.items()}
    stats = {p: {"wall": 0.0, "cpu": 0.0, "tokens": 0, "padded": 0, "steps": 0, "sentences": 0} for p in models}

    def step(p, batch):
        fixed = p == "naive"
        inputs = (collate_fixed(src_ids, tgt_ids, batch, pad_id, start_id, s_max, t_max) if fixed
                  else _collate(src_ids, tgt_ids, None, batch, pad_id, start_id))
        loss, _ = _loss(models[p], *inputs)
        opts[p].zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(models[p].parameters(), 1.0)
        opts[p].step()
        st = stats[p]
        st["tokens"] += sum(lengths[i] for i in batch)
        st["padded"] += padded(batch, fixed)
        st["steps"] += 1
        st["sentences"] += len(batch)

    step("bucketed", bucketed[0])  # warm-up, untimed
    step("naive", naive[0])
    for st in stats.values():
        st.update(tokens=0, padded=0, steps=0, sentences=0)
    for rnd in range(args.rounds):
        for p, batches in (("bucketed", bucketed), ("naive", naive)):
            chosen = [batches[(1 + rnd * args.steps + k) % len(batches)] for k in range(args.steps)]
            tok0 = stats[p]["tokens"]
            with Timer() as t:
                for b in chosen:
                    step(p, b)
            stats[p]["wall"] += t.wall
            stats[p]["cpu"] += t.cpu
            print(f"round {rnd + 1} {p}: {(stats[p]['tokens'] - tok0) / t.wall:.0f} real tokens/s", flush=True)

    result = {"bench": "finetune", "machine": info, "policy": args.policy, "rows": len(rows),
              "batch_tokens": batch_tokens, "steps_per_round": args.steps, "rounds": args.rounds,
              "dataset_max_source_tokens": s_max, "dataset_max_target_tokens": t_max,
              "mean_pair_tokens": round(sum(lengths) / len(lengths), 1),
              "bucketed_batches_per_epoch": len(bucketed), "sentences_per_batch": per_batch, "paths": {}}
    for p, st in stats.items():
        result["paths"][p] = {"real_tokens_per_s": round(st["tokens"] / st["wall"], 1),
                              "real_token_share_of_padded": round(st["tokens"] / max(1, st["padded"]), 3),
                              "steps": st["steps"], "mean_sentences_per_step": round(st["sentences"] / st["steps"], 1),
                              "wall_s": round(st["wall"], 2), "cpu_s": round(st["cpu"], 2)}
    result["speedup_bucketed_vs_naive"] = round(
        result["paths"]["bucketed"]["real_tokens_per_s"] / result["paths"]["naive"]["real_tokens_per_s"], 2)
    # Per CPU second of this process too: less sensitive to other jobs on a shared machine.
    result["cpu_speedup_bucketed_vs_naive"] = round(
        (stats["bucketed"]["tokens"] / max(1e-9, stats["bucketed"]["cpu"]))
        / (stats["naive"]["tokens"] / max(1e-9, stats["naive"]["cpu"])), 2)
    emit(result, args.out)
    for p, r in result["paths"].items():
        print(f"{p:>9}: {r['real_tokens_per_s']:8.0f} real tokens/s  ({r['real_token_share_of_padded']:.0%} of "
              f"computed positions are real)")
    print(f"speedup_bucketed_vs_naive: {result['speedup_bucketed_vs_naive']}x (wall), "
          f"{result['cpu_speedup_bucketed_vs_naive']}x (CPU seconds)")
    return result


if __name__ == "__main__":
    main()
