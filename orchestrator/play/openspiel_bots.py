"""`openspiel_mcts_<n>`: OpenSpiel's own C++ MCTSBot with random rollouts, a reference nobody here wrote.

It anchors the rating scale next to `random`: n simulations per move, one random rollout per leaf,
UCT constant 2 (OpenSpiel's example default), proven wins and losses propagated (`solve`).
"""
from __future__ import annotations

from typing import Sequence

import pyspiel

from orchestrator.play.agents import AgentContext, AgentSpec, Decision

UCT_C = 2.0
ROLLOUTS = 1
MAX_MEMORY_MB = 256
SEED_MODULUS = 2**31  # the C++ bot takes a 32-bit seed


class OpenSpielMCTSAgent:
    def __init__(self, name: str, game: pyspiel.Game, simulations: int, seed: int) -> None:
        self.name = name
        seed %= SEED_MODULUS
        evaluator = pyspiel.RandomRolloutEvaluator(ROLLOUTS, seed)
        self._bot = pyspiel.MCTSBot(game, evaluator, UCT_C, simulations, MAX_MEMORY_MB, True, seed, False)

    def select_many(self, states: Sequence[pyspiel.State]) -> list[Decision]:
        decisions = []
        for state in states:
            policy, action = self._bot.step_with_policy(state)
            decisions.append(Decision(action, {a: p for a, p in policy}))
        return decisions


def build_openspiel_mcts(spec: AgentSpec, ctx: AgentContext) -> OpenSpielMCTSAgent:
    return OpenSpielMCTSAgent(spec.name, ctx.games.load(ctx.board_type), spec.budget, ctx.seed)
