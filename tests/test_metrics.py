"""Golden numbers for the evaluation arithmetic (hand-computed)."""
import math

import pytest

from utils.metrics import cut_at_next_turn, diversity, mean_and_se, paired_difference, rep_n


def test_rep_n_and_diversity_golden():
    tokens = "the cat sat on the cat sat".split()
    # bigrams: the-cat, cat-sat, sat-on, on-the, the-cat, cat-sat -> 6 total, 4 unique
    assert rep_n(tokens, 2) == pytest.approx(100 * (1 - 4 / 7))
    # trigrams: 5 total, 4 unique (the-cat-sat twice)
    assert rep_n(tokens, 3) == pytest.approx(100 * (1 - 4 / 6))
    # 4-grams: 4 total, all unique
    assert rep_n(tokens, 4) == pytest.approx(100 * (1 - 4 / 5))
    assert diversity(tokens) == pytest.approx((4 / 7) * (4 / 6) * (4 / 5))


def test_rep_n_of_short_text():
    assert rep_n(["hello"], 2) == pytest.approx(100.0)  # no bigram: 1 - 0 / 1
    assert diversity(["hello"]) == pytest.approx(0.0)


def test_cut_at_next_turn_drops_the_next_user_or_human_turn_and_strips():
    assert cut_at_next_turn("Sure, here it is.\nUser: and more?") == "Sure, here it is."
    assert cut_at_next_turn(" fine \n\nHuman: next") == "fine"
    assert cut_at_next_turn("no marker") == "no marker"


def test_mean_se_and_paired_difference():
    mean, se = mean_and_se([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5 and se == pytest.approx(math.sqrt(5 / 3 / 4))
    diff, diff_se = paired_difference([2.0, 3.0, 5.0], [1.0, 1.0, 2.0])
    assert diff == pytest.approx(2.0) and diff_se == pytest.approx(math.sqrt(1 / 3))
    with pytest.raises(ValueError):
        paired_difference([1.0], [1.0, 2.0])
