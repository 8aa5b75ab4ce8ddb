"""Improve-step training speed: length-bucketed token batches versus per-batch padding.

All paths run the same NLL step as ``rest.model.train.train_nll`` (its loss, AdamW with
clipping) on copies of the same policy and the same rows, in ONE process, rounds
interleaved so a varying background load hits every path alike:

- bucketed: the batches ``train_nll`` uses, ``rest.model.policy.token_batches(lengths,
  batch_tokens, rng)`` — similar lengths together, about ``batch_tokens`` padded tokens
  each — collated by ``rest.model.train._collate``;
- per_batch (the baseline, what users do): shuffled fixed-size batches of the same mean
  number of sentences, padded to each batch's own longest source and target by the real
  ``transformers.DataCollatorForSeq2Seq`` (``padding="longest"``, labels padded with -100,
  decoder inputs from the model's ``prepare_decoder_input_ids_from_labels``), as a
  ``Seq2SeqTrainer`` / ``DataLoader`` would feed them;
- dataset_max (worst case, optional): the same shuffled batches, every batch padded to the
  longest source and the longest target of the whole dataset (``padding="max_length"``).

Only real (non-pad) source+target tokens count, for every path. The headline ratio is
bucketed vs per_batch.

    python bench/finetune.py --rows 3000 --steps 3 --rounds 2
    python bench/finetune.py --device cuda --paths bucketed,per_batch   # on a GPU, bf16 autocast

With ``--device cuda`` the steps run on the GPU with ``--precision`` (auto: bf16 autocast where
the GPU has it, as ``finetune.precision``), and each path reports its peak GPU memory.
"""
from __future__ import annotations

import argparse
import copy
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import DATA_DIR, Timer, default_policy, emit, load_avg, machine, read_tsv  # noqa: E402

import torch  # noqa: E402

PATHS = ("bucketed", "per_batch", "dataset_max")


def shuffled_batches(n: int, per_batch: int, rng: random.Random) -> list[list[int]]:
    """Fixed-size batches of a shuffled index, as ``DataLoader(shuffle=True, batch_size=per_batch)``."""
    idx = list(range(n))
    rng.shuffle(idx)
    return [idx[k:k + per_batch] for k in range(0, n, per_batch)]


def hf_collator(tokenizer, model, fixed_lengths: tuple[int, int] | None = None):
    """``DataCollatorForSeq2Seq`` as a user sets it up; with ``fixed_lengths`` (source, target)
    every batch is padded to those lengths instead of its own longest pair."""
    from transformers import DataCollatorForSeq2Seq

    if fixed_lengths is None:
        collator = DataCollatorForSeq2Seq(tokenizer, model=model, padding="longest", label_pad_token_id=-100,
                                          return_tensors="pt")
        return collator
    s_len, t_len = fixed_lengths
    # The collator pads sources to max_length and labels to the same max_length; pad sources
    # to the dataset's longest source and the labels (decoder side) to its longest target.
    src_collator = DataCollatorForSeq2Seq(tokenizer, model=model, padding="max_length", max_length=s_len,
                                          label_pad_token_id=-100, return_tensors="pt")

    def collate(features):
        out = src_collator([{"input_ids": f["input_ids"]} for f in features])
        labels = torch.full((len(features), t_len), -100, dtype=torch.long)
        for row, f in enumerate(features):
            labels[row, :len(f["labels"])] = torch.tensor(f["labels"])
        out["labels"] = labels
        out["decoder_input_ids"] = model.prepare_decoder_input_ids_from_labels(labels=labels)
        return out

    return collate


def _on(device, tensors):
    return tuple(t.to(device) if t is not None else None for t in tensors)


def check_same_loss(model, collator, src_ids, tgt_ids, batch, pad_id, start_id) -> float:
    """The collator's batch gives the same loss as train_nll's collate (same teacher forcing)."""
    from rest.model.train import _collate, _loss

    model.eval()
    with torch.no_grad():
        ours, _ = _loss(model, *_on(model.device, _collate(src_ids, tgt_ids, None, batch, pad_id, start_id)))
        b = collator([{"input_ids": src_ids[i], "labels": tgt_ids[i]} for i in batch])
        theirs, _ = _loss(model, *_on(model.device, (b["input_ids"], b["attention_mask"], b["decoder_input_ids"],
                                                     b["labels"], None)))
    model.train()
    diff = abs(float(ours) - float(theirs))
    if diff > 1e-4:
        raise AssertionError(f"DataCollatorForSeq2Seq's batch gives loss {float(theirs):.6f}, "
                             f"rest.model.train's collate {float(ours):.6f}: not the same training step")
    return diff


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policy", default=default_policy(), help="policy directory (default: %(default)s)")
    ap.add_argument("--data", default=os.path.join(DATA_DIR, "train.tsv"))
    ap.add_argument("--rows", type=int, default=3000, help="first N pairs of the file")
    ap.add_argument("--batch-tokens", type=int, default=0, help="0 = FinetuneConfig's default")
    ap.add_argument("--steps", type=int, default=3, help="optimizer steps per path per round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--paths", default=",".join(PATHS),
                    help="comma-separated, of: " + ", ".join(PATHS) + " (bucketed and per_batch are needed "
                         "for the headline ratio)")
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default: %(default)s)")
    ap.add_argument("--precision", default="auto", help="auto (bf16 autocast on a GPU that has it, fp32 on the "
                    "CPU), fp32, bf16 or fp16, as finetune.precision (default: %(default)s)")
    ap.add_argument("--out", default="")
    args = ap.parse_args(argv)
    paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    unknown = set(paths) - set(PATHS)
    if unknown:
        ap.error(f"unknown paths {sorted(unknown)}; choose from {', '.join(PATHS)}")

    from rest.config import FinetuneConfig
    from rest.model.device import amp_for, autocast, describe, is_cuda, place
    from rest.model.policy import decoder_start_id, load_policy, token_batches
    from rest.model.train import _collate, _encode, _loss

    info = machine()
    base, tokenizer = load_policy(args.policy)
    device = place(base, args.device, args.threads, "--device")  # CPU threads only on the CPU
    amp = amp_for(device, args.precision, "--precision")
    cuda = is_cuda(device)
    info["device"] = {"device": str(device), **describe(device)}
    info["torch_threads"] = torch.get_num_threads()
    rows = read_tsv(args.data, args.rows)
    batch_tokens = args.batch_tokens or FinetuneConfig().batch_tokens
    src_ids, tgt_ids = _encode(tokenizer, rows)
    lengths = [len(s) + len(t) for s, t in zip(src_ids, tgt_ids)]
    pad_id, start_id = base.config.pad_token_id, decoder_start_id(base)
    s_max, t_max = max(map(len, src_ids)), max(map(len, tgt_ids))

    bucketed = token_batches(lengths, batch_tokens, random.Random(13))
    per_batch = max(1, round(len(rows) / len(bucketed)))  # same mean sentences per batch
    shuffled = shuffled_batches(len(rows), per_batch, random.Random(13))
    batches = {"bucketed": bucketed, "per_batch": shuffled, "dataset_max": shuffled}

    models = {p: copy.deepcopy(base).train() for p in paths}
    collators = {}
    if "per_batch" in paths:
        collators["per_batch"] = hf_collator(tokenizer, models["per_batch"])
    if "dataset_max" in paths:
        collators["dataset_max"] = hf_collator(tokenizer, models["dataset_max"], (s_max, t_max))
    loss_diffs = {p: check_same_loss(models[p], c, src_ids, tgt_ids, shuffled[0], pad_id, start_id)
                  for p, c in collators.items()}
    opts = {p: torch.optim.AdamW(m.parameters(), lr=1e-4, betas=(0.9, 0.98)) for p, m in models.items()}
    stats = {p: {"wall": 0.0, "cpu": 0.0, "tokens": 0, "padded": 0, "steps": 0, "sentences": 0, "peak_mb": 0.0}
             for p in models}
    scalers = {p: torch.amp.GradScaler("cuda") for p in models} if amp.scaler else {}

    def step(p, batch):
        if p == "bucketed":
            inputs = _collate(src_ids, tgt_ids, None, batch, pad_id, start_id)
        else:  # the collator runs inside the timed step, as a DataLoader's collate_fn would
            b = collators[p]([{"input_ids": src_ids[i], "labels": tgt_ids[i]} for i in batch])
            inputs = (b["input_ids"], b["attention_mask"], b["decoder_input_ids"], b["labels"], None)
        inputs = _on(device, inputs) if cuda else inputs
        with autocast(device, amp):
            loss, _ = _loss(models[p], *inputs)
        opts[p].zero_grad(set_to_none=True)
        if p in scalers:  # fp16: loss-scaled, as rest.model.distributed.TrainRuntime does
            scalers[p].scale(loss).backward()
            scalers[p].unscale_(opts[p])
            torch.nn.utils.clip_grad_norm_(models[p].parameters(), 1.0)
            scalers[p].step(opts[p])
            scalers[p].update()
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(models[p].parameters(), 1.0)
            opts[p].step()
        st = stats[p]
        st["tokens"] += sum(lengths[i] for i in batch)
        st["padded"] += inputs[0].numel() + inputs[3].numel()  # computed source + target positions
        st["steps"] += 1
        st["sentences"] += len(batch)

    for p in paths:  # warm-up, untimed
        step(p, batches[p][0])
    for st in stats.values():
        st.update(tokens=0, padded=0, steps=0, sentences=0)
    for rnd in range(args.rounds):
        for p in paths:
            chosen = [batches[p][(1 + rnd * args.steps + k) % len(batches[p])] for k in range(args.steps)]
            tok0 = stats[p]["tokens"]
            if cuda:
                torch.cuda.synchronize(device)
                torch.cuda.reset_peak_memory_stats(device)
            with Timer() as t:
                for b in chosen:
                    step(p, b)
                if cuda:  # the optimizer step is asynchronous on a GPU: time it to its end
                    torch.cuda.synchronize(device)
            if cuda:
                stats[p]["peak_mb"] = max(stats[p]["peak_mb"], torch.cuda.max_memory_allocated(device) / 2**20)
            stats[p]["wall"] += t.wall
            stats[p]["cpu"] += t.cpu
            print(f"round {rnd + 1} {p}: {(stats[p]['tokens'] - tok0) / t.wall:.0f} real tokens/s", flush=True)

    info["load_avg_1min_at_end"] = load_avg()
    result = {"bench": "finetune", "machine": info, "policy": args.policy, "rows": len(rows),
              "batch_tokens": batch_tokens, "steps_per_round": args.steps, "rounds": args.rounds,
              "dataset_max_source_tokens": s_max, "dataset_max_target_tokens": t_max,
              "mean_pair_tokens": round(sum(lengths) / len(lengths), 1),
              "bucketed_batches_per_epoch": len(bucketed), "sentences_per_batch": per_batch,
              "collator_loss_abs_diff_vs_train_nll": {p: round(d, 7) for p, d in loss_diffs.items()}, "paths": {},
              "device": str(device), "precision": amp.name, "parameters": sum(p.numel() for p in base.parameters())}
    def epoch_share(p):  # over every batch of one epoch, not only the timed ones
        if p == "dataset_max":
            return sum(lengths) / (len(rows) * (s_max + t_max))
        padded = sum(len(b) * (max(len(src_ids[i]) for i in b) + max(len(tgt_ids[i]) for i in b))
                     for b in batches[p])
        return sum(lengths) / padded

    for p, st in stats.items():
        result["paths"][p] = {"epoch_real_token_share": round(epoch_share(p), 3),"real_tokens_per_s": round(st["tokens"] / st["wall"], 1),
                              "real_token_share_of_padded": round(st["tokens"] / max(1, st["padded"]), 3),
                              "steps": st["steps"], "mean_sentences_per_step": round(st["sentences"] / st["steps"], 1),
                              "wall_s": round(st["wall"], 2), "cpu_s": round(st["cpu"], 2)}
        if cuda:
            result["paths"][p]["peak_memory_mb"] = round(st["peak_mb"], 1)
    # Wall-time ratios, and per CPU second of this process (less sensitive to other jobs on a
    # shared machine). The headline is bucketed vs per_batch.
    for other in ("per_batch", "dataset_max"):
        if "bucketed" in stats and other in stats:
            b, o = stats["bucketed"], stats[other]
            result[f"speedup_bucketed_vs_{other}"] = round((b["tokens"] / b["wall"]) / (o["tokens"] / o["wall"]), 2)
            result[f"cpu_speedup_bucketed_vs_{other}"] = round(
                (b["tokens"] / max(1e-9, b["cpu"])) / (o["tokens"] / max(1e-9, o["cpu"])), 2)
    emit(result, args.out)
    for p, r in result["paths"].items():
        print(f"{p:>11}: {r['real_tokens_per_s']:8.0f} real tokens/s  ({r['real_token_share_of_padded']:.0%} of "
              f"computed positions are real in the timed steps, {r['epoch_real_token_share']:.0%} over an epoch)")
    for other in ("per_batch", "dataset_max"):
        if f"speedup_bucketed_vs_{other}" in result:
            print(f"speedup_bucketed_vs_{other}: {result[f'speedup_bucketed_vs_{other}']}x (wall), "
                  f"{result[f'cpu_speedup_bucketed_vs_{other}']}x (CPU seconds)")
    return result


if __name__ == "__main__":
    main()
