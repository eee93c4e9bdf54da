"""Agreement statistics against figures worked out by hand on a six-request fixture."""

import pytest

from services.aggregator.agreement.stats import (
    Pair,
    cohen_kappa,
    exact_match_rate,
    mean_difference,
    most_moved,
    weighted_kappa,
)

# Six requests on a 1-5 scale, old version (first) against new version (second).
FIRST = [1, 2, 3, 4, 5, 3]
SECOND = [1, 3, 3, 5, 4, 2]
PAIRS = [Pair(f"r{n}", a, b) for n, (a, b) in enumerate(zip(FIRST, SECOND, strict=True), 1)]


def test_mean_difference_and_its_t_interval():
    # differences 0, 1, 0, 1, -1, -1: mean 0, sample variance 4/5, standard error sqrt(0.8/6)
    # = 0.365148; t(0.975, 5 df) = 2.570582 (tables), so the half-width is 0.938651.
    result = mean_difference(PAIRS)
    assert result is not None
    assert result.count == 6
    assert result.mean == pytest.approx(0.0)
    assert result.low == pytest.approx(-0.938651, abs=1e-3)
    assert result.high == pytest.approx(0.938651, abs=1e-3)


def test_a_shift_shows_in_the_mean_difference():
    shifted = [Pair(p.request_id, p.first, p.first + 1) for p in PAIRS]
    result = mean_difference(shifted)
    assert result is not None and result.mean == pytest.approx(1.0)
    # every difference is 1: no spread, the interval is the point itself
    assert result.low == pytest.approx(1.0) and result.high == pytest.approx(1.0)


def test_one_pair_has_no_interval_and_none_has_no_mean():
    single = mean_difference(PAIRS[:1])
    assert single is not None and single.low is None and single.high is None
    assert mean_difference([]) is None


def test_exact_match_rate():
    # (1,1) and (3,3) match: 2 of 6
    assert exact_match_rate(PAIRS) == pytest.approx(2 / 6)
    assert exact_match_rate([]) is None


def test_cohen_kappa_on_pass_fail():
    # pass = score >= 3. first: F F T T T T, second: F T T T T F.
    # observed agreement 4/6; each passes 4/6, so chance = (2/3)^2 + (1/3)^2 = 5/9;
    # kappa = (6/9 - 5/9) / (4/9) = 0.25
    first = [score >= 3 for score in FIRST]
    second = [score >= 3 for score in SECOND]
    assert cohen_kappa(first, second) == pytest.approx(0.25)


def test_cohen_kappa_is_undefined_when_both_always_pass():
    assert cohen_kappa([True, True], [True, True]) is None
    assert cohen_kappa([], []) is None
    with pytest.raises(ValueError):
        cohen_kappa([True], [True, False])


def test_weighted_kappa_with_quadratic_weights():
    # Four disagreements, each one step apart: weight 1/16 each, sum 0.25.
    # Both marginals are 1,1,2,1,1 over categories 1..5 (mean at the third); the sum over all
    # cells of (i-j)^2 * r_i * c_j = 2 * 6 * 10 = 120, so the chance-expected weighted
    # disagreement is 120 / 16 / 6 = 1.25, and kappa_w = 1 - 0.25 / 1.25 = 0.8.
    assert weighted_kappa(PAIRS, [1, 2, 3, 4, 5]) == pytest.approx(0.8)


def test_weighted_kappa_is_one_for_perfect_agreement_and_negative_for_reversal():
    same = [Pair(p.request_id, p.first, p.first) for p in PAIRS]
    assert weighted_kappa(same, [1, 2, 3, 4, 5]) == pytest.approx(1.0)
    reversed_ = [Pair(p.request_id, p.first, 6 - p.first) for p in PAIRS]
    kappa = weighted_kappa(reversed_, [1, 2, 3, 4, 5])
    assert kappa is not None and kappa < 0


def test_weighted_kappa_bins_a_float_scale_into_its_categories():
    tenths = [i / 10 for i in range(11)]
    pairs = [Pair("a", 0.31, 0.29), Pair("b", 0.9, 0.88), Pair("c", 0.52, 0.1)]
    binned = [Pair("a", 0.3, 0.3), Pair("b", 0.9, 0.9), Pair("c", 0.5, 0.1)]
    assert weighted_kappa(pairs, tenths) == pytest.approx(weighted_kappa(binned, tenths))


def test_weighted_kappa_rejects_a_bad_scale_and_is_undefined_on_one_category():
    with pytest.raises(ValueError):
        weighted_kappa(PAIRS, [5])
    with pytest.raises(ValueError):
        weighted_kappa(PAIRS, [5, 1])
    assert weighted_kappa([Pair("a", 3, 3), Pair("b", 3, 3)], [1, 2, 3, 4, 5]) is None


def test_most_moved_orders_by_size_then_request_id():
    moved = most_moved(PAIRS, 3)
    assert [pair.request_id for pair in moved] == ["r2", "r4", "r5"]
