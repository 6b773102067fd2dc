"""The sequential (bias-corrected) Elo estimate, 95% interval and LOS of an SPRT, against fishtest.

Reference numbers:
- PINNED: fishtest's own tests (server/tests/test_stats_sprt.py, issue 2571), which pin its
  `sprt.analytics()` for pentanomial tests in normalized Elo [0, 2], to 3 decimals.
- COMPUTED: fishtest's `stats/sprt.py` `sprt(...).set_state(results).analytics()` (with its
  `brownian.py` and `LLRcalc.py`, as stored at commit 07bf1052), run with scipy on the result sets
  of fishtest's stat_util examples and of tests/unit/test_sprt.py; rounded to 4 decimals. That version
  still returns the window's edge (1000) for ISSUE_PENT's estimate, the bug issue 2571 fixed; for
  that case the pinned numbers of the fixed version are the reference.
"""
import math

import pytest

from orchestrator.stats import brownian
from orchestrator.stats.brownian import outcome_cdf
from orchestrator.stats.sprt import (ELO_LIMIT, NELO_PER_T, SprtParams, elo_estimate, score_to_elo,
                                     sequential_estimate, sprt)

ISSUE_PENT = [1, 20, 300, 900, 779]  # fishtest issue 2571: a strong pass far beyond the bounds
WELL_POSED = [[1, 60, 500, 1200, 500], [1, 60, 500, 1200, 600], [1, 60, 500, 1200, 700]]

PINNED = [  # pentanomial, elo, (low, high); normalized Elo, bounds [0, 2]
    ([1, 60, 500, 1200, 600], 188.3595, (170.7252, 214.8484)),
    (ISSUE_PENT, 245.4729, (223.6370, 289.7981)),
]

COMPUTED = [  # model, elo0, elo1, results (low to high), elo, (low, high), LOS, clamped
    ("logistic", -3, 1, [10789, 19328, 33806, 19402, 10543], -0.9925, (-3.4885, 1.4886), 0.188035, False),
    ("logistic", 0.2, 0.9, [39, 2226, 31451, 2412, 40], 0.8652, (0.1683, 1.5407), 0.992002, False),
    ("normalized", 0.764, 3.439, [39, 2226, 31451, 2412, 40], 0.8652, (0.1683, 1.5407), 0.992000, False),
    ("normalized", 0, 2, [365, 16618, 36229, 16974, 390], 0.9321, (-0.0514, 1.8782), 0.968675, False),
    ("logistic", 0, 2, [57030, 106593, 57433], 0.8665, (-0.3792, 2.2391), 0.917315, False),
    ("logistic", 0, 30, [3, 5, 10, 4, 2], -21.7431, (-119.7899, 54.6114), 0.284538, False),
    ("logistic", 0, 50, [20, 10, 60], 155.8479, (62.1513, 345.2106), 0.999651, True),
    ("logistic", -50, 0, [60, 10, 20], -155.8479, (-345.2106, -62.1513), 0.000349023, True),
    ("normalized", 0, 30, [10, 4, 5, 2, 1], -170.3875, (-1000.0, -87.6958), 2.37865e-06, False),
    ("normalized", 0, 2, [0, 0, 1, 5, 994], 1000.0, (926.5508, 1000.0), 1.0, True),
]


def _naive_elo(results):
    return elo_estimate(results)[0]


@pytest.mark.parametrize("penta, elo, interval", PINNED)
def test_fishtests_pinned_numbers(penta, elo, interval):
    estimate = sequential_estimate(SprtParams(0, 2, elo_model="normalized"), penta)
    assert estimate.elo == pytest.approx(elo, abs=1e-3)
    assert estimate.elo_ci95 == pytest.approx(interval, abs=1e-3)
    assert estimate.elo < ELO_LIMIT and estimate.clamped


@pytest.mark.parametrize("model, elo0, elo1, results, elo, interval, los, clamped", COMPUTED)
def test_fishtests_computed_numbers(model, elo0, elo1, results, elo, interval, los, clamped):
    estimate = sequential_estimate(SprtParams(elo0, elo1, elo_model=model), results)
    assert estimate.elo == pytest.approx(elo, abs=1e-4)
    assert estimate.elo_ci95 == pytest.approx(interval, abs=1e-4)
    assert estimate.los == pytest.approx(los, rel=1e-5, abs=1e-9)
    assert estimate.clamped is clamped


@pytest.mark.parametrize("penta", [ISSUE_PENT, *WELL_POSED])
def test_the_estimate_does_not_depend_on_the_elo_model_that_states_the_same_bounds(penta):
    # fishtest issue 2571: normalized bounds, and the logistic bounds they mean for these results
    # (through the per-game spread of the pentanomial), give the same estimate.
    total = sum(penta)
    mean = sum(i / 4 * count for i, count in enumerate(penta)) / total
    sigma = math.sqrt(2 * sum(count * (i / 4 - mean) ** 2 for i, count in enumerate(penta)) / total)
    logistic = [score_to_elo(nelo / NELO_PER_T * sigma + 0.5) for nelo in (0, 2)]
    normalized = sequential_estimate(SprtParams(0, 2, elo_model="normalized"), penta)
    same = sequential_estimate(SprtParams(*logistic, elo_model="logistic"), penta)
    assert same.elo == pytest.approx(normalized.elo, abs=1e-6)
    assert same.elo_ci95 == pytest.approx(normalized.elo_ci95, abs=1e-6)


def test_an_interval_with_no_upper_crossing_ends_at_the_window():
    estimate = sequential_estimate(SprtParams(0, 2, elo_model="normalized"), [0, 0, 1, 5, 994])
    assert estimate.elo_ci95[1] == ELO_LIMIT and estimate.clamped


PROPERTY_CASES = [(model, elo0, elo1, results) for model, elo0, elo1, results, *_ in COMPUTED] + [
    ("logistic", 0, 100, [2, 2, 6]),
    ("logistic", 0, 5, [30, 40, 30]),
    ("normalized", -10, 0, [4, 9, 14, 6, 1]),
    ("logistic", 0, 10, [0, 0, 0, 0, 7]),
]


@pytest.mark.parametrize("model, elo0, elo1, results", PROPERTY_CASES)
def test_elo_in_interval_and_los_agrees_with_the_sign(model, elo0, elo1, results):
    estimate = sequential_estimate(SprtParams(elo0, elo1, elo_model=model), results)
    low, high = estimate.elo_ci95
    assert -ELO_LIMIT <= low <= estimate.elo <= high <= ELO_LIMIT
    assert 0 <= estimate.los <= 1
    if abs(estimate.elo) > 1e-6 and 1e-12 < estimate.los < 1 - 1e-12:
        assert (estimate.los > 0.5) == (estimate.elo > 0)


def test_an_early_stop_for_h1_is_corrected_downward_and_for_h0_upward():
    # Stopping as soon as the LLR crosses a bound favours lucky starts: the plain estimate of a test
    # that passed early is too high, of one that failed early too low.
    passed = sprt(SprtParams(0, 50), wdl=(60, 10, 20))
    assert passed.decision == "H1" and passed.elo < _naive_elo([20, 10, 60])
    failed = sprt(SprtParams(-50, 0), wdl=(20, 10, 60))
    assert failed.decision == "H0" and failed.elo > _naive_elo([60, 10, 20])
    # In the middle of the band nothing has been selected for: both agree.
    running = sprt(SprtParams(0, 30, elo_model="logistic"), pentanomial=[3, 5, 10, 4, 2])
    assert running.decision is None and running.elo == pytest.approx(_naive_elo([3, 5, 10, 4, 2]), abs=0.01)


def test_sprt_results_carry_the_sequential_estimate():
    params = SprtParams(0, 50)
    result = sprt(params, wdl=(60, 10, 20))
    estimate = sequential_estimate(params, [20, 10, 60])
    assert (result.elo, result.elo_ci95, result.los, result.clamped) == (
        estimate.elo, estimate.elo_ci95, estimate.los, estimate.clamped)
    assert sprt(params).clamped is False


def test_confidence_sets_the_interval():
    params, results = SprtParams(-3, 1), [10789, 19328, 33806, 19402, 10543]
    wide, narrow = sequential_estimate(params, results, 0.99), sequential_estimate(params, results, 0.5)
    assert wide.elo_ci95[0] < narrow.elo_ci95[0] < narrow.elo < narrow.elo_ci95[1] < wide.elo_ci95[1]
    with pytest.raises(ValueError):
        sequential_estimate(params, results, 1.0)


# --- the Brownian motion ----------------------------------------------------------------------------
A, B = math.log(0.05 / 0.95), math.log(0.95 / 0.05)


def test_both_formulas_agree_where_both_hold():
    # Parameters where the exact series takes over from the one-reflection approximation.
    for mu, sigma2, time, y in [(0.01, 0.02, 20.0, 0.5), (-0.02, 0.05, 10.0, -1.0), (0.0, 0.03, 5.0, 2.0)]:
        exact = brownian._eigen_series(A, B, mu, sigma2, time, y)
        approximate = brownian._one_reflection(A, B, mu, sigma2, time, y)
        assert exact == pytest.approx(approximate, abs=1e-6)


def test_outcomes_are_ordered_from_early_fail_to_early_pass():
    # Long after any test would have stopped, "worse than passing at T" is "failing at all":
    # gambler's ruin, (1 - e^(2 gamma b)) / (1 - e^(2 gamma (b - a))) with gamma = mu / sigma2.
    mu, sigma2 = 0.002, 0.01
    gamma = mu / sigma2
    ruin = (1 - math.exp(2 * gamma * B)) / (1 - math.exp(2 * gamma * (B - A)))
    assert outcome_cdf(A, B, mu, sigma2, 1e5, B) == pytest.approx(ruin, abs=1e-9)
    # At one time, the higher the LLR the better; an early pass beats a late one, a late fail an early one.
    values = [outcome_cdf(A, B, mu, sigma2, 400.0, y) for y in (A, -1.0, 0.0, 1.0, B)]
    assert values == sorted(values) and 0 < values[0] < values[-1] < 1
    assert outcome_cdf(A, B, mu, sigma2, 100.0, B) > outcome_cdf(A, B, mu, sigma2, 800.0, B)
    assert outcome_cdf(A, B, mu, sigma2, 100.0, A) < outcome_cdf(A, B, mu, sigma2, 800.0, A)


def test_no_drift_is_symmetric():
    assert outcome_cdf(A, B, 0.0, 0.02, 300.0, 0.0) == pytest.approx(0.5, abs=1e-9)


@pytest.mark.parametrize("args", [(1.0, 2.0, 0.0, 1.0, 1.0, 1.5),  # bounds on one side of the start
                                  (A, B, 0.0, 0.0, 1.0, 0.0),  # no variance
                                  (A, B, 0.0, 1.0, 1.0, 4.0)])  # y beyond a bound
def test_bad_brownian_arguments_are_refused(args):
    with pytest.raises(ValueError):
        outcome_cdf(*args)


def test_an_abtest_reports_the_sequential_numbers_and_the_clamped_flag():
    from orchestrator.play.evaluation_runs import ABTest
    result = sprt(SprtParams(0, 50), wdl=(60, 10, 20))
    view = ABTest._view(result, [60, 10, 20], [0] * 5, 90)
    assert (view["elo"], view["elo_ci95"], view["los"]) == (result.elo, list(result.elo_ci95), result.los)
    assert view["clamped"] is True
