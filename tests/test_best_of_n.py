"""Best-of-N estimate: unbiased over random m-subsets, independent of the order samples come in."""
import itertools
import random

import pytest

from rest.steps.evaluate import best_of_table, expected_best_of, smallest_n_reaching


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


def test_smallest_n_reaching_searches_every_n():
    sharp = [[0.5] * 8, [0.6] * 8]                      # every sample equal: best-of-N is flat
    broad = [[0.0] * 7 + [1.0], [0.0] * 7 + [1.0]]      # one good sample in eight
    assert smallest_n_reaching(sharp, 0.55) == 1
    assert smallest_n_reaching(sharp, 0.56) is None
    target = best_of_table(broad).mean(axis=0)[8 - 1]
    assert target == 1.0
    assert smallest_n_reaching(broad, 0.5) == 4         # C(7,4)/C(8,4) = 1/2 of 4-subsets miss it


def test_best_of_n_reports_n_itself_and_is_order_free(tiny_policy):
    """best_of_n on a real (tiny) policy: the curve ends at N even when N is not a power of two."""
    from rest.steps.evaluate import best_of_n
    from rest.model.policy import load_policy
    from rest.rewards.metrics import get_reward

    model, tok = load_policy(tiny_policy)
    rows = [{"source": "Hallo Welt", "target": "hello world"}, {"source": "Das Haus", "target": "the house"}]
    r = best_of_n(model, tok, rows, get_reward("chrf"), 6, seed=1, keep_rewards=True)
    assert list(r["best_of_n_curve"]) == ["1", "2", "4", "6"]
    assert r["best_of_n_reward"] == r["best_of_n_curve"]["6"] == pytest.approx(
        sum(max(v) for v in r["best_of_n_rewards"]) / 2)
    assert r["best_of_n_curve"]["1"] == pytest.approx(sum(sum(v) / 6 for v in r["best_of_n_rewards"]) / 2)
