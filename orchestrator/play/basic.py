"""The uniform random agent: the rating anchor and the cheapest opponent."""
from __future__ import annotations

import random
from typing import Sequence

import pyspiel

from orchestrator.play.agents import AgentContext, AgentSpec, Decision


class RandomAgent:
    """Plays a uniformly random legal move; its policy is uniform over the legal moves."""

    def __init__(self, name: str, seed: int = 0) -> None:
        self.name = name
        self._rng = random.Random(seed)

    def select_many(self, states: Sequence[pyspiel.State]) -> list[Decision]:
        decisions = []
        for state in states:
            actions = state.legal_actions()
            if not actions:
                raise ValueError(f"{self.name}: no legal move in this state")
            share = 1.0 / len(actions)
            decisions.append(Decision(self._rng.choice(actions), {a: share for a in actions}))
        return decisions


def build_random(spec: AgentSpec, ctx: AgentContext) -> RandomAgent:
    return RandomAgent(spec.name, seed=ctx.seed)
