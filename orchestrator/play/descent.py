"""`descent[_<iters>]`: Cohen-Solal's Descent, unbounded best-first minimax with completion.

From Q. Cohen-Solal, "Learning to play two-player perfect-information games without knowledge"
(2020) and "Completeness of unbounded best-first game algorithms" (2020). Each iteration starts at
the root and follows the best child of every node; a node reached for the first time is expanded:
all its children are scored at once (terminal ones exactly, the others by one `evaluate_many`
call), and the descent goes on into the best of them. Unlike best-first minimax, which stops after
one expansion, Descent keeps following its principal line until the node it stands on is resolved
(its value is exact: a proven win for the side to move or every child resolved), which is where a
terminal state decides the line. The minimax values are then backed up along the path.

Completion: besides its value, each node carries a proven outcome `proven` (+1 / -1 when a win
for player 0 / player 1 is proven, 0 otherwise) and a `resolved` flag. Children are compared by
(proven, value) from the chooser's side, so a proven win beats any estimate and a proven loss
loses to any; the descent only enters unresolved children, so exact subtrees are never searched
again, and resolution climbs the tree as it is found.

The final move is the best root child by (proven, value, visits); equal candidates are chosen by
the agent's seeded generator. Decision.policy is one-hot on it, since Descent learns from values.

Values are stored from player 0's side (two-player zero-sum games only). The search keeps a tree,
not a transposition graph: with shared nodes, a back-up along one path leaves the other parents of a
changed node stale, and stale values decide moves. Trees are reused across moves: a state whose
history extends, by up to `REUSE_PLIES` moves, that of a root searched in the previous call
continues that root's subtree, which is consistent because every back-up into it came through it.
Each tree continues into one state at most, so that no search ever starts above another's root.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pyspiel

from orchestrator.play.agents import AgentContext, AgentSpec, Decision
from orchestrator.play.features import terminal_score, terminal_value
from orchestrator.play.minimax import (
    StateEvaluator,
    evaluate_checked,
    require_two_player_zero_sum,
    resolve_evaluator,
)

DEFAULT_ITERATIONS = 200
# A root is reused when the new state is the same position or up to two moves later (the
# opponent's reply, or this agent's and the opponent's when one agent plays both sides).
REUSE_PLIES = 2


@dataclass(eq=False)
class _Node:
    """One position's search record; `value` and `proven` are from player 0's side."""

    value: float
    proven: int = 0
    resolved: bool = False
    visits: int = 0
    mover: int = pyspiel.PlayerId.TERMINAL
    actions: list[int] | None = None
    children: list["_Node"] | None = None


def _side(mover: int) -> int:
    """+1 when player 0 chooses (maximises player 0's value), -1 when player 1 does."""
    return 1 if mover == 0 else -1


def _history_key(game: str, history: Sequence[int]) -> str:
    """A position's key for reuse: in a deterministic game the moves so far fix the state."""
    return f"{game}:{','.join(map(str, history))}"


class DescentAgent:
    """Descent with completion over a `StateEvaluator`, `iterations` descents per move."""

    def __init__(self, evaluator: StateEvaluator, iterations: int = DEFAULT_ITERATIONS, seed: int = 0,
                 name: str | None = None) -> None:
        if iterations < 1:
            raise ValueError(f"descent needs at least one iteration, got {iterations}")
        self.name = name or f"descent_{iterations}"
        self.evaluator = evaluator
        self.iterations = iterations
        self._rng = np.random.default_rng(seed)
        self._roots: dict[str, _Node] = {}
        self._evaluations = 0
        self._new_nodes = 0
        self._max_depth = 0

    def select_many(self, states: Sequence[pyspiel.State]) -> list[Decision]:
        previous, self._roots = self._roots, {}
        decisions = []
        for state in states:
            root = self._reused_root(state, previous)
            self._roots[_history_key(str(state.get_game()), state.history())] = root
            decisions.append(self._select(state, root))
        return decisions

    def _reused_root(self, state: pyspiel.State, previous: dict[str, _Node]) -> _Node:
        """The node for `state` in a tree of the previous call (claiming that tree), or a new root."""
        game, history = str(state.get_game()), state.history()
        for back in range(min(REUSE_PLIES, len(history)) + 1):
            key = _history_key(game, history[:len(history) - back])
            node = previous.get(key)
            for action in history[len(history) - back:]:
                if node is None or node.children is None:
                    node = None
                    break
                node = node.children[node.actions.index(action)]
            if node is not None:
                del previous[key]
                return node
        return _Node(value=0.0)

    def _select(self, state: pyspiel.State, root: _Node) -> Decision:
        if state.is_terminal():
            raise ValueError("cannot choose a move in a terminal state")
        self._evaluations = 0
        self._new_nodes = 0
        self._max_depth = 0
        iterations = 0
        while iterations < self.iterations and not root.resolved:
            self._descend(state, root)
            iterations += 1
        side = _side(state.current_player())
        ranked = [
            ((side * child.proven, side * child.value, child.visits), action)
            for action, child in zip(root.actions, root.children)
        ]
        best = max(rank for rank, _ in ranked)
        tied = [action for rank, action in ranked if rank == best]
        action = int(tied[int(self._rng.integers(len(tied)))])
        return Decision(
            action=action,
            policy={action: 1.0},
            stats={
                "value": float(side * root.value),
                "iterations": float(iterations),
                "nodes": float(self._new_nodes),
                "evaluations": float(self._evaluations),
                "depth": float(self._max_depth),
                "resolved": float(root.resolved),
            },
        )

    def _descend(self, root_state: pyspiel.State, root: _Node) -> None:
        """One iteration: follow the best unresolved children, expanding new nodes, until a resolved one."""
        state, node = root_state, root
        path: list[_Node] = []
        while True:
            path.append(node)
            node.visits += 1
            if node.children is None:
                self._expand(state, node)
                self._update(node)
            if node.resolved:
                break
            index = self._best_unresolved(node)
            state = state.child(node.actions[index])
            node = node.children[index]
        self._max_depth = max(self._max_depth, len(path) - 1)
        for node in reversed(path):
            self._update(node)

    def _expand(self, state: pyspiel.State, node: _Node) -> None:
        """Create the children of `node`: terminal ones scored exactly, the others in one evaluator call."""
        node.mover = state.current_player()
        node.actions = state.legal_actions()
        node.children = []
        open_children: list[tuple[_Node, pyspiel.State]] = []
        for action in node.actions:
            child_state = state.child(action)
            if child_state.is_terminal():
                child = _Node(
                    value=terminal_score(child_state, 0), proven=int(terminal_value(child_state, 0)), resolved=True
                )
            else:
                child = _Node(value=0.0)
                open_children.append((child, child_state))
            node.children.append(child)
        self._new_nodes += len(node.children)
        if open_children:
            side = _side(node.mover)
            values = evaluate_checked(self.evaluator, [s for _, s in open_children], node.mover)
            self._evaluations += len(open_children)
            for (child, _), value in zip(open_children, values):
                child.value = side * float(value)

    def _update(self, node: _Node) -> None:
        """Minimax back-up with completion: (proven, value) of the best child; resolved when exact."""
        side = _side(node.mover)
        best = max(node.children, key=lambda child: (side * child.proven, side * child.value))
        node.value = best.value
        node.proven = best.proven
        node.resolved = (best.resolved and side * best.proven == 1) or all(child.resolved for child in node.children)

    def _best_unresolved(self, node: _Node) -> int:
        side = _side(node.mover)
        candidates = [i for i, child in enumerate(node.children) if not child.resolved]
        return max(candidates, key=lambda i: side * node.children[i].value)


def make_descent_agent(evaluator: StateEvaluator, iterations: int = DEFAULT_ITERATIONS, seed: int = 0) -> DescentAgent:
    return DescentAgent(evaluator, iterations=iterations, seed=seed)


def build_descent(spec: AgentSpec, ctx: AgentContext) -> DescentAgent:
    require_two_player_zero_sum(ctx.board_type, spec.kind, ctx.games)
    return DescentAgent(
        resolve_evaluator(spec, ctx),
        iterations=spec.budget or DEFAULT_ITERATIONS,
        seed=ctx.seed,
        name=spec.name,
    )
