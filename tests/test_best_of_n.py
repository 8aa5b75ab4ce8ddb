"""Best-of-N estimate: unbiased over random m-subsets, independent of the order samples come in."""
import itertools
import random

import pytest

from rest.evaluate import expected_best_of


def brute_force(rewards, m):
    subsets = list(itertools.combinations(rewards, m))
    return sum(max(s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n,m", [(1, 1), (4, 1), (4, 2), (6, 3), (8, 8), (7, 5)])
def test_expected_best_of_matches_all_subsets(n, m):
    rng = random.Random(n * 10 + m)
    rewards = [round(rng.random(), 2) for _ in range(n)]  # rounding makes ties
    assert expected_best_of(rewards, m) == pytest.approx(brute_force(rewards, m))


def test_expected_best_of_ignores_order_and_ends_at_max():
    rewards = [0.9, 0.7, 0.5, 0.3, 0.1]  # sorted best-first, as CTranslate2 returns samples
    assert expected_best_of(rewards, 1) == pytest.approx(0.5)  # the mean, not the first (0.9)
    assert expected_best_of(list(reversed(rewards)), 2) == pytest.approx(expected_best_of(rewards, 2))
    assert expected_best_of(rewards, 5) == 0.9


def test_expected_best_of_rejects_m_out_of_range():
    with pytest.raises(ValueError, match="1 <= m <= 3"):
        expected_best_of([0.1, 0.2, 0.3], 4)
