"""Bradley–Terry ratings: the maximum-likelihood fit over every game, on the Elo scale, with 95% intervals.

Model: P(i scores against j) = 1 / (1 + 10^((r_j - r_i) / 400)); a draw counts as half a win for
each side; no prior. The fit does not depend on the order of the games (unlike a K-factor pass).

Anchor: ratings are relative, so one agent is fixed at 0 and every interval is relative to it. The
default anchor is `random` when it has played, else the `openspiel_mcts_<n>` with the smallest n,
else the agent with the most games (ties: the first by name); a caller may name another.

Where no finite estimate exists: the maximum-likelihood estimate is finite exactly for the agents
whose results connect them both ways to the anchor (each scored at least half a point against
someone who, through a chain of such results, scored against the anchor, and the other way round:
the anchor's strongly connected component of the "scored against" graph). Only those are fitted.
Any other agent has a record against the fitted agents that is all wins or all losses, so its
estimate is +infinity or -infinity: it is shown without an estimate, with an open-ended 95% interval
whose finite end is the rating at which that record has probability 5% given its opponents' fitted
ratings (all wins: [bound, +inf); all losses: (-inf, bound]). An agent that played none of the
fitted agents has neither estimate nor bound.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable

import numpy as np
from scipy.optimize import brentq
from scipy.stats import norm

from orchestrator.stats.pentanomial import check_score

ELO_PER_NAT = 400 / math.log(10)
LEVEL = 0.95
OPEN_END_TAIL = 1 - LEVEL  # one-sided: the open interval itself covers 95%
NEWTON_TOLERANCE = 1e-10
NEWTON_MAX_STEPS = 200
REFERENCE_AGENT = "random"
REFERENCE_PREFIX = "openspiel_mcts_"

ESTIMATED = "estimated"
ABOVE = "above"  # all wins against the fitted agents
BELOW = "below"  # all losses against the fitted agents
UNCONNECTED = "unconnected"


@dataclass(frozen=True)
class GameResult:
    agent_a: str
    agent_b: str
    score_a: float  # 1, 0.5 or 0


@dataclass(frozen=True)
class Rating:
    agent: str
    elo: float | None
    ci_low: float | None  # None: unbounded below
    ci_high: float | None  # None: unbounded above
    games: int
    wins: int
    draws: int
    losses: int
    estimate: str  # ESTIMATED, ABOVE, BELOW or UNCONNECTED


@dataclass(frozen=True)
class RatingTable:
    anchor: str | None
    rows: tuple[Rating, ...]  # best first: open-above, estimated by elo, open-below, unconnected


class UnknownAnchor(ValueError):
    """The anchor named has played no game in these results."""


def default_anchor(agents: Iterable[str], games: dict[str, int]) -> str | None:
    names = sorted(set(agents))
    if not names:
        return None
    if REFERENCE_AGENT in names:
        return REFERENCE_AGENT
    references = [n for n in names if n.startswith(REFERENCE_PREFIX) and n[len(REFERENCE_PREFIX):].isdigit()]
    if references:
        return min(references, key=lambda n: int(n[len(REFERENCE_PREFIX):]))
    return min(names, key=lambda n: (-games.get(n, 0), n))


def fit(results: Iterable[GameResult], anchor: str | None = None) -> RatingTable:
    points: dict[tuple[str, str], float] = defaultdict(float)  # (i, j) -> i's points against j
    played: dict[tuple[str, str], int] = defaultdict(int)
    record: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])  # wins, draws, losses
    for game in results:
        a, b, score = game.agent_a, game.agent_b, check_score(game.score_a)
        if a == b:
            raise ValueError(f"{a!r} cannot play itself in a rated game")
        points[a, b] += score
        points[b, a] += 1 - score
        played[a, b] += 1
        played[b, a] += 1
        record[a][2 - int(2 * score)] += 1
        record[b][int(2 * score)] += 1
    games = {agent: sum(counts) for agent, counts in record.items()}
    if anchor is None:
        anchor = default_anchor(record, games)
    elif anchor not in record:
        raise UnknownAnchor(f"anchor {anchor!r} has no rated game here")
    if anchor is None:
        return RatingTable(None, ())

    fitted = _component(anchor, points)
    ratings, errors = _fit_component(sorted(fitted), anchor, points, played)
    z = float(norm.ppf(0.5 + LEVEL / 2))
    rows = []
    for agent in record:
        wins, draws, losses = record[agent]
        common = dict(agent=agent, games=games[agent], wins=wins, draws=draws, losses=losses)
        if agent in ratings:
            elo, error = ratings[agent], errors[agent]
            rows.append(Rating(elo=elo, ci_low=elo - z * error, ci_high=elo + z * error, estimate=ESTIMATED, **common))
            continue
        opponents = {j: played[agent, j] for j in ratings if played.get((agent, j))}
        if not opponents:
            rows.append(Rating(elo=None, ci_low=None, ci_high=None, estimate=UNCONNECTED, **common))
        elif all(points[agent, j] == n for j, n in opponents.items()):
            bound = _open_bound(opponents, ratings, winning=True)
            rows.append(Rating(elo=None, ci_low=bound, ci_high=None, estimate=ABOVE, **common))
        else:  # outside the component, so it scored nothing against any fitted agent
            bound = _open_bound(opponents, ratings, winning=False)
            rows.append(Rating(elo=None, ci_low=None, ci_high=bound, estimate=BELOW, **common))
    order = {ABOVE: 0, ESTIMATED: 1, BELOW: 2, UNCONNECTED: 3}
    rows.sort(key=lambda r: (order[r.estimate], -(r.elo if r.elo is not None else (r.ci_low or r.ci_high or 0.0)),
                             r.agent))
    return RatingTable(anchor, tuple(rows))


def _component(anchor: str, points: dict[tuple[str, str], float]) -> set[str]:
    """The anchor's strongly connected component of the graph i -> j where i scored against j."""
    forward: dict[str, set[str]] = defaultdict(set)
    backward: dict[str, set[str]] = defaultdict(set)
    for (i, j), score in points.items():
        if score > 0:
            forward[i].add(j)
            backward[j].add(i)
    return _reach(anchor, forward) & _reach(anchor, backward)


def _reach(start: str, edges: dict[str, set[str]]) -> set[str]:
    seen, stack = {start}, [start]
    while stack:
        for nxt in edges[stack.pop()] - seen:
            seen.add(nxt)
            stack.append(nxt)
    return seen


def _fit_component(agents: list[str], anchor: str, points: dict[tuple[str, str], float],
                   played: dict[tuple[str, str], int]) -> tuple[dict[str, float], dict[str, float]]:
    """Newton's method on the log-likelihood (concave; strictly so with the anchor fixed, since the
    component is strongly connected). Returns Elo and standard error per agent (the anchor: 0, 0)."""
    free = [a for a in agents if a != anchor]
    index = {a: k for k, a in enumerate(free)}
    pairs = [(i, j, points[i, j], played[i, j]) for i in agents for j in agents if i < j and played.get((i, j))]
    theta = np.zeros(len(free))

    def value(i: str, th: np.ndarray) -> float:
        return th[index[i]] if i in index else 0.0

    def loglik(th: np.ndarray) -> float:
        total = 0.0
        for i, j, s, n in pairs:
            d = value(i, th) - value(j, th)
            total += -s * np.logaddexp(0, -d) - (n - s) * np.logaddexp(0, d)
        return total

    def derivatives(th: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        grad, info = np.zeros(len(free)), np.zeros((len(free), len(free)))
        for i, j, s, n in pairs:
            p = 1 / (1 + math.exp(value(j, th) - value(i, th)))
            g, w = s - n * p, n * p * (1 - p)
            for a, sign in ((i, 1), (j, -1)):
                if a in index:
                    grad[index[a]] += sign * g
                    info[index[a], index[a]] += w
            if i in index and j in index:
                info[index[i], index[j]] -= w
                info[index[j], index[i]] -= w
        return grad, info

    for _ in range(NEWTON_MAX_STEPS):
        if not free:
            break
        grad, info = derivatives(theta)
        step = np.linalg.solve(info, grad)
        current, scale = loglik(theta), 1.0
        while loglik(theta + scale * step) < current - 1e-12 and scale > 1e-6:
            scale /= 2
        theta = theta + scale * step
        if np.max(np.abs(scale * step)) < NEWTON_TOLERANCE:
            break
    covariance = np.linalg.inv(derivatives(theta)[1]) if free else np.zeros((0, 0))
    ratings = {anchor: 0.0, **{a: float(theta[k] * ELO_PER_NAT) for a, k in index.items()}}
    errors = {anchor: 0.0, **{a: float(math.sqrt(covariance[k, k]) * ELO_PER_NAT) for a, k in index.items()}}
    return ratings, errors


def _open_bound(opponents: dict[str, int], ratings: dict[str, float], winning: bool) -> float:
    """The rating r at which winning (or losing) every one of these games has probability OPEN_END_TAIL."""
    target = math.log(OPEN_END_TAIL)

    def log_probability(r: float) -> float:
        total = 0.0
        for j, n in opponents.items():
            d = (r - ratings[j]) / ELO_PER_NAT
            total -= n * float(np.logaddexp(0, -d if winning else d))
        return total - target

    centre = sum(ratings[j] for j in opponents) / len(opponents)
    width = 400.0
    while log_probability(centre - width) * log_probability(centre + width) > 0:
        width *= 2
    return float(brentq(log_probability, centre - width, centre + width, xtol=1e-9))
