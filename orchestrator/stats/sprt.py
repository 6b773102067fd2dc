"""SPRT as fishtest computes it: a generalized SPRT (GSPRT) on the multinomial of game outcomes.

Results are trinomial counts [L, D, W] of single games or pentanomial counts [LL, LD+DL, LW+DD+WL,
DW+WD, WW] of colour-swapped game pairs; every empty bucket gets 1e-3 (fishtest's regularisation),
so that the likelihood is defined from the first game on.

- `logistic` Elo: H0 and H1 fix the expected score s = 1 / (1 + 10^(-elo/400)). The LLR is
  N * sum_i p_i log(p1_i / p0_i), where p0 and p1 are the maximum-likelihood distributions with
  expectation s0 and s1 given the empirical distribution p (fishtest's `LLR_logistic`; they solve
  the secular equation sum_i p_i (a_i - s) / (1 + x (a_i - s)) = 0).
- `normalized` Elo: H0 and H1 fix the t-value (mu - 1/2) / sigma per game, nelo = t * 800 / ln 10
  (for pairs the pair's t is sqrt(2) times the per-game one), and p0, p1 are the maximum-likelihood
  distributions with that t-value (fishtest's `LLR_normalized`, a fixed-point iteration over the
  same secular equation).
- Bounds: log(beta / (1 - alpha)) below which H0 is accepted, log((1 - beta) / alpha) above which
  H1 is; in between the test goes on.
- Elo estimate, 95% interval and LOS of an SPRT are fishtest's sequential ones (`sprt.analytics`):
  a test that stops as soon as its LLR crosses a bound overstates the Elo it stopped for (a lucky
  start ends it early for H1, an unlucky one for H0), so the plain mean-score estimate is biased.
  The LLR is modelled as a Brownian motion absorbed at the bounds (`brownian.py`), with the drift
  and variance it would have at a given Elo (fishtest's `LLR_drift_variance_alt2`); outcome_prob(elo)
  is the chance of an outcome worse than the observed one. The estimate is the Elo where that is
  1/2 (a median-unbiased estimate), the 95% interval where it is 97.5% and 2.5%, and LOS =
  outcome_prob(0), the chance that an agent of exactly equal strength would have done worse. Always
  in logistic Elo, whatever the test's model. Past a bound the motion is taken to have stopped on
  it, at the time the LLR's mean slope reached it; `clamped` tells that the LLR had overshot a
  bound by more than 3%, where that reading is rough.
- `elo_estimate` keeps fishtest's `get_elo` for a fixed number of games: the normal approximation of
  the mean score per game through the logistic curve, LOS = Phi((mu - 1/2) / standard error).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from scipy.optimize import brentq
from scipy.stats import norm

from orchestrator.stats.brownian import outcome_cdf

ELO_MODELS = ("logistic", "normalized")
NELO_PER_T = 800 / math.log(10)  # normalized Elo per unit of t-value
EMPTY_BUCKET = 1e-3
SCORE_CLAMP = 1e-3  # fishtest's elo(): a score of 0 or 1 is read as 0.001 or 0.999
T_VALUE_ITERATIONS = 10
T_VALUE_TOLERANCE = 1e-9
CONFIDENCE = 0.95
ELO_LIMIT = 1000.0  # the sequential estimate looks for Elo in [-1000, 1000] (fishtest's window)
CLAMP_MARGIN = 1.03  # fishtest flags an LLR more than 3% past a bound
# The sequential estimate samples outcome_prob outward from the plain estimate, first in steps of
# half its standard error, each step this much longer than the one before.
SCAN_GROWTH = 1.25
MIN_SCAN_STEP = 0.05  # Elo


@dataclass(frozen=True)
class SprtParams:
    elo0: float
    elo1: float
    alpha: float = 0.05
    beta: float = 0.05
    elo_model: str = "logistic"

    def __post_init__(self) -> None:
        for name in ("elo0", "elo1", "alpha", "beta"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be a finite number")
        if not self.elo0 < self.elo1:
            raise ValueError(f"elo0 ({self.elo0}) must be below elo1 ({self.elo1})")
        for name in ("alpha", "beta"):
            if not 0 < getattr(self, name) < 0.5:
                raise ValueError(f"{name} must be between 0 and 0.5")
        if self.elo_model not in ELO_MODELS:
            raise ValueError(f"elo_model must be one of {', '.join(ELO_MODELS)}")

    @property
    def lower_bound(self) -> float:
        return math.log(self.beta / (1 - self.alpha))

    @property
    def upper_bound(self) -> float:
        return math.log((1 - self.beta) / self.alpha)


@dataclass(frozen=True)
class SprtResult:
    llr: float
    lower_bound: float
    upper_bound: float
    decision: str | None  # None (go on), "H0" (elo0 accepted) or "H1" (elo1 accepted)
    elo: float | None  # logistic Elo of the tested agent; None before any game
    elo_ci95: tuple[float, float] | None
    los: float | None  # likelihood of superiority
    clamped: bool = False  # the LLR overshot a bound by over 3%: a rougher sequential estimate


def sprt(params: SprtParams, wdl: Sequence[int] | None = None, pentanomial: Sequence[int] | None = None) -> SprtResult:
    """The test's state after these results: `wdl` = (wins, draws, losses) of single games, or
    `pentanomial` of pairs (used when given, as fishtest does)."""
    if pentanomial is not None:
        results = _counts(pentanomial, 5, "pentanomial")
    elif wdl is not None:
        wins, draws, losses = _counts(wdl, 3, "wdl")
        results = [losses, draws, wins]
    else:
        results = [0, 0, 0]
    if sum(results) == 0:
        return SprtResult(0.0, params.lower_bound, params.upper_bound, None, None, None, None)
    if params.elo_model == "logistic":
        llr = llr_logistic(params.elo0, params.elo1, results)
    else:
        llr = llr_normalized(params.elo0, params.elo1, results)
    decision = "H0" if llr <= params.lower_bound else "H1" if llr >= params.upper_bound else None
    estimate = sequential_estimate(params, results)
    return SprtResult(llr, params.lower_bound, params.upper_bound, decision, estimate.elo, estimate.elo_ci95,
                      estimate.los, estimate.clamped)


def _counts(values: Sequence[int], length: int, name: str) -> list[int]:
    counts = list(values)
    if len(counts) != length or any(not isinstance(c, int) or isinstance(c, bool) or c < 0 for c in counts):
        raise ValueError(f"{name} must be {length} non-negative integers")
    return counts


# --- distributions: lists of (value, probability) ------------------------------------------------
def _pdf(results: Sequence[int]) -> tuple[float, list[tuple[float, float]]]:
    regular = [count if count else EMPTY_BUCKET for count in results]
    total = sum(regular)
    last = len(regular) - 1
    return total, [(i / last, count / total) for i, count in enumerate(regular)]


def _mean_var(pdf: Sequence[tuple[float, float]]) -> tuple[float, float]:
    mean = sum(p * a for a, p in pdf)
    return mean, sum(p * (a - mean) ** 2 for a, p in pdf)


def _secular(pdf: Sequence[tuple[float, float]]) -> float:
    """The x with sum_i p_i a_i / (1 + x a_i) = 0; the a_i must take both signs."""
    low, high = min(a for a, _ in pdf), max(a for a, _ in pdf)
    if not low < 0 < high:
        raise ValueError("the secular equation needs values of both signs")
    margin = 1e-9
    return brentq(lambda x: sum(p * a / (1 + x * a) for a, p in pdf), -1 / high + margin, -1 / low - margin)


def _mle_with_mean(pdf: Sequence[tuple[float, float]], s: float) -> list[tuple[float, float]]:
    x = _secular([(a - s, p) for a, p in pdf])
    return [(a, p / (1 + x * (a - s))) for a, p in pdf]


def _mle_with_t_value(pdf: Sequence[tuple[float, float]], ref: float, t: float) -> list[tuple[float, float]]:
    estimate = [(a, 1 / len(pdf)) for a, _ in pdf]
    for _ in range(T_VALUE_ITERATIONS):
        mean, var = _mean_var(estimate)
        sigma = math.sqrt(var)
        shifted = [(a - ref - t * sigma * (1 + ((mean - a) / sigma) ** 2) / 2, p) for a, p in pdf]
        x = _secular(shifted)
        updated = [(a, p / (1 + x * b)) for (a, p), (b, _) in zip(pdf, shifted)]
        converged = max(abs(q - r) for (_, q), (_, r) in zip(estimate, updated)) < T_VALUE_TOLERANCE
        estimate = updated
        if converged:
            break
    return estimate


def _llr(pdf: Sequence[tuple[float, float]], pdf0: Sequence[tuple[float, float]],
         pdf1: Sequence[tuple[float, float]]) -> float:
    return sum(p * (math.log(p1) - math.log(p0)) for (_, p), (_, p0), (_, p1) in zip(pdf, pdf0, pdf1))


def logistic_score(elo: float) -> float:
    return 1 / (1 + 10 ** (-elo / 400))


def llr_logistic(elo0: float, elo1: float, results: Sequence[int]) -> float:
    """GSPRT log-likelihood ratio of elo1 against elo0 in logistic Elo (results low to high)."""
    total, pdf = _pdf(results)
    s0, s1 = logistic_score(elo0), logistic_score(elo1)
    return total * _llr(pdf, _mle_with_mean(pdf, s0), _mle_with_mean(pdf, s1))


def llr_normalized(nelo0: float, nelo1: float, results: Sequence[int]) -> float:
    """GSPRT log-likelihood ratio of nelo1 against nelo0 in normalized Elo (results low to high)."""
    scale = math.sqrt(2) if len(results) == 5 else 1.0
    t0, t1 = (nelo / NELO_PER_T * scale for nelo in (nelo0, nelo1))
    total, pdf = _pdf(results)
    return total * _llr(pdf, _mle_with_t_value(pdf, 0.5, t0), _mle_with_t_value(pdf, 0.5, t1))


def score_to_elo(score: float) -> float:
    score = min(max(score, SCORE_CLAMP), 1 - SCORE_CLAMP)
    return -400 * math.log10(1 / score - 1)


def elo_estimate(results: Sequence[int]) -> tuple[float, tuple[float, float], float]:
    """(Elo, (low, high) at 95%, LOS) from trinomial or pentanomial counts, per game."""
    regular = [count if count else EMPTY_BUCKET for count in results]
    last = len(regular) - 1
    games = sum(regular) * last / 2  # a pentanomial count is a pair of games
    mean = sum(count * i / 2 for i, count in enumerate(regular)) / games
    centre = last / 2 * mean
    var = sum(count * (i / 2 - centre) ** 2 for i, count in enumerate(regular)) / games
    error = math.sqrt(var / games)
    z = norm.ppf(0.975)
    low, high = score_to_elo(mean - z * error), score_to_elo(mean + z * error)
    return score_to_elo(mean), (low, high), float(norm.cdf((mean - 0.5) / error))


# --- the sequential estimate ---------------------------------------------------------------------
@dataclass(frozen=True)
class SequentialEstimate:
    elo: float
    elo_ci95: tuple[float, float]
    los: float
    clamped: bool


class _StoppedTest:
    """An SPRT's results seen as a Brownian motion of its (approximate) LLR, for outcome_prob."""

    def __init__(self, params: SprtParams, results: Sequence[int]) -> None:
        total, pdf = _pdf(results)
        self.mean, self.var = _mean_var(pdf)
        self.a, self.b = params.lower_bound, params.upper_bound
        self.s0, self.s1 = (self._score(params.elo_model, elo, len(results)) for elo in (params.elo0, params.elo1))
        # fishtest places the motion with the quadratic approximation of the LLR (its alt2), not the
        # exact GSPRT value: then drift, variance and position come from one consistent model.
        slope, _ = self.drift_variance(self.mean)
        self.llr, self.time = total * slope, float(total)
        self.clamped = not CLAMP_MARGIN * self.a <= self.llr <= CLAMP_MARGIN * self.b
        for bound in (self.a, self.b):
            if (self.llr - bound) * bound > 0:  # past it: the motion stopped on it, earlier
                self.time, self.llr = bound / slope, bound

    def _score(self, elo_model: str, elo: float, buckets: int) -> float:
        """The expected score per game that a hypothesis means."""
        if elo_model == "logistic":
            return logistic_score(elo)
        # normalized Elo fixes the t-value; with the observed spread it fixes the score. A pair's
        # average score has half a game's variance.
        per_game_sigma = math.sqrt(self.var * (2 if buckets == 5 else 1))
        return 0.5 + elo / NELO_PER_T * per_game_sigma

    def drift_variance(self, score: float) -> tuple[float, float]:
        """The LLR's drift and variance per sample if the true score were `score`, with the observed
        variance widened by how far that is from the observed mean (the variance's MLE there)."""
        var = self.var + (score - self.mean) ** 2
        gap = self.s1 - self.s0
        return (score - (self.s0 + self.s1) / 2) * gap / var, gap * gap / var

    def outcome_prob(self, elo: float) -> float:
        """P(the test of an agent `elo` logistic Elo stronger than its opponent ends worse than this
        one: an earlier H0, a lower LLR at this time, a later H1)."""
        mu, sigma2 = self.drift_variance(logistic_score(elo))
        return outcome_cdf(self.a, self.b, mu, sigma2, self.time, self.llr)


def sequential_estimate(params: SprtParams, results: Sequence[int],
                        confidence: float = CONFIDENCE) -> SequentialEstimate:
    """fishtest's bias-corrected (Elo, interval at `confidence`, LOS) of an SPRT, in logistic Elo.

    Each is an Elo where outcome_prob crosses a level: 1/2, then (1 + confidence)/2 and
    (1 - confidence)/2. outcome_prob falls from 1 to 0 as the Elo passes the evidence, but far out
    it turns back (the widened variance there slows the drift down), so a plain bracketed root
    search over the whole window can land on the wrong branch or find no sign change at all (fishtest
    issue 2571). Sampling it outward from the plain estimate, finely near it and coarser away, and
    taking the falling crossing keeps to the meaningful branch."""
    if not 0 < confidence < 1:
        raise ValueError("confidence must be between 0 and 1")
    test = _StoppedTest(params, results)
    centre, grid = _scan_grid(test, sum(results))
    probs = [test.outcome_prob(elo) for elo in grid]
    tail = (1 - confidence) / 2
    low, elo, high = (_falling_crossing(test, centre, grid, probs, level) for level in (1 - tail, 0.5, tail))
    return SequentialEstimate(elo, (low, high), test.outcome_prob(0.0), test.clamped)


def _scan_grid(test: _StoppedTest, samples: int) -> tuple[float, list[float]]:
    """(the plain estimate, the Elo values to sample outcome_prob at, ascending)."""
    centre = min(max(score_to_elo(test.mean), -ELO_LIMIT), ELO_LIMIT)
    error = math.sqrt(test.var / samples)
    half_width = (score_to_elo(test.mean + error) - score_to_elo(test.mean - error)) / 2
    step = max(half_width / 2, MIN_SCAN_STEP)
    grid = {centre, -ELO_LIMIT, ELO_LIMIT}
    for direction in (-1, 1):
        offset, size = 0.0, step
        while abs(centre + direction * offset) < ELO_LIMIT:
            grid.add(centre + direction * offset)
            offset, size = offset + size, size * SCAN_GROWTH
    return centre, sorted(grid)


def _falling_crossing(test: _StoppedTest, centre: float, grid: Sequence[float], probs: Sequence[float],
                      level: float) -> float:
    """The Elo where outcome_prob falls through `level`, the crossing nearest `centre` if it does so
    more than once; with no such crossing, the end of the window the evidence points to
    (+limit while outcome_prob is still above `level` at the top, else -limit)."""
    best = None
    for i in range(len(grid) - 1):
        if probs[i] > level >= probs[i + 1]:
            if best is None or abs(grid[i] - centre) < abs(grid[best] - centre):
                best = i
    if best is None:
        return ELO_LIMIT if probs[-1] > level else -ELO_LIMIT
    if probs[best + 1] == level:
        return grid[best + 1]
    return float(brentq(lambda elo: test.outcome_prob(elo) - level, grid[best], grid[best + 1]))
