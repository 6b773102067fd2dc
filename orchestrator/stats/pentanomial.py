"""Counting game results the way fishtest does: trinomial [L, D, W] for single games, pentanomial
[LL, LD+DL, LW+DD+WL, DW+WD, WW] for pairs of games played from one opening with colours swapped.

A score is agent A's points in one game: 1 (win), 0.5 (draw) or 0 (loss). A pair's index in the
pentanomial is twice the pair's total score (0, 0.5, 1, 1.5 or 2 points).
"""
from __future__ import annotations

from typing import Iterable

SCORES = (0.0, 0.5, 1.0)


def check_score(score: float) -> float:
    value = float(score)
    if value not in SCORES:
        raise ValueError(f"a game's score is 1, 0.5 or 0, not {score!r}")
    return value


def trinomial(scores: Iterable[float]) -> list[int]:
    """[losses, draws, wins] of A over single games."""
    counts = [0, 0, 0]
    for score in scores:
        counts[int(2 * check_score(score))] += 1
    return counts


def pentanomial(pairs: Iterable[tuple[float, float]]) -> list[int]:
    """[LL, LD+DL, LW+DD+WL, DW+WD, WW] of A over colour-swapped pairs (A's score in each game)."""
    counts = [0, 0, 0, 0, 0]
    for first, second in pairs:
        counts[int(2 * (check_score(first) + check_score(second)))] += 1
    return counts

