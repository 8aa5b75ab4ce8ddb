"""Verifiable rewards: exact match, numeric answer, regex, Python unit tests (in the sandbox)."""
from __future__ import annotations

import sys

import pytest

from rest.rewards.verifiable import (REWARDS, Verdict, exact_match, exact_match_with_reasons, extract_code, extract_final,
                             make_reward, numeric, numeric_with_reasons, parse_number, python_tests,
                             python_tests_with_reasons, regex, regex_with_reasons, score_with_reasons)


def _n(k):
    return [""] * k


def test_extract_final_uses_the_last_marker():
    assert extract_final("a | b | 42") == (" 42", True)
    assert extract_final("steps #### 7") == (" 7", True)
    assert extract_final("no marker") == ("no marker", False)


@pytest.mark.parametrize("text,value", [
    ("the answer is 42.", 42), ("#### 1,234", 1234), ("3/4", 0.75), ("x = -3.5e2 and then 7", 7),
    ("75012 48113 30104|432", 432), ("|432 and 7 more", 432), ("\u22125", -5), (".5", 0.5), ("50%", 50),
    ("347+85=", 85), ("v2", None), ("no number", None), ("1/0", None),
])
def test_parse_number(text, value):
    assert parse_number(text) == value


def test_exact_match_normalises():
    cands = ["Paris.", "  paris ", "PARIS", "London", "", "steps | Paris"]
    assert exact_match(_n(6), cands, ["paris"] * 6) == [1, 1, 1, 0, 0, 1]
    assert exact_match(_n(2), ["PARIS", "paris"], ["paris"] * 2, case_sensitive=True) == [0, 1]
    assert exact_match(_n(1), ["paris."], ["paris"], strip_period=False) == [0]
    v = exact_match_with_reasons(_n(3), ["London", "", "Paris"], ["paris"] * 3, require_marker=True)
    assert [x.reason for x in v] == ["no_marker", "no_marker", "no_marker"]
    v = exact_match_with_reasons(_n(2), ["London", "x |"], ["paris", "paris"])
    assert [x.reason for x in v] == ["mismatch", "empty"] and "london" in v[0].detail


def test_numeric_with_tolerance_and_reasons():
    cands = ["so about 0.3333333", "working |12", "nothing here", "13", "3.14"]
    refs = ["1/3", "#### 12", "3", "12", "3.14159"]
    v = numeric_with_reasons(_n(5), cands, refs)
    assert [x.score for x in v] == [1, 1, 0, 0, 0]
    assert [x.reason for x in v] == ["ok", "ok", "no_number", "wrong_number", "wrong_number"]
    assert numeric(_n(1), ["3.14"], ["3.14159"], rel_tol=1e-3) == [1.0]
    assert numeric(_n(1), ["100.4"], ["100"], abs_tol=0.5, rel_tol=0) == [1.0]
    assert numeric_with_reasons(_n(1), ["3"], ["no number"])[0].reason == "bad_reference"
    with pytest.raises(ValueError, match="tolerances"):
        numeric(_n(1), ["1"], ["1"], rel_tol=-1)


def test_regex():
    assert regex(_n(3), ["abc123", "abc12", " abc999 "], [r"abc\d{3}"] * 3) == [1, 0, 1]  # the reference is the pattern
    pat = r"The answer is {reference}\.?"
    assert regex(_n(3), ["The answer is 4.2.", "The answer is 442", "The answer is 4.2"], ["4.2"] * 3,
                 pattern=pat) == [1, 0, 1]  # the reference is escaped: '.' is literal
    assert regex(_n(1), ["x1"], ["ignored"], pattern=r"x\d") == [1]
    v = regex_with_reasons(_n(2), ["a", "a" * 20_000], ["(", "a+"])
    assert [x.reason for x in v] == ["bad_pattern", "too_long"]


def test_rewards_check_lengths_and_registry():
    with pytest.raises(ValueError, match="parallel lists"):
        exact_match(["a"], ["a", "b"], ["a"])
    assert set(REWARDS) == {"exact_match", "numeric", "regex", "python_tests"}
    v = score_with_reasons("numeric", _n(1), ["7"], ["7"])
    assert v == [Verdict(1.0, "ok", "")]
    r = make_reward("numeric", rel_tol=1e-3)
    assert r.__name__ == "numeric" and r(["s"], ["3.1416"], ["3.14159"]) == [1.0]
    with pytest.raises(ValueError, match="unknown verifiable reward"):
        make_reward("bleu")
    with pytest.raises(ValueError, match="rel_tl"):
        make_reward("numeric", rel_tl=1)
    # Scores are floats in [0, 1].
    for name in ("exact_match", "numeric", "regex"):
        scores = REWARDS[name][0](_n(2), ["1", "2"], ["1", "1"])
        assert all(isinstance(s, float) and 0 <= s <= 1 for s in scores)


def test_extract_code():
    assert extract_code("Here:\n```python\ndef f():\n    return 1\n```\nDone") == "def f():\n    return 1\n"
    assert extract_code("def f(): return 1") == "def f(): return 1"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the sandbox needs Linux")
def test_python_tests_runs_candidates_in_the_sandbox():
    from rest.rewards.sandbox import Sandbox, SandboxConfig

    box = Sandbox(SandboxConfig(wall_seconds=2.5, cpu_seconds=1, memory_bytes=256 << 20, workers=2))
    tests = "assert square(3) == 9\nassert square(-2) == 4\n"
    cands = ["```python\ndef square(x):\n    return x * x\n```",      # fenced, right
             "def square(x):\n    return 2 * x\n",                    # wrong
             "import time\ntime.sleep(100)\n",                        # hangs
             "import socket\nsocket.create_connection(('127.0.0.1', 9), timeout=1)\n"]  # network
    v = python_tests_with_reasons(_n(4), cands, [tests] * 4, sandbox=box)
    assert [x.score for x in v] == [1.0, 0.0, 0.0, 0.0]
    assert [x.reason for x in v] == ["ok", "tests_failed", "timeout", "forbidden"]
    assert python_tests(_n(1), ["def square(x):\n    return x ** 2\n"], [tests], sandbox=box) == [1.0]
