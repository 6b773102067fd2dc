"""Brownian motion with drift absorbed at two bounds: the continuous model of an SPRT's LLR.

The LLR of a sequential test moves like X(t) = mu t + sigma W(t), started at 0 and stopped when it
reaches the lower bound a < 0 (H0 accepted) or the upper bound b > 0 (H1 accepted); t counts the
samples (games, or pairs of games). fishtest bases its bias-corrected Elo estimate on this model
(`stats/brownian.py`, after Siegmund, "Sequential Analysis", and M. Van den Bergh's notes).

Outcomes of such a test are ordered from worst to best: an early H0, a late H0, a test still running
at time T with a low LLR, then a high one, a late H1, an early H1. `outcome_cdf(T, y)` is the
probability of an outcome worse than the observed one: at time T the LLR was y, where y = a means
the test just accepted H0, y = b that it just accepted H1, anything in between that it is running.
That probability is P(absorbed at a before T) + P(not absorbed by T and X(T) < y).
"""
from __future__ import annotations

import math

# Where the exact series converges slowly (little time relative to the width of the band) or the
# drift dominates the noise, the one-reflection approximation is both accurate and cheap; these are
# fishtest's thresholds, so that both sides pick the same formula.
SHORT_TIME = 1e-2  # sigma^2 T / (b - a)^2 below this: approximate
STRONG_DRIFT = 15.0  # |gamma (b - a)| above this: approximate
SERIES_TOLERANCE = 1e-9
SERIES_MAX_TERMS = 100_000
# exp(2 gamma a) Phi(z) overflows or loses all digits when gamma a is large; from here on the
# product is taken through Phi's asymptotic expansion, with both exponents added first.
TAIL_EXPONENT = 5.0
# Where |gamma (b - a)| is this small the drift is treated as zero (0/0 in the hitting probability),
# and past OVERFLOW_EXPONENT its exponentials would overflow, so the limit is used.
NO_DRIFT = 1e-8
OVERFLOW_EXPONENT = 30.0


def normal_cdf(x: float) -> float:
    # erfc keeps its relative precision far into the lower tail, where 1 + erf(x) would cancel.
    return 0.5 * math.erfc(-x / math.sqrt(2))


def outcome_cdf(a: float, b: float, mu: float, sigma2: float, time: float, y: float) -> float:
    """P(an outcome worse than "LLR y at `time`") for drift `mu` and variance `sigma2` per unit time."""
    if not a < 0 < b:
        raise ValueError("the bounds must bracket the starting point 0")
    if not (sigma2 > 0 and time > 0 and a <= y <= b):
        raise ValueError("need a positive variance and time, and y between the bounds")
    width = b - a
    gamma = mu / sigma2
    if sigma2 * time / width ** 2 < SHORT_TIME or abs(gamma * width) > STRONG_DRIFT:
        value = _one_reflection(a, b, mu, sigma2, time, y)
    else:
        value = _eigen_series(a, b, mu, sigma2, time, y)
    return min(max(value, 0.0), 1.0)  # both formulas may stray by rounding just outside [0, 1]


def _eigen_series(a: float, b: float, mu: float, sigma2: float, time: float, y: float) -> float:
    """Exact: the absorbed motion's transition density expanded in the sine eigenfunctions of the
    band, integrated in closed form from the lower bound up to y.

    Coordinates are shifted so that the band is [0, width], the start is `start` and y is `level`.
    Each term is the (nth) mode's share of the density, damped by exp(-lambda_n time); the integral
    of e^(gamma z) sin(n pi z / width) has a primitive, so only its value at `level` is needed: the
    value at 0 gives exactly the motions that reach a after `time`, which the first term counts."""
    width = b - a
    start, level = -a, y - a
    gamma = mu / sigma2
    base_rate = mu * mu / sigma2 / 2  # the drift's share of every decay rate

    def rate(n: int) -> float:
        return (n * math.pi / width) ** 2 * sigma2 / 2 + base_rate

    # Factor the slowest decay and the drift's tilt e^(gamma (level - start)) out of the sum, so the
    # terms stay in range however long the test ran.
    leading = math.exp(-rate(1) * time + gamma * (level - start))
    total = 0.0
    for n in range(1, SERIES_MAX_TERMS + 1):
        damping = math.exp(-(rate(n) - rate(1)) * time)
        k = n * math.pi
        primitive = 2 * (width * gamma * math.sin(k * level / width) - k * math.cos(k * level / width)) \
            / ((width * gamma) ** 2 + k * k)
        total += damping * primitive * math.sin(k * start / width)
        if abs(leading * damping * primitive) <= SERIES_TOLERANCE:
            break
    return _eventually_absorbed_below(width, start, gamma) + leading * total


def _eventually_absorbed_below(width: float, start: float, gamma: float) -> float:
    """P(the motion started at `start` in [0, width] ever leaves through 0): gambler's ruin."""
    if gamma * width > OVERFLOW_EXPONENT:
        return math.exp(-2 * gamma * start)
    if abs(gamma * width) < NO_DRIFT:
        return (width - start) / width
    return (1 - math.exp(2 * gamma * (width - start))) / (1 - math.exp(2 * gamma * width))


def _one_reflection(a: float, b: float, mu: float, sigma2: float, time: float, y: float) -> float:
    """Siegmund's approximation: the free motion's P(X(time) < y), corrected by one mirror image in
    each bound (the paths that touched a count as worse, those that touched b as better)."""
    spread = math.sqrt(time * sigma2)
    drift = mu * time
    gamma = mu / sigma2
    free = normal_cdf((y - drift) / spread)
    below = _tilted_cdf(2 * gamma * a, (-y + drift + 2 * a) / spread)
    above = _tilted_cdf(2 * gamma * b, (y - drift - 2 * b) / spread)
    return free + below - above


def _tilted_cdf(exponent: float, z: float) -> float:
    """exp(exponent) * Phi(z), for an exponent that may be too large to take on its own."""
    if exponent >= 2 * TAIL_EXPONENT:
        # Phi(z) ~ phi(z) (1/|z| - 1/|z|^3) for z far below 0; here z is, because the image lies
        # far beyond the bound the motion drifts away from.
        return -math.exp(exponent - z * z / 2) / math.sqrt(2 * math.pi) * (1 / z - 1 / z ** 3)
    return math.exp(exponent) * normal_cdf(z)
