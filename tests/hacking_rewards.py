"""Synthetic rewards for tests, loaded through the ``module:function`` hook.

``repetition`` rewards repeated words, the failure the paper saw its learned reward model
fall for; ``length`` is a trivially reference-free reward.
"""


def repetition(sources, candidates, references):
    """Share of a candidate's words that repeat an earlier word (0 = none, near 1 = one word over and over)."""
    out = []
    for c in candidates:
        words = c.split()
        out.append(1.0 - len(set(words)) / len(words) if words else 0.0)
    return out


def length(sources, candidates, references):
    """Candidate length relative to its source, capped at 1; needs no reference."""
    return [min(1.0, len(c.split()) / max(1, len(s.split()))) for s, c in zip(sources, candidates)]


length.reference_free = True
