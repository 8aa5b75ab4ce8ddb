"""Rows over the model's maximum length in tokens: every step that tokenizes copes, and says so.

A tiny random-weight mBART (256 positions, as the bootstrap builds) meets a source of
over 300 tokens, which is under data.max_words: before, training and validation crashed
with ``IndexError: index out of range in self`` in the position embeddings.
"""
from __future__ import annotations

import json
import logging

import pytest

from rest.config import DataConfig, EvaluateConfig, FinetuneConfig, SampleConfig
from rest.steps.data import prepare
from rest.model.policy import load_policy, max_tokens, token_lengths
from tests.conftest import bundled_rows, write_tsv


def long_text(tokenizer, min_tokens: int = 300, max_words: int = 200) -> str:
    """Bundled sentences joined until the text is over ``min_tokens`` tokens but within ``max_words``."""
    words: list[str] = []
    for _, de, _ in bundled_rows("train", 2000):
        words += de.split()
        text = " ".join(words)
        if token_lengths(tokenizer, [text])[0] > min_tokens:
            assert len(words) <= max_words, "the tokenizer packs too many words per token for this test"
            return text
    raise AssertionError("bundled text too short")


@pytest.fixture(scope="module")
def policy(tiny_policy):
    model, tok = load_policy(tiny_policy)
    assert max_tokens(model, tok) == 256 == model.config.max_position_embeddings
    return tiny_policy, model, tok, long_text(tok)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def rows_with_long(long: str, n: int = 12) -> list[dict]:
    rows = [{"id": f"r{k}", "source": de, "target": en} for k, (_, de, en) in enumerate(bundled_rows("valid", n))]
    rows[3] = {"id": "long", "source": long, "target": long}
    return rows


def test_max_tokens_takes_the_real_limit():
    class Tok:
        model_max_length = int(1e30)  # transformers' "unset"
    assert max_tokens(model_config={"max_position_embeddings": 512}, tokenizer=Tok()) == 512
    assert max_tokens(model_config={}, tokenizer=Tok()) is None
    Tok.model_max_length = 128
    assert max_tokens(model_config={"max_position_embeddings": 512}, tokenizer=Tok()) == 128


@pytest.mark.parametrize("backend", ["hf", "ctranslate2"])
def test_generate_truncates_long_sources(policy, backend, caplog):
    from rest.model.backends import generate_with

    if backend == "ctranslate2":
        pytest.importorskip("ctranslate2")
    _, model, tok, long = policy
    with caplog.at_level(logging.WARNING, logger="rest.model.policy"):
        out = generate_with(backend)(model, tok, ["Hallo Welt", long], mode="greedy", max_length_ratio=10.0)
    assert len(out) == 2 and all(len(o) == 1 for o in out)
    assert "generate: 1 of 2 sources are over the model's maximum of 256 tokens" in caplog.text


def test_training_skips_pairs_over_the_limit(policy, caplog):
    from rest.rewards.metrics import get_reward
    from rest.model.train import TrainSpec, train_nll

    _, model, tok, long = policy
    rows = rows_with_long(long)
    spec = TrainSpec(learning_rate=1e-3, warmup_steps=0, batch_tokens=2000, max_steps=2, eval_every=2,
                     label="t", valid_backend="hf")
    with caplog.at_level(logging.WARNING, logger="rest.model.train"):
        result = train_nll(model, tok, rows, rows, spec, get_reward("chrf"))
    assert result.steps == 2 and result.skipped_overlong == 1
    assert "t: skipped 1 of 12 training pairs over the model's maximum of 256 tokens" in caplog.text
    assert "long (" in caplog.text
    with pytest.raises(ValueError, match=r"all 1 training pairs are over the model's maximum of 256 tokens"):
        train_nll(model, tok, [rows[3]], rows, spec, get_reward("chrf"))


def test_pipeline_steps_survive_a_300_token_row(policy, tmp_path):
    """prepare keeps the row (under max_words), then the control (finetune), Grow and evaluate run."""
    from rest.steps.evaluate import evaluate
    from rest.steps.finetune import control
    from rest.steps.sample import grow

    policy_dir, _, _, long = policy
    assert len(long.split()) <= 200
    train = [(f"r{k}", de, en) for k, (_, de, en) in enumerate(bundled_rows("train", 30))] + [("long", long, long)]
    small = [(f"v{k}", de, en) for k, (_, de, en) in enumerate(bundled_rows("valid", 6))] + [("vlong", long, long)]
    cfg = DataConfig(train=write_tsv(tmp_path / "train.tsv", train), valid=write_tsv(tmp_path / "valid.tsv", small),
                     test=write_tsv(tmp_path / "test.tsv", small), grow_sources=0)
    data = prepare(cfg, str(tmp_path / "data"))
    assert data.stats["train"]["rows"] == 31 and data.skipped.count == 0

    info = control(policy_dir, data.train, data.valid, FinetuneConfig(valid_backend="hf", threads=1), 2,
                   str(tmp_path / "control"))
    assert info["optimizer_steps"] == 2

    stats = grow(policy_dir, data.grow, SampleConfig(num_samples=2, backend="hf", threads=1),
                 str(tmp_path / "grow"), 1)
    assert stats["sources"] == 31 and stats["rows"] == 31 * 3

    metrics = evaluate(policy_dir, data.test, EvaluateConfig(backend="hf"), str(tmp_path / "eval"))
    assert metrics["test_sentences"] == 7


def test_prepare_overlong_error_setting(tmp_path):
    train = [(f"r{k}", de, en) for k, (_, de, en) in enumerate(bundled_rows("train", 30))]
    train.append(("w", " ".join(["Wort"] * 201), "word"))
    cfg = DataConfig(train=write_tsv(tmp_path / "train.tsv", train), valid="", test="", overlong="error")
    with pytest.raises(ValueError, match=r"train\.tsv:32: 'de' has 201 words, over data\.max_words=200"):
        prepare(cfg, str(tmp_path / "data"))
