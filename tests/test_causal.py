"""Decoder-only (causal LM) policies: prompts, completion-only loss, left padding, CTranslate2's
Generator, LoRA, and a tiny ReST pass through the core functions."""
from __future__ import annotations

import json
import os
import random

import pytest
import torch

from rest.model import causal
from rest.tasks import arithmetic as ar


def _rows(n: int, seed: int = 0, digits=(2, 3)) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for k in range(n):
        a, b = ar.make_problem(rng, rng.choice(digits))
        out.append({"id": f"r{k}", "source": ar.prompt(a, b), "target": ar.worked_solution(a, b)})
    return out


@pytest.fixture(scope="module")
def tiny_causal(tmp_path_factory):
    """A tiny causal policy (random weights, char tokenizer, prompt = the source), saved and reloaded."""
    from rest.model.policy import load_policy, save_policy

    rows = _rows(50)
    tok = causal.char_tokenizer([r["source"] + r["target"] for r in rows])
    model = causal.build_model(tok, d_model=32, ffn_dim=64, layers=2, heads=2, dropout=0.0, seed=0, max_positions=96)
    causal.set_prompt(model, causal.resolve_prompt("source", tok))
    d = str(tmp_path_factory.mktemp("causal") / "policy")
    save_policy(model, tok, d, {"kind": "bc", "optimizer_steps_since_bc": 0})
    return d, load_policy(d)


def test_a_causal_directory_loads_as_a_causal_lm_with_its_prompt(tiny_causal):
    d, (model, tok) = tiny_causal
    assert causal.is_causal_dir(d) and causal.is_causal(model)
    assert type(model).__name__ == "LlamaForCausalLM"
    with open(os.path.join(d, "rest_policy.json")) as f:
        assert json.load(f)["prompt"] == {"kind": "text", "template": "{source}"}  # in the lineage
    assert causal.prompt_of(model, tok) == causal.Prompt("text", "{source}")
    # The seq2seq policies of the project are not causal.
    assert not causal.is_causal_config({"model_type": "mbart", "is_encoder_decoder": True})
    assert not causal.is_causal_config({"model_type": "marian"})  # a config.json that leaves the flag out
    assert causal.is_causal_config({"model_type": "llama"})


def test_prompt_settings():
    tok = causal.char_tokenizer(["abc {}:"])
    assert causal.resolve_prompt("source").template == "{source}"
    assert causal.resolve_prompt("auto", tok) == causal.resolve_prompt("translation")  # no chat template
    assert causal.resolve_prompt("Q: {source} A:").text(tok, "x") == "Q: x A:"
    with pytest.raises(ValueError, match="chat template"):
        causal.resolve_prompt("chat", tok)
    with pytest.raises(ValueError, match="source"):
        causal.resolve_prompt("no placeholder")
    # BOS first, never a closing EOS on a prompt.
    ids = causal.Prompt("text", "{source}").ids(tok, "ab")
    assert ids[0] == tok.bos_token_id and ids[-1] != tok.eos_token_id and len(ids) == 3


def test_chat_prompt_uses_the_tokenizers_chat_template():
    tok = causal.char_tokenizer(["<|user|>\nabc<|assistant|>"])
    tok.chat_template = "{% for m in messages %}[{{ m['content'] }}]{% endfor %}{% if add_generation_prompt %}>{% endif %}"
    p = causal.resolve_prompt("auto", tok)
    assert p.kind == "chat"
    assert causal.Prompt("chat", "<{source}>").text(tok, "ab") == "[<ab>]>"


def test_loss_is_on_the_completion_only(tiny_causal):
    _, (model, tok) = tiny_causal
    rows = [{"source": "12+3=", "target": "21003 10001|15"}, {"source": "1+2=", "target": "12003|3"}]
    prompts, completions = causal.encode_pairs(model, tok, rows)
    assert completions[0][-1] == tok.eos_token_id  # every completion ends with EOS
    input_ids, attn, dec_in, labels, w = causal.collate(prompts, completions, None, [0, 1], tok.pad_token_id)
    assert dec_in is None and w is None
    for row in range(2):
        p, c = prompts[row], completions[row]
        n = len(p) + len(c) - 1  # shifted: position t predicts token t+1
        assert input_ids[row, :n].tolist() == (p + c)[:-1]
        assert attn[row].sum() == n
        # -100 on every position whose next token is still the prompt, and on the padding.
        assert labels[row, :len(p) - 1].eq(-100).all() and labels[row, n:].eq(-100).all()
        assert labels[row, len(p) - 1:n].tolist() == c
    # The training loss counts exactly the completion tokens.
    from rest.model.train import _loss

    loss, ntok = _loss(model, input_ids, attn, None, labels, None)
    assert ntok == sum(len(c) for c in completions) and torch.isfinite(loss)


def test_left_padding_gives_every_row_what_it_gets_alone(tiny_causal):
    _, (model, tok) = tiny_causal
    short, long = causal.prompt_of(model, tok).ids(tok, "1+2="), causal.prompt_of(model, tok).ids(tok, "1234+56=")
    ids, attn = causal.left_pad([short, long], tok.pad_token_id)
    assert ids[0, :len(long) - len(short)].eq(tok.pad_token_id).all() and attn[0].sum() == len(short)
    with torch.no_grad():
        padded = model(input_ids=ids, attention_mask=attn).logits[:, -1]
        alone = [model(input_ids=torch.tensor([p])).logits[0, -1] for p in (short, long)]
    for row in range(2):
        assert torch.allclose(padded[row], alone[row], atol=1e-5)
    # Batched greedy generation (HF) equals one source at a time, given the same budget.
    srcs = ["1+2=", "1234+56=", "77+8="]
    together = causal.generate(model, tok, srcs, max_length_ratio=0.5)
    budget = causal._max_new([len(tok(s, add_special_tokens=False)["input_ids"]) for s in srcs], range(3), 0.5,
                             None, 0)
    for s, out in zip(srcs, together):
        alone_out = causal.generate(model, tok, [s], max_length_ratio=0.5)[0][0]
        assert out[0][:budget // 2] == alone_out[:budget // 2]


def test_generation_stops_at_eos_and_at_the_token_budget(tiny_causal):
    _, (model, tok) = tiny_causal
    out = causal.generate(model, tok, ["12+3="], max_length_ratio=1.0)[0][0]
    assert len(out) <= int(5 * 1.0) + 10  # at most ratio x source tokens + 10 new tokens
    eos, stops = tok.eos_token_id, causal.stop_ids(model, tok)
    assert eos in stops
    ids = tok("12|", add_special_tokens=False)["input_ids"] + [eos] + tok("99", add_special_tokens=False)["input_ids"]
    assert causal._decode(tok, ids, stops) == "12|"  # nothing after EOS


def test_ctranslate2_generator_matches_hf_greedy(tiny_causal):
    pytest.importorskip("ctranslate2")
    from rest.model.backends import generate as ct2_generate
    from rest.model.policy import generate as hf_generate

    _, (model, tok) = tiny_causal
    srcs = [r["source"] for r in _rows(12, seed=3)]
    kw = dict(max_length_ratio=2.0, batch_sentences=64)
    assert ct2_generate(model, tok, srcs, **kw) == hf_generate(model, tok, srcs, **kw)  # the policy hooks dispatch
    samples = ct2_generate(model, tok, srcs, mode="sample", num_return=3, temperature=0.8, seed=5, **kw)
    assert [len(s) for s in samples] == [3] * len(srcs)
    assert samples == ct2_generate(model, tok, srcs, mode="sample", num_return=3, temperature=0.8, seed=5, **kw)


def test_lora_trains_adapters_and_the_merged_model_computes_the_adapted_forward(tiny_causal):
    pytest.importorskip("peft")
    from rest.model import lora as lora_lib
    from rest.model.policy import load_policy

    d, _ = tiny_causal
    model, tok = load_policy(d)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    wrapped = lora_lib.wrap(model, {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": "all-linear"})
    trainable = [n for n, p in wrapped.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    torch.manual_seed(0)
    with torch.no_grad():  # as after training: B != 0
        for n, p in wrapped.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    x = torch.tensor([causal.prompt_of(model, tok).ids(tok, "123+45=")])
    with torch.no_grad():
        adapted = wrapped(input_ids=x).logits
    merged = lora_lib.merge(wrapped)
    assert type(merged).__name__ == "LlamaForCausalLM" and not lora_lib.is_wrapped(merged)
    assert causal.prompt_of(merged, tok) == causal.Prompt("text", "{source}")  # the prompt survives
    with torch.no_grad():
        assert torch.allclose(merged(input_ids=x).logits, adapted, atol=1e-5)
    changed = [k for k, v in merged.state_dict().items() if not torch.equal(v, before[k])]
    assert changed and all("proj" in k for k in changed)  # only adapted linear layers moved


def test_tiny_causal_rest_pass_through_the_core_functions(tmp_path, tiny_causal):
    """prepare → evaluate → grow → score → filter → improve (LoRA, from the base) → evaluate → control."""
    from rest.config import load_config
    from rest.model.policy import policy_info
    from rest.steps.data import prepare
    from rest.steps.evaluate import evaluate
    from rest.steps.filter import filter_scored
    from rest.steps.finetune import control, improve
    from rest.steps.sample import grow
    from rest.steps.score import score
    from rest.rewards.spec import RewardSpec

    d, _ = tiny_causal
    data = tmp_path / "data"
    ar.build_task(str(data), n_worked=40, n_answer_only=30, n_test=12, n_hard_test=6, n_hard_answer_only=5,
                  n_valid=8, digits=(2,))
    cfg = load_config("configs/rest-em-arithmetic.yaml", {
        "data.train": str(data / "worked.tsv"), "data.valid": str(data / "valid.tsv"),
        "data.test": str(data / "test.tsv"), "data.grow": str(data / "answer_only.tsv"),
        "data.hard_test": str(data / "hard_test.tsv"), "sample.num_samples": "2", "finetune.max_steps": "3",
        "finetune.eval_every": "3", "finetune.lora_r": "4", "evaluate.best_of_n": "2",
        "filter.thresholds": "0.0", "filter.guard": "off"})  # keep everything: random weights solve nothing
    p = prepare(cfg.data, str(tmp_path / "prepared"))
    assert p.hard_test and p.control.endswith("control.jsonl")  # a separate pool: the control continues on train
    spec = RewardSpec.from_config(cfg.score, cfg.loop)
    assert spec.reference_metric == "arithmetic" and not spec.has_true_metric
    m = evaluate(d, p.test, cfg.evaluate, str(tmp_path / "eval-bc"), reward=spec, hard_test_path=p.hard_test)
    assert m["test_accuracy"] == m["test_reward"] and "hard_accuracy" in m and set(m["pass_at_k"]) == {"1", "2"}
    grow(d, p.grow, cfg.sample, str(tmp_path / "grown"), 1)
    st = score(str(tmp_path / "grown"), cfg.score, str(tmp_path / "scored"))
    assert st["count_by_origin"] == {"sample": 35 * 2}  # include_references=false: samples only
    fs = filter_scored(str(tmp_path / "scored"), cfg.filter, 1, str(tmp_path / "filtered"))
    assert fs["kept"] <= 70
    info = improve(d, str(tmp_path / "filtered"), p.valid, cfg.finetune, 1, str(tmp_path / "g1"), reward=spec,
                   base_dir=d, train_path=p.train)
    lineage = policy_info(str(tmp_path / "g1"))
    assert lineage["lora"]["r"] == 4 and lineage["lora"]["merged"] and lineage["initialized_from"] == "base"
    assert lineage["prompt"]["template"] == "{source}" and info["train_rows"] == fs["kept"] + 40
    assert info["optimizer_steps"] == 3
    evaluate(str(tmp_path / "g1"), p.test, cfg.evaluate, str(tmp_path / "eval-g1"), reward=spec)
    c = control(d, p.control, p.valid, cfg.finetune, 4, str(tmp_path / "control"), reward=spec, rest_checks=1)
    assert c["optimizer_steps"] == 4 and c["train_rows"] == 40


def test_the_served_pyfunc_model_completes_with_a_causal_policy(tiny_causal):
    """rest.services.registry.TranslationModel (what MLflow serves and promotion translates with)."""
    from types import SimpleNamespace

    from rest.model.policy import generate
    from rest.services.registry import TranslationModel

    d, (model, tok) = tiny_causal
    served = TranslationModel()
    served.load_context(SimpleNamespace(artifacts={"policy": d}, model_config={"threads": 1}))
    srcs = ["12+3=", "45+67="]
    assert served.predict(None, srcs) == [h[0] for h in generate(model, tok, srcs)]
