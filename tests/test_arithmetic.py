"""The bundled arithmetic task: format, answer extraction, splits, determinism, tiny model."""
from __future__ import annotations

import csv
import os
import random

import pytest

from rest.tasks.arithmetic import (MARKER, VOCAB, answer, build_task, check, extract_answer, make_problem, parse_prompt,
                             prompt, reward, steps_are_correct, worked_solution)
from rest.rewards.verifiable import exact_match, numeric, parse_number


def test_worked_solution_format():
    assert prompt(347, 85) == "347+85="
    assert worked_solution(347, 85) == "75012 48113 30104|432"
    assert worked_solution(999, 1) == "91010 90110 90110|1000"  # the final carry shows up in the answer
    assert worked_solution(5, 0) == "50005|5"
    rng = random.Random(1)
    for _ in range(500):
        a, b = make_problem(rng, rng.choice([1, 2, 3, 4, 5, 6]))
        w = worked_solution(a, b)
        steps, ans = w.split(MARKER)
        assert int(ans) == a + b and ans == answer(a, b)
        assert all(len(s) == 5 and s.isdigit() for s in steps.split(" "))  # fixed-width steps
        assert len(steps.split(" ")) == max(len(str(a)), len(str(b)))
        assert set(w) <= set(VOCAB) and set(prompt(a, b)) <= set(VOCAB)
        assert parse_prompt(prompt(a, b)) == (a, b)
        assert steps_are_correct(prompt(a, b), w)


def test_make_problem_digits():
    rng = random.Random(0)
    for d in (1, 2, 3, 5):
        for _ in range(200):
            a, b = make_problem(rng, d)
            assert max(len(str(a)), len(str(b))) == d
    with pytest.raises(ValueError):
        make_problem(rng, 0)


@pytest.mark.parametrize("text,value", [
    ("75012 48113 30104|432", 432), ("|432", 432), ("432", 432), ("75012 48113", 48113),
    ("75012|43 2", 43), ("garbage", None), ("1|2|3", 3), ("75012|", None),
])
def test_extract_answer_agrees_with_numeric(text, value):
    assert extract_answer(text) == value
    parsed = parse_number(text, markers=(MARKER,))
    assert (parsed if parsed is None else int(parsed)) == value


def test_check_and_reward_agree_with_generic_rewards():
    w = worked_solution(347, 85)
    assert check(w, "432") and check(w, 432)
    assert not check(w.replace("|432", "|431"), "432")
    assert not check("432", "432")  # a bare answer shows no working
    assert check("432", "432", require_work=False)
    assert not check("|432", "432")  # a marker without steps
    assert check("11111|432", "432")  # outcome-only: wrong steps, right answer
    with pytest.raises(ValueError):
        check(w, "no answer")
    rng = random.Random(3)
    srcs, cands, refs = [], [], []
    for _ in range(100):
        a, b = make_problem(rng, 3)
        good = rng.random() < 0.5
        srcs.append(prompt(a, b))
        cands.append(worked_solution(a, b) if good else worked_solution(a, b + 1))
        refs.append(answer(a, b))
    r = reward(srcs, cands, refs)
    assert r == numeric(srcs, cands, refs, markers=(MARKER,)) == exact_match(srcs, cands, refs, markers=(MARKER,))
    assert 0 < sum(r) < 100


def _read(path):
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    assert rows[0] == ["source", "target"]
    assert all(len(r) == 2 for r in rows)
    return rows[1:]


SMALL = dict(n_worked=60, n_answer_only=300, n_test=80, n_hard_test=40, n_hard_answer_only=50, n_valid=30)


def test_build_task_files_splits_and_determinism(tmp_path):
    info = build_task(str(tmp_path / "a"), seed=7, **SMALL)
    files = ["worked.tsv", "answer_only.tsv", "valid.tsv", "test.tsv", "hard_test.tsv"]
    assert sorted(os.listdir(tmp_path / "a")) == sorted(files + ["README.md"])
    rows = {f: _read(tmp_path / "a" / f) for f in files}
    assert [len(rows[f]) for f in files] == [60, 350, 30, 80, 40] == [info[f] for f in files]
    for src, tgt in rows["worked.tsv"]:
        a, b = parse_prompt(src)
        assert tgt == worked_solution(a, b) and max(len(str(a)), len(str(b))) in (2, 3, 4)
    for f in ("answer_only.tsv", "valid.tsv", "test.tsv", "hard_test.tsv"):
        for src, tgt in rows[f]:
            a, b = parse_prompt(src)
            assert tgt == str(a + b)
    assert {max(len(str(x)) for x in parse_prompt(s)) for s, _ in rows["hard_test.tsv"]} == {5}
    pool_digits = {max(len(str(x)) for x in parse_prompt(s)) for s, _ in rows["answer_only.tsv"]}
    assert pool_digits == {2, 3, 4, 5}  # the pool climbs past the worked solutions
    # No problem in two files, commuted problems included.
    keys = {f: {tuple(sorted(parse_prompt(s))) for s, _ in rows[f]} for f in files}
    for i, f in enumerate(files):
        assert len(keys[f]) == len(rows[f])
        for g in files[i + 1:]:
            assert not keys[f] & keys[g], (f, g)
    # Same seed -> same bytes; another seed -> other problems.
    build_task(str(tmp_path / "b"), seed=7, **SMALL)
    build_task(str(tmp_path / "c"), seed=8, **SMALL)
    for f in files + ["README.md"]:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
    assert (tmp_path / "a" / "test.tsv").read_bytes() != (tmp_path / "c" / "test.tsv").read_bytes()
    readme = (tmp_path / "a" / "README.md").read_text()
    assert "seed=7" in readme and "75012 48113 30104|432" in readme and info["sha256"]["test.tsv"] in readme


def test_held_out_sets_do_not_depend_on_pool_sizes(tmp_path):
    build_task(str(tmp_path / "a"), seed=1, **SMALL)
    build_task(str(tmp_path / "b"), seed=1, **{**SMALL, "n_worked": 10, "n_answer_only": 20})
    for f in ("test.tsv", "hard_test.tsv", "valid.tsv"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()


def test_build_task_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="hard_digits"):
        build_task(str(tmp_path), digits=(2, 3), hard_digits=(3,))
    with pytest.raises(ValueError, match="too small"):
        build_task(str(tmp_path), digits=(1,), hard_digits=(), n_hard_test=0, n_hard_answer_only=0, n_test=500)


def test_files_load_with_the_project_reader(tmp_path):
    """The files match rest.data's TSV reader (header naming the columns, tab separated)."""
    import importlib

    data = None
    for name in ("rest.steps.data",):
        try:
            data = importlib.import_module(name)
            break
        except ImportError:
            continue
    if data is None or not hasattr(data, "load_pairs"):
        pytest.skip("the project's data reader is not importable")
    config = pytest.importorskip("rest.config")
    build_task(str(tmp_path), seed=0, **SMALL)
    cfg = config.DataConfig(source_column="source", target_column="target")
    rows = data.load_pairs(str(tmp_path / "worked.tsv"), cfg)
    assert len(rows) == 60 and rows[0]["target"] == worked_solution(*parse_prompt(rows[0]["source"]))
    assert len(data.load_pairs(str(tmp_path / "answer_only.tsv"), cfg)) == 350


@pytest.mark.slow  # ~10-16 s on a shared 2-core machine, most of it importing transformers
def test_tiny_causal_lm_saves_reloads_and_generates(tmp_path):
    pytest.importorskip("transformers")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rest.tasks.arithmetic import build_tiny_causal_lm

    build_tiny_causal_lm(str(tmp_path), num_layers=2)
    tok = AutoTokenizer.from_pretrained(str(tmp_path))
    model = AutoModelForCausalLM.from_pretrained(str(tmp_path))
    w = worked_solution(12345, 678)
    assert tok.convert_ids_to_tokens(tok(w).input_ids) == list(w)  # one token per character
    assert tok.decode(tok(w).input_ids) == w
    enc = tok(["347+85=", "12345+67890="], return_tensors="pt", padding=True, padding_side="left")
    torch.manual_seed(0)
    out = model.generate(**enc, max_new_tokens=8, do_sample=True, temperature=0.8)
    assert out.shape[0] == 2 and out.shape[1] <= enc.input_ids.shape[1] + 8
    assert model.config.model_type == "llama"  # rotary positions: runs past the trained lengths
