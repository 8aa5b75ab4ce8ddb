"""Verifiable rewards: exact match, numeric answer, regex, Python unit tests.

Each reward has the project's reward signature and returns one score in [0, 1] per
candidate (binary here, as ReST-EM wants)::

    exact_match(sources, candidates, references) -> list[float]

Options are keyword-only (``exact_match(s, c, r, case_sensitive=True)``); bind them
with :func:`make_reward` to get a plain three-argument function for a registry. Every
reward also has a ``*_with_reasons`` twin returning :class:`Verdict` objects (score,
reason, detail), and :func:`score_with_reasons` dispatches by name, so a caller can log
*why* a candidate got 0 (no number found? wrong answer? timeout in the sandbox?).

Final-answer extraction (:func:`extract_final`) is shared by ``exact_match`` and
``numeric``: the text after the last answer marker (``|`` as in the bundled arithmetic
task, ``####`` as in GSM8K), else the whole text (``exact_match``) or its last number
(``numeric``). The reference goes through the same extraction, so a reference may be a
bare answer ("432") or a full worked solution.
"""
from __future__ import annotations

import functools
import math
import re
import unicodedata
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, Sequence

__all__ = ["Verdict", "extract_final", "normalize", "parse_number", "exact_match", "exact_match_with_reasons",
           "numeric", "numeric_with_reasons", "regex", "regex_with_reasons", "python_tests",
           "python_tests_with_reasons", "extract_code", "score_with_reasons", "make_reward", "REWARDS",
           "DEFAULT_MARKERS"]

#: Answer markers, tried in order; the text after the *last* occurrence of the first one
#: present is the final answer.
DEFAULT_MARKERS = ("####", "|")

#: Candidates longer than this are not matched against a regex (bounds backtracking time).
MAX_REGEX_CHARS = 10_000


@dataclass(frozen=True)
class Verdict:
    """One candidate's score and why: ``reason`` is a short code, ``detail`` a human note."""

    score: float
    reason: str
    detail: str = ""


def _check_lengths(sources, candidates, references) -> None:
    if not (len(sources) == len(candidates) == len(references)):
        raise ValueError(f"reward needs parallel lists: {len(sources)} sources, {len(candidates)} candidates, "
                         f"{len(references)} references; pass one source and one reference per candidate")


# --------------------------------------------------------------------------------------
# Extraction and normalisation
# --------------------------------------------------------------------------------------
def extract_final(text: str, markers: Sequence[str] = DEFAULT_MARKERS) -> tuple[str, bool]:
    """(final answer text, whether a marker was found).

    The answer is what follows the last occurrence of the first marker in ``markers``
    that occurs in ``text``; without any marker it is the whole text.
    """
    for m in markers:
        if m and m in text:
            return text.rsplit(m, 1)[1], True
    return text, False


def normalize(text: str, case_sensitive: bool = False, strip_period: bool = True) -> str:
    """Unicode NFKC, whitespace collapsed and stripped, casefolded unless ``case_sensitive``,
    trailing periods removed when ``strip_period``."""
    text = " ".join(unicodedata.normalize("NFKC", text).split())
    if strip_period:
        text = text.rstrip(".").rstrip()
    return text if case_sensitive else text.casefold()


_NUMBER = re.compile(r"""
    (?<![\w.])                                 # not glued to a word or to another number
    [-+\u2212]?                                # sign (ASCII or Unicode minus)
    (?: (?: \d{1,3}(?:,\d{3})+(?!\d) | \d+ )   # integer part, optional thousands commas
        (?: \.\d+ )?                            # decimals
      | \.\d+ )                                 # or a bare fraction part: .5
    (?: [eE][-+]?\d+ )?                         # exponent
    (?: /\d+ )?                                 # a simple fraction: 3/4
    """, re.VERBOSE)


def _numbers(text: str) -> list[str]:
    return [m.group(0) for m in _NUMBER.finditer(text)]


def parse_number(text: str, markers: Sequence[str] = DEFAULT_MARKERS) -> float | None:
    """The final number of ``text``: the first number after the last answer marker, else the
    last number in the text; ``None`` when there is none.

    Understands signs (also U+2212), thousands commas (``1,234``), decimals, exponents,
    simple fractions (``3/4``) and a trailing ``%`` is ignored (``50%`` is 50).
    """
    answer, marked = extract_final(text, markers)
    found = _numbers(answer)
    if not found:
        return None
    token = (found[0] if marked else found[-1]).replace(",", "").replace("\u2212", "-")
    try:
        if "/" in token:
            num, den = token.split("/")
            return float(Fraction(int(float(num)), int(den))) if int(den) else None
        value = float(token)
    except (ValueError, ZeroDivisionError, OverflowError):
        return None
    return value if math.isfinite(value) else None


# --------------------------------------------------------------------------------------
# Rewards
# --------------------------------------------------------------------------------------
def exact_match_with_reasons(sources, candidates, references, *, case_sensitive: bool = False,
                             strip_period: bool = True, markers: Sequence[str] = DEFAULT_MARKERS,
                             require_marker: bool = False) -> list[Verdict]:
    """1 when the candidate's final answer equals the reference's after :func:`normalize`.

    ``require_marker``: a candidate without an answer marker scores 0 (reason
    ``no_marker``), e.g. to insist on "working | answer" output.
    """
    _check_lengths(sources, candidates, references)
    out = []
    for cand, ref in zip(candidates, references):
        c_ans, c_marked = extract_final(cand, markers)
        r_ans, _ = extract_final(ref, markers)
        c_norm, r_norm = (normalize(x, case_sensitive, strip_period) for x in (c_ans, r_ans))
        if require_marker and not c_marked:
            out.append(Verdict(0.0, "no_marker", f"no answer marker {list(markers)} in the candidate"))
        elif not c_norm:
            out.append(Verdict(0.0, "empty", "the candidate's answer is empty"))
        elif c_norm == r_norm:
            out.append(Verdict(1.0, "ok"))
        else:
            out.append(Verdict(0.0, "mismatch", f"{c_norm[:80]!r} != {r_norm[:80]!r}"))
    return out


def exact_match(sources, candidates, references, **options) -> list[float]:
    """Exact match of the final answers after normalisation; see :func:`exact_match_with_reasons`."""
    return [v.score for v in exact_match_with_reasons(sources, candidates, references, **options)]


def numeric_with_reasons(sources, candidates, references, *, rel_tol: float = 1e-6, abs_tol: float = 1e-9,
                         markers: Sequence[str] = DEFAULT_MARKERS, require_marker: bool = False) -> list[Verdict]:
    """1 when the candidate's final number is within ``rel_tol`` (relative) or ``abs_tol``
    (absolute) of the reference's (:func:`parse_number` on both)."""
    _check_lengths(sources, candidates, references)
    if rel_tol < 0 or abs_tol < 0:
        raise ValueError(f"tolerances must be >= 0 (got rel_tol={rel_tol}, abs_tol={abs_tol})")
    out = []
    for cand, ref in zip(candidates, references):
        r = parse_number(ref, markers)
        if r is None:
            out.append(Verdict(0.0, "bad_reference", f"no number in the reference {ref[:80]!r}"))
            continue
        if require_marker and not extract_final(cand, markers)[1]:
            out.append(Verdict(0.0, "no_marker", f"no answer marker {list(markers)} in the candidate"))
            continue
        c = parse_number(cand, markers)
        if c is None:
            out.append(Verdict(0.0, "no_number", "no number in the candidate's answer"))
        elif math.isclose(c, r, rel_tol=rel_tol, abs_tol=abs_tol):
            out.append(Verdict(1.0, "ok"))
        else:
            out.append(Verdict(0.0, "wrong_number", f"{c:g} != {r:g}"))
    return out


def numeric(sources, candidates, references, **options) -> list[float]:
    """Final-number match with tolerance; see :func:`numeric_with_reasons`."""
    return [v.score for v in numeric_with_reasons(sources, candidates, references, **options)]


@functools.lru_cache(maxsize=256)
def _compiled(pattern: str, flags: int) -> re.Pattern:
    return re.compile(pattern, flags)


def regex_with_reasons(sources, candidates, references, *, pattern: str | None = None, flags: int = 0,
                       strip: bool = True) -> list[Verdict]:
    """1 when the whole candidate matches a regular expression (``re.fullmatch``).

    Without ``pattern`` the reference *is* the pattern. With one, ``{reference}`` and
    ``{source}`` in it are replaced by the escaped reference/source, e.g.
    ``pattern=r"The answer is {reference}\\.?"``. Literal braces in such a pattern are
    doubled (``\\d{{3}}``), as in ``str.format``; a pattern without either placeholder is
    used as written. Candidates over :data:`MAX_REGEX_CHARS` score 0 (``too_long``).
    """
    _check_lengths(sources, candidates, references)
    out = []
    for src, cand, ref in zip(sources, candidates, references):
        if pattern is None:
            pat = ref
        elif "{reference}" in pattern or "{source}" in pattern:
            pat = pattern.format(reference=re.escape(ref), source=re.escape(src))
        else:
            pat = pattern
        text = cand.strip() if strip else cand
        if len(text) > MAX_REGEX_CHARS:
            out.append(Verdict(0.0, "too_long", f"{len(text)} characters, over {MAX_REGEX_CHARS}"))
            continue
        try:
            rx = _compiled(pat, flags)
        except re.error as e:
            out.append(Verdict(0.0, "bad_pattern", f"{pat[:80]!r}: {e}"))
            continue
        if rx.fullmatch(text):
            out.append(Verdict(1.0, "ok"))
        else:
            out.append(Verdict(0.0, "no_match", f"{text[:80]!r} does not match {pat[:80]!r}"))
    return out


def regex(sources, candidates, references, **options) -> list[float]:
    """Full regular-expression match; see :func:`regex_with_reasons`."""
    return [v.score for v in regex_with_reasons(sources, candidates, references, **options)]


_FENCE = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)


def extract_code(text: str) -> str:
    """The program in a candidate: the first fenced ```python block if there is one (models
    often wrap code in Markdown), else the text itself."""
    m = _FENCE.search(text)
    return m.group(1) if m else text


def python_tests_with_reasons(sources, candidates, references, *, sandbox=None, config=None,
                              workers: int | None = None, fenced: bool = True) -> list[Verdict]:
    """1 when the candidate program passes the reference's unit tests (``assert`` lines that
    call it), run in a separate sandboxed process per candidate (see :mod:`sandbox`).

    ``sandbox``: a ``Sandbox`` to reuse; else one is built from ``config`` (a
    ``SandboxConfig``; defaults when None). ``fenced``: take the program from a Markdown
    code fence when the candidate has one. Reasons are the sandbox's (``ok``,
    ``tests_failed``, ``timeout``, ``memory``, ``forbidden``, ...).
    """
    _check_lengths(sources, candidates, references)
    if sandbox is None:
        from .sandbox import Sandbox  # the one link between these modules; moves with them
        sandbox = Sandbox(config)
    programs = [extract_code(c) if fenced else c for c in candidates]
    results = sandbox.run_many(list(zip(programs, references)), workers=workers)
    return [Verdict(1.0 if r.passed else 0.0, r.reason, r.detail[-500:]) for r in results]


def python_tests(sources, candidates, references, **options) -> list[float]:
    """Unit-test pass/fail in the sandbox; see :func:`python_tests_with_reasons`."""
    return [v.score for v in python_tests_with_reasons(sources, candidates, references, **options)]


#: name -> (scores, verdicts)
REWARDS: dict[str, tuple[Callable[..., list[float]], Callable[..., list[Verdict]]]] = {
    "exact_match": (exact_match, exact_match_with_reasons),
    "numeric": (numeric, numeric_with_reasons),
    "regex": (regex, regex_with_reasons),
    "python_tests": (python_tests, python_tests_with_reasons),
}


def _lookup(name: str):
    if name not in REWARDS:
        raise ValueError(f"unknown verifiable reward {name!r}; choose one of {', '.join(sorted(REWARDS))}")
    return REWARDS[name]


def score_with_reasons(name: str, sources, candidates, references, **options) -> list[Verdict]:
    """Run the reward called ``name`` and return a :class:`Verdict` per candidate."""
    return _lookup(name)[1](sources, candidates, references, **options)


def make_reward(name: str, **options) -> Callable[[Sequence[str], Sequence[str], Sequence[str]], list[float]]:
    """A plain ``(sources, candidates, references) -> list[float]`` with ``options`` bound,
    e.g. ``make_reward("numeric", rel_tol=1e-3)``. Options are checked now, not at scoring."""
    fn = _lookup(name)[0]
    try:  # fail early on a misspelt option, with the reward's own error
        fn([], [], [], **options)
    except TypeError as e:
        raise ValueError(f"reward {name!r}: {e}") from None
    bound = functools.partial(fn, **options)
    functools.update_wrapper(bound, fn)
    bound.__name__ = name
    return bound
