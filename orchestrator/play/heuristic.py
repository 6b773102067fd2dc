"""The heuristic evaluator (a linear function of `features`, squashed by tanh) and the `heuristic` agent.

`HEURISTIC_PARAMS` names the evaluator's weights with their bounds and defaults; CMA-ES tunes
exactly these, and every one of them moves the agent's choices because each multiplies one
feature of `FEATURE_NAMES`. The `heuristic` agent searches a shallow full-width tree (one ply by
default) and evaluates all its leaves in a single `evaluate_many` call; ties between equally valued
moves are broken by the agent's seeded generator, so a seed fixes a game.

`heuristic@<params_id>` loads its weights through `AgentContext.load_model(params_id)`, which must
return a mapping of weight name to number; names outside `HEURISTIC_PARAMS` or non-finite values
are refused, and names it leaves out keep their defaults.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import pyspiel

from orchestrator.play.agents import AgentContext, AgentSpec, Decision
from orchestrator.play.features import (
    FEATURE_NAMES,
    bound_evaluations,
    features_many,
    terminal_score,
    terminal_value,
)

# name -> (low, high, default). Defaults favour mobility and corners, as in classic Othello
# evaluation, while keeping every game's material and centre terms positive.
HEURISTIC_PARAMS: dict[str, tuple[float, float, float]] = {
    "material": (-4.0, 4.0, 0.25),
    "mobility": (-4.0, 4.0, 1.5),
    "frontier": (-4.0, 4.0, -0.5),
    "center": (-4.0, 4.0, 0.5),
    "edge": (-4.0, 4.0, 0.5),
    "corner": (-4.0, 4.0, 2.0),
    "near_corner": (-4.0, 4.0, -0.5),
}
DEFAULT_WEIGHTS: dict[str, float] = {name: default for name, (_, _, default) in HEURISTIC_PARAMS.items()}
# The full-width tree grows as branching ** depth; deeper searches are what minimax is for.
MAX_DEPTH = 4


class InvalidHeuristicParams(ValueError):
    """Heuristic weights with unknown names or non-finite values."""


def validate_weights(weights: Mapping[str, Any]) -> dict[str, float]:
    """Defaults overlaid with `weights`, after checking names and values."""
    if not isinstance(weights, Mapping):
        raise InvalidHeuristicParams(
            f"heuristic params must be a mapping of name to number, got {type(weights).__name__}"
        )
    unknown = sorted(set(weights) - set(HEURISTIC_PARAMS))
    if unknown:
        raise InvalidHeuristicParams(f"unknown heuristic params {unknown}; known: {sorted(HEURISTIC_PARAMS)}")
    merged = dict(DEFAULT_WEIGHTS)
    for name, value in weights.items():
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise InvalidHeuristicParams(f"heuristic param {name!r} must be a number, got {value!r}")
        if not math.isfinite(float(value)):
            raise InvalidHeuristicParams(f"heuristic param {name!r} must be finite, got {value!r}")
        merged[name] = float(value)
    return merged


class HeuristicEvaluator:
    """value(state, player) = tanh(w . features(state, player)); terminal states get their exact outcome.

    Implements the `StateEvaluator` protocol of `orchestrator.play.minimax`.
    """

    def __init__(self, weights: Mapping[str, Any] | None = None) -> None:
        self.weights = validate_weights(weights or {})
        self._vector = np.array([self.weights[name] for name in FEATURE_NAMES])

    def evaluate(self, state: pyspiel.State, player: int) -> float:
        return float(self.evaluate_many([state], player)[0])

    def evaluate_many(self, states: Sequence[pyspiel.State], player: int) -> np.ndarray:
        values = np.empty(len(states))
        open_states = []
        for i, state in enumerate(states):
            if state.is_terminal():
                values[i] = terminal_value(state, player)
            else:
                open_states.append(i)
        if open_states:
            values[open_states] = np.tanh(features_many([states[i] for i in open_states], player) @ self._vector)
        return values


@dataclass
class _Node:
    state: pyspiel.State
    children: list["_Node"] = field(default_factory=list)
    value: float = 0.0


class HeuristicAgent:
    """Full-width search `depth` plies deep over a `HeuristicEvaluator`, values from the root mover's side.

    Below the root, the root mover maximises and every other player minimises (the paranoid
    reduction), which is plain minimax for two players and still well defined for more.
    Decision.policy is one-hot on the chosen move.
    """

    def __init__(self, evaluator: HeuristicEvaluator, seed: int = 0, depth: int = 1, name: str = "heuristic") -> None:
        if not 1 <= depth <= MAX_DEPTH:
            raise ValueError(f"heuristic depth must be between 1 and {MAX_DEPTH}, got {depth}")
        self.name = name
        self.evaluator = evaluator
        self.depth = depth
        self._rng = np.random.default_rng(seed)

    def select_many(self, states: Sequence[pyspiel.State]) -> list[Decision]:
        return [self._select(state) for state in states]

    def _select(self, state: pyspiel.State) -> Decision:
        if state.is_terminal():
            raise ValueError("cannot choose a move in a terminal state")
        player = state.current_player()
        root = _Node(state)
        leaves: list[_Node] = []
        frontier = [root]
        for _ in range(self.depth):
            next_frontier = []
            for node in frontier:
                if node.state.is_terminal():
                    continue
                node.children = [_Node(node.state.child(a)) for a in node.state.legal_actions()]
                next_frontier.extend(node.children)
            frontier = next_frontier
        self._score_leaves(root, player, leaves)
        open_leaves = [leaf for leaf in leaves if not leaf.state.is_terminal()]
        if open_leaves:
            values = self.evaluator.evaluate_many([leaf.state for leaf in open_leaves], player)
            for leaf, value in zip(open_leaves, bound_evaluations(values)):
                leaf.value = float(value)
        self._back_up(root, player)
        actions = state.legal_actions()
        root_values = np.array([child.value for child in root.children])
        best = np.flatnonzero(root_values == root_values.max())
        action = int(actions[int(self._rng.choice(best))])
        return Decision(
            action=action,
            policy={action: 1.0},
            stats={"value": float(root_values.max()), "leaves": float(len(leaves)), "depth": float(self.depth)},
        )

    def _score_leaves(self, node: _Node, player: int, leaves: list[_Node]) -> None:
        if not node.children:
            if node.state.is_terminal():
                node.value = terminal_score(node.state, player)
            leaves.append(node)
            return
        for child in node.children:
            self._score_leaves(child, player, leaves)

    def _back_up(self, node: _Node, player: int) -> float:
        if node.children:
            values = [self._back_up(child, player) for child in node.children]
            node.value = max(values) if node.state.current_player() == player else min(values)
        return node.value


def make_heuristic_agent(weights: Mapping[str, Any], seed: int = 0, depth: int = 1) -> HeuristicAgent:
    """An agent over candidate weights (for CMA-ES); names it omits keep their defaults."""
    return HeuristicAgent(HeuristicEvaluator(weights), seed=seed, depth=depth)


def load_weights(params_id: str, ctx: AgentContext) -> dict[str, float]:
    if ctx.load_model is None:
        raise InvalidHeuristicParams(f"heuristic@{params_id} needs a model loader in the agent context")
    return validate_weights(ctx.load_model(params_id))


def build_heuristic(spec: AgentSpec, ctx: AgentContext) -> HeuristicAgent:
    weights = load_weights(spec.params_id, ctx) if spec.params_id else DEFAULT_WEIGHTS
    return HeuristicAgent(HeuristicEvaluator(weights), seed=ctx.seed, depth=1, name=spec.name)
