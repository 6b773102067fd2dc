"""`minimax_<depth>`: alpha-beta negamax over a batched `StateEvaluator`, for two-player zero-sum games.

Evaluators see many states at once (`StateEvaluator.evaluate_many`) so that a network scores a
whole node's children in one call: the search evaluates every node's children together, using the
scores to order moves (a proven win first, then the best-looking moves, which is what makes the
cut-offs of alpha-beta happen early) and, one ply above the horizon, as the leaf values themselves.

Scores are from the side to move, in [-1, 1]: terminal states score exactly, a win as
`terminal_score` (just under 1, higher for shorter games, so the search prefers faster wins and
slower losses), and evaluations are scaled into +-`EVAL_BOUND`, below every proven outcome.
A transposition table keyed by the position's text and side to move lets transposed lines share
results. It lives as long as the agent, since an entry depends only on the position and the
evaluator (the bounds found for one move serve the next), and is emptied when it outgrows
`MAX_TABLE_ENTRIES`. A position whose text omits history-dependent state (repetition counts) may
share a value with its twin, which can mislead the search's estimate but never its legality:
moves always come from the real state.

The evaluator is the heuristic one by default; `model:<id>+minimax_<d>` uses
`AgentContext.load_model(id)`, which returns either an object with
`evaluate_many(states, player)` or a callable `(states, player) -> values`.

Decision.policy is one-hot on the chosen move: alpha-beta proves a move best but leaves the other
root scores as bounds, not values a distribution could be built from. Among moves of equal score
the agent's seeded generator chooses.
"""
from __future__ import annotations

from typing import Any, Callable, Protocol, Sequence, runtime_checkable

import numpy as np
import pyspiel

from orchestrator.play.agents import AgentContext, AgentSpec, Decision, InvalidAgent
from orchestrator.play.features import bound_evaluations, terminal_score
from orchestrator.play.games import GameCatalog
from orchestrator.play.heuristic import HeuristicEvaluator

_INF = 2.0
# Root moves are searched with alpha just below the best score so far, so that a move scoring the
# same as the best comes back exact and can take part in the seeded tie-break.
_TIE_WINDOW = 1e-9
_EXACT, _LOWER, _UPPER = 0, 1, 2
MAX_TABLE_ENTRIES = 200_000


@runtime_checkable
class StateEvaluator(Protocol):
    """Values of non-terminal states for `player`, in [-1, 1], one per state, computed together."""

    def evaluate_many(self, states: Sequence[pyspiel.State], player: int) -> np.ndarray: ...


class _CallableEvaluator:
    """A bare `(states, player) -> values` function seen as a `StateEvaluator`."""

    def __init__(self, function: Callable[[Sequence[pyspiel.State], int], Any]) -> None:
        self._function = function

    def evaluate_many(self, states: Sequence[pyspiel.State], player: int) -> np.ndarray:
        return np.asarray(self._function(states, player), dtype=np.float64)


def as_state_evaluator(model: Any, model_id: str = "?") -> StateEvaluator:
    """Accept what a model loader returns: a `StateEvaluator`, or a callable `(states, player)`."""
    if isinstance(model, StateEvaluator):
        return model
    if callable(model):
        return _CallableEvaluator(model)
    raise InvalidAgent(f"model {model_id!r} is neither a StateEvaluator (evaluate_many) nor a callable")


def resolve_evaluator(spec: AgentSpec, ctx: AgentContext) -> StateEvaluator:
    """The registered model named by `spec.model_id`, or the default heuristic evaluator."""
    if not spec.model_id:
        return HeuristicEvaluator()
    if ctx.load_model is None:
        raise InvalidAgent(f"agent {spec.name!r} needs a model loader in the agent context")
    return as_state_evaluator(ctx.load_model(spec.model_id), spec.model_id)


def evaluate_checked(evaluator: StateEvaluator, states: Sequence[pyspiel.State], player: int) -> np.ndarray:
    """Evaluate non-terminal `states`, check the answer's shape and finiteness, bound below proven outcomes."""
    values = np.asarray(evaluator.evaluate_many(states, player), dtype=np.float64).reshape(-1)
    if values.shape[0] != len(states):
        raise ValueError(f"evaluator returned {values.shape[0]} values for {len(states)} states")
    if not np.all(np.isfinite(values)):
        raise ValueError("evaluator returned a non-finite value")
    return bound_evaluations(values)


def require_two_player_zero_sum(board_type: str, kind: str, games: GameCatalog) -> pyspiel.Game:
    """The game, if negamax applies to it (two players, zero- or constant-sum); otherwise InvalidAgent."""
    game = games.load(board_type)
    utility = game.get_type().utility
    zero_sum = utility in (pyspiel.GameType.Utility.ZERO_SUM, pyspiel.GameType.Utility.CONSTANT_SUM)
    if game.num_players() != 2 or not zero_sum:
        raise InvalidAgent(
            f"{kind} needs a two-player zero-sum game; {board_type!r} has {game.num_players()} players "
            f"and {utility.name.lower()} utility"
        )
    return game


def position_key(state: pyspiel.State) -> tuple[str, int]:
    """Transposition key: the position's text and the side to move."""
    return str(state), state.current_player()


class MinimaxAgent:
    """Depth-limited alpha-beta negamax with batched child evaluation and move ordering."""

    def __init__(self, evaluator: StateEvaluator, depth: int, seed: int = 0, name: str | None = None) -> None:
        if depth < 1:
            raise ValueError(f"minimax depth must be at least 1, got {depth}")
        self.name = name or f"minimax_{depth}"
        self.evaluator = evaluator
        self.depth = depth
        self._rng = np.random.default_rng(seed)
        self._table: dict[tuple[str, int], tuple[int, float, int]] = {}
        self._nodes = 0
        self._evaluations = 0
        self._max_length = 0

    def select_many(self, states: Sequence[pyspiel.State]) -> list[Decision]:
        return [self._select(state) for state in states]

    def _select(self, state: pyspiel.State) -> Decision:
        if state.is_terminal():
            raise ValueError("cannot choose a move in a terminal state")
        if len(self._table) > MAX_TABLE_ENTRIES:
            self._table.clear()
        self._nodes = 1
        self._evaluations = 0
        self._max_length = state.get_game().max_game_length()
        player = state.current_player()
        actions, children, static = self._expand(state, player)
        scores: dict[int, float] = {}
        best = -_INF
        for index in self._order(static):
            child = children[index]
            if self.depth == 1 or child.is_terminal():
                score = static[index]
            else:
                alpha = best - _TIE_WINDOW if best > -_INF else -_INF
                score = self._child_score(child, player, self.depth - 1, alpha, _INF)
            scores[actions[index]] = score
            best = max(best, score)
        tied = [action for action, score in scores.items() if score == best]
        action = int(tied[int(self._rng.integers(len(tied)))])
        return Decision(
            action=action,
            policy={action: 1.0},
            stats={
                "value": float(best),
                "depth": float(self.depth),
                "nodes": float(self._nodes),
                "evaluations": float(self._evaluations),
            },
        )

    def _expand(self, state: pyspiel.State, player: int) -> tuple[list[int], list[pyspiel.State], np.ndarray]:
        """Children of `state` and their static scores for `player`: exact if terminal, else evaluated together."""
        actions = state.legal_actions()
        children = [state.child(action) for action in actions]
        self._nodes += len(children)
        static = np.empty(len(children))
        open_children = []
        for index, child in enumerate(children):
            if child.is_terminal():
                static[index] = terminal_score(child, player)
            else:
                open_children.append(index)
        if open_children:
            static[open_children] = evaluate_checked(self.evaluator, [children[i] for i in open_children], player)
            self._evaluations += len(open_children)
        return actions, children, static

    def _order(self, static: np.ndarray) -> np.ndarray:
        """Best static score first; equal scores in seeded random order."""
        shuffle = self._rng.permutation(len(static))
        return shuffle[np.argsort(-static[shuffle], kind="stable")]

    def _child_score(self, child: pyspiel.State, player: int, depth: int, alpha: float, beta: float) -> float:
        """Score of a non-terminal child for `player`, searched `depth` plies (whoever moves in it)."""
        if child.current_player() == player:
            return self._negamax(child, depth, alpha, beta)
        return -self._negamax(child, depth, -beta, -alpha)

    def _negamax(self, state: pyspiel.State, depth: int, alpha: float, beta: float) -> float:
        """Fail-soft alpha-beta score of a non-terminal state for its side to move (depth >= 1)."""
        # Searching past the game's longest possible end changes nothing; capping the depth there
        # lets a complete entry of the table answer any deeper request.
        depth = min(depth, max(1, self._max_length - state.move_number()))
        key = position_key(state)
        entry = self._table.get(key)
        if entry is not None and entry[0] >= depth:
            _, value, flag = entry
            if flag == _EXACT or (flag == _LOWER and value >= beta) or (flag == _UPPER and value <= alpha):
                return value
        alpha_in = alpha
        player = state.current_player()
        _, children, static = self._expand(state, player)
        if depth == 1:
            best = float(static.max())
        else:
            best = -_INF
            for index in self._order(static):
                child = children[index]
                if child.is_terminal():
                    score = static[index]
                else:
                    score = self._child_score(child, player, depth - 1, alpha, beta)
                best = max(best, score)
                alpha = max(alpha, score)
                if alpha >= beta:
                    break
        flag = _UPPER if best <= alpha_in else _LOWER if best >= beta else _EXACT
        self._table[key] = (depth, best, flag)
        return best


def make_minimax_agent(evaluator: StateEvaluator | None, depth: int, seed: int = 0) -> MinimaxAgent:
    """A minimax agent over any evaluator (the heuristic one when None)."""
    return MinimaxAgent(evaluator or HeuristicEvaluator(), depth=depth, seed=seed)


def build_minimax(spec: AgentSpec, ctx: AgentContext) -> MinimaxAgent:
    require_two_player_zero_sum(ctx.board_type, spec.kind, ctx.games)
    if spec.budget is None:
        raise InvalidAgent("minimax needs a depth, as in minimax_3")
    return MinimaxAgent(resolve_evaluator(spec, ctx), depth=spec.budget, seed=ctx.seed, name=spec.name)
