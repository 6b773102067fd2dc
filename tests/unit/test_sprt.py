"""SPRT against fishtest's formulas and the worked numbers that fastchess checks its fishtest port
against (Stats(w, l, d) and Stats(LL, LD, WL, DD, WD, WW); fishtest's pentanomial is
[LL, LD, WL+DD, WD, WW]); LLRs agree to the two decimals given (to 0.1% for the lopsided ones)."""
import math

import pytest

from orchestrator.stats.pentanomial import pentanomial, trinomial
from orchestrator.stats.sprt import SprtParams, elo_estimate, llr_logistic, sprt

TRINOMIAL = [  # model, elo0, elo1, (wins, losses, draws), LLR
    ("normalized", 0, 2, (36433, 36027, 68692), 0.92),
    ("normalized", -1.75, 0.25, (10871, 10650, 20431), 2.30),
    ("normalized", 0, 10, (4250, 0, 0), 120.56),
    ("logistic", 0.5, 2.5, (21404, 21184, 40708), -1.57),
    ("logistic", 0, 2, (57433, 57030, 106593), -2.59),
]
PENTANOMIAL = [  # model, elo0, elo1, (LL, LD, WL, DD, WD, WW), LLR
    ("normalized", 0, 2, (365, 16618, 36029, 200, 16974, 390), 2.25),
    ("normalized", -1.75, 0.25, (127, 4883, 10311, 401, 5150, 104), 3.01),
    ("normalized", 0, 5, (0, 0, 0, 0, 0, 5550), 111.82),
    ("logistic", 0.5, 2.5, (223, 9863, 20279, 1000, 10037, 246), -3.07),
    ("logistic", 0, 2, (871, 26175, 55003, 980, 26678, 821), -4.98),
]


@pytest.mark.parametrize("model, elo0, elo1, wld, expected", TRINOMIAL)
def test_trinomial_llr_matches_worked_numbers(model, elo0, elo1, wld, expected):
    wins, losses, draws = wld
    result = sprt(SprtParams(elo0, elo1, elo_model=model), wdl=(wins, draws, losses))
    assert result.llr == pytest.approx(expected, abs=0.01, rel=1e-3)


@pytest.mark.parametrize("model, elo0, elo1, counts, expected", PENTANOMIAL)
def test_pentanomial_llr_matches_worked_numbers(model, elo0, elo1, counts, expected):
    ll, ld, wl, dd, wd, ww = counts
    result = sprt(SprtParams(elo0, elo1, elo_model=model), pentanomial=(ll, ld, wl + dd, wd, ww))
    assert result.llr == pytest.approx(expected, abs=0.01, rel=1e-3)


def test_bounds_and_decisions():
    params = SprtParams(0, 5, alpha=0.05, beta=0.05)
    assert params.lower_bound == pytest.approx(math.log(0.05 / 0.95)) == pytest.approx(-2.944, abs=1e-3)
    assert params.upper_bound == pytest.approx(math.log(0.95 / 0.05))
    asymmetric = SprtParams(0, 5, alpha=0.01, beta=0.2)
    assert asymmetric.lower_bound == pytest.approx(math.log(0.2 / 0.99))
    assert asymmetric.upper_bound == pytest.approx(math.log(0.8 / 0.01))
    # fishtest's own example run: Elo about -0.8, nearer elo1 = 1 than elo0 = -3, so LLR > 0, not yet decided
    example = sprt(SprtParams(-3, 1), pentanomial=[10789, 19328, 33806, 19402, 10543])
    assert -1 < example.elo < 0 and 0 < example.llr < example.upper_bound and example.decision is None
    strong = sprt(SprtParams(0, 50), wdl=(60, 10, 20))
    assert strong.decision == "H1" and strong.llr >= strong.upper_bound
    undecided = sprt(SprtParams(0, 50), wdl=(3, 2, 3))
    assert undecided.decision is None and undecided.lower_bound < undecided.llr < undecided.upper_bound


def test_no_games_is_no_evidence():
    result = sprt(SprtParams(0, 10))
    assert (result.llr, result.decision, result.elo, result.elo_ci95, result.los) == (0.0, None, None, None, None)


def test_llr_is_antisymmetric_when_the_hypotheses_swap_around_the_data():
    # The mirrored record under mirrored hypotheses gives the same LLR: the statistic sees only the data.
    a = llr_logistic(-5, 5, [30, 40, 50])
    b = llr_logistic(5, -5, [50, 40, 30])
    assert a == pytest.approx(b) and a > 0


def test_elo_estimate_is_fishtests_normal_approximation():
    # 60 wins, 20 draws, 20 losses: mean 0.7, per-game variance 0.21 - 0.7^2 + ... computed by hand
    elo, (low, high), los = elo_estimate([20, 20, 60])
    mean = 0.7
    var = (20 * 0.7 ** 2 + 20 * 0.2 ** 2 + 60 * 0.3 ** 2) / 100
    error = math.sqrt(var / 100)
    assert elo == pytest.approx(-400 * math.log10(1 / mean - 1))
    assert low == pytest.approx(-400 * math.log10(1 / (mean - 1.959964 * error) - 1), abs=1e-3)
    assert high == pytest.approx(-400 * math.log10(1 / (mean + 1.959964 * error) - 1), abs=1e-3)
    assert los == pytest.approx(0.5 * (1 + math.erf((mean - 0.5) / error / math.sqrt(2))))
    # an SPRT reports the sequential estimate instead (test_sprt_sequential.py); for an even record it is 0 too
    even = sprt(SprtParams(0, 5), wdl=(30, 40, 30))
    assert even.elo == pytest.approx(0, abs=1e-9) and even.los == pytest.approx(0.5)
    assert even.elo_ci95[0] < 0 < even.elo_ci95[1]


@pytest.mark.parametrize("bad", [dict(elo0=5, elo1=0), dict(alpha=0), dict(beta=0.7), dict(elo_model="bayes"),
                                 dict(elo1=math.inf)])
def test_bad_parameters_are_refused(bad):
    with pytest.raises(ValueError):
        SprtParams(**{"elo0": 0, "elo1": 5, **bad})


def test_bad_counts_are_refused():
    with pytest.raises(ValueError):
        sprt(SprtParams(0, 5), wdl=(1, -1, 0))
    with pytest.raises(ValueError):
        sprt(SprtParams(0, 5), pentanomial=[1, 2, 3])


def test_pentanomial_pairing():
    pairs = [(1, 1), (1, 0), (0, 1), (0.5, 0.5), (1, 0.5), (0.5, 0), (0, 0), (0.5, 1)]
    assert pentanomial(pairs) == [1, 1, 3, 2, 1]
    assert trinomial([1, 0.5, 0, 1]) == [1, 1, 2]
    with pytest.raises(ValueError):
        pentanomial([(1, 0.25)])
