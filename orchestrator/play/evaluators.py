"""Leaf evaluators for tree search: random rollouts, or a policy/value network over a batch of leaves.

An evaluator takes many leaf states at once (the search collects one or more leaves from every
game it is playing) and returns, for each, priors over the legal actions it was given and a value
per player. Values are per seat (absolute player order), so a search can back up the returns of
n-player games without assuming two players. `RolloutEvaluator` also has `playout`, the value of
one leaf, which PUCT's one-leaf search uses (see `MCTSAgent._search_one`).

Counters (calls, leaves, seconds) are cumulative; `stats()` derives leaves per call and
evaluations per second, and searches report the difference over one `select_many`.
"""
from __future__ import annotations

import time
from typing import Protocol, Sequence

import numpy as np
import pyspiel
import torch
from open_spiel.python.observation import make_observation

from orchestrator.nn.serving import PreparedNetwork
from orchestrator.play.agents import AgentContext


class LeafEvaluator(Protocol):
    num_players: int
    calls: int
    leaves: int
    seconds: float

    def evaluate(
        self, states: Sequence[pyspiel.State], legal_actions: Sequence[Sequence[int]]
    ) -> tuple[list[np.ndarray], np.ndarray]:
        """Priors over each state's `legal_actions` (same order) and values of shape [len(states), num_players]."""

    def stats(self) -> dict[str, float]:
        """Cumulative counters: network_calls (evaluator calls, rollouts too), leaves, leaves_per_call, evals_per_s."""


def _stats(calls: int, leaves: int, seconds: float) -> dict[str, float]:
    return {
        "network_calls": float(calls),
        "leaves": float(leaves),
        "leaves_per_call": leaves / calls if calls else 0.0,
        "evals_per_s": leaves / seconds if seconds > 0 else 0.0,
    }


class RolloutEvaluator:
    """Uniform priors; values = mean returns of `rollouts` uniformly random playouts to the end.

    The playouts run in OpenSpiel's C++, so a move costs the game's own move generation and nothing
    of Python's. In two-player zero-sum games without chance they are those of OpenSpiel's
    `RandomRolloutEvaluator`, which Python reaches only through `MCTSBot`: a one-simulation
    `mcts_search` is exactly one evaluation of the position (a copy, `rollouts` playouts, their mean
    return for the player to move), and the opponent's value is its negation. It measured 2.5% faster
    per playout on Othello than the general route, OpenSpiel's uniform random bots (`evaluate_bots`
    on a copy), which every other game takes because it returns every player's returns.
    Neither changes the given state.
    """

    def __init__(self, game: pyspiel.Game, rollouts: int = 1, seed: int = 0) -> None:
        if rollouts < 1:
            raise ValueError("rollouts must be >= 1")
        self.num_players = game.num_players()
        self.rollouts = rollouts
        seed %= 2**31
        kind = game.get_type()
        if (
            self.num_players == 2
            and kind.utility == pyspiel.GameType.Utility.ZERO_SUM
            and kind.chance_mode == pyspiel.GameType.ChanceMode.DETERMINISTIC
            and kind.dynamics == pyspiel.GameType.Dynamics.SEQUENTIAL
        ):
            # Its generator lives across calls, so successive playouts differ; seeded, they repeat.
            evaluator = pyspiel.RandomRolloutEvaluator(rollouts, seed)
            self._search = pyspiel.MCTSBot(game, evaluator, 2.0, 1, 1, False, seed, False).mcts_search
            self._value = self._zero_sum_value
        else:
            self._bots = [pyspiel.make_uniform_random_bot(p, (seed * 7919 + p) % 2**31) for p in range(self.num_players)]
            self._value = self._bots_value
        # One read-only prior array per action count, shared by every node with that many actions.
        self._uniform: dict[int, np.ndarray] = {}
        self.calls = 0
        self.leaves = 0
        self.seconds = 0.0

    def uniform(self, count: int) -> np.ndarray:
        priors = self._uniform.get(count)
        if priors is None:
            priors = self._uniform[count] = np.full(count, 1.0 / count)
            priors.flags.writeable = False
        return priors

    def evaluate(
        self, states: Sequence[pyspiel.State], legal_actions: Sequence[Sequence[int]]
    ) -> tuple[list[np.ndarray], np.ndarray]:
        started = time.perf_counter()
        priors = [self.uniform(len(actions)) for actions in legal_actions]
        values = [self._value(state) for state in states]
        result = np.array(values, dtype=np.float64).reshape(len(states), self.num_players)
        self.calls += 1
        self.leaves += len(states)
        self.seconds += time.perf_counter() - started
        return priors, result

    def playout(self, state: pyspiel.State) -> list[float]:
        """The value `evaluate` gives a non-terminal `state`, as Python floats, for a search that
        evaluates one leaf at a time and needs no priors: it skips the batch array it would only
        take apart again. The same generators draw in the same order as in `evaluate`."""
        started = time.perf_counter()
        value = self._value(state)
        self.calls += 1
        self.leaves += 1
        self.seconds += time.perf_counter() - started
        return value

    def _zero_sum_value(self, state: pyspiel.State) -> list[float]:
        mean = self._search(state).total_reward
        return [mean, -mean] if state.current_player() == 0 else [-mean, mean]

    def _bots_value(self, state: pyspiel.State) -> list[float]:
        bots, evaluate_bots = self._bots, pyspiel.evaluate_bots
        total = None
        for _ in range(self.rollouts):
            returns = evaluate_bots(state.clone(), bots, 0)
            total = returns if total is None else [t + r for t, r in zip(total, returns)]
        return total if self.rollouts == 1 else [t / self.rollouts for t in total]

    def stats(self) -> dict[str, float]:
        return _stats(self.calls, self.leaves, self.seconds)


class NetworkEvaluator:
    """One forward pass per call over the observation tensors of all given leaves.

    The network gives logits over all distinct actions; priors are its softmax restricted to the
    legal actions. A network with one value output (two-player games) scores the player to move,
    and the opponent gets the negation; otherwise the outputs are per seat.
    """

    def __init__(self, model: torch.nn.Module, game: pyspiel.Game, device: str = "cpu", precision: str = "auto") -> None:
        # The form the inference servers run (folded batch norms, their precision and layout), so a
        # search gets the same numbers in process as served, for the same batch.
        self.network = PreparedNetwork(model, device, precision)
        self.observation_shape = tuple(game.observation_tensor_shape())
        self.num_players = game.num_players()
        self.num_actions = game.num_distinct_actions()
        # OpenSpiel's observer writes straight into a numpy buffer, about ten times cheaper per
        # leaf than converting the Python list that State.observation_tensor() returns.
        self._observation = make_observation(game)
        self.calls = 0
        self.leaves = 0
        self.seconds = 0.0
        self.network_seconds = 0.0

    def observations(self, states: Sequence[pyspiel.State], players: Sequence[int]) -> np.ndarray:
        """The batch [len(states), *observation_shape] of each state seen by the given player."""
        if self._observation is None:
            flat = np.array([s.observation_tensor(p) for s, p in zip(states, players)], dtype=np.float32)
        else:
            observation = self._observation
            flat = np.empty((len(states), observation.tensor.size), dtype=np.float32)
            for i, (state, player) in enumerate(zip(states, players)):
                observation.set_from(state, player)
                flat[i] = observation.tensor
        return flat.reshape(len(states), *self.observation_shape)

    def forward(self, observations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw network outputs (logits, values) as numpy arrays for a [B, *shape] float32 batch."""
        started = time.perf_counter()
        logits, values = self.network(observations)
        self.network_seconds += time.perf_counter() - started
        return logits.astype(np.float64), values.astype(np.float64)

    def evaluate(
        self, states: Sequence[pyspiel.State], legal_actions: Sequence[Sequence[int]]
    ) -> tuple[list[np.ndarray], np.ndarray]:
        started = time.perf_counter()
        players = [s.current_player() for s in states]
        logits, raw_values = self.forward(self.observations(states, players))
        return self._answer(legal_actions, players, logits, raw_values, time.perf_counter() - started)

    def _answer(self, legal_actions: Sequence[Sequence[int]], players: list[int], logits: np.ndarray,
                raw_values: np.ndarray, spent_s: float) -> tuple[list[np.ndarray], np.ndarray]:
        """Priors and per-seat values from the network's raw outputs; counts the call, `spent_s` of it before this."""
        started = time.perf_counter()
        count = len(players)
        # Softmax over the legal actions of each row, for the whole batch at once.
        legal = np.zeros((count, self.num_actions), dtype=bool)
        for row, actions in enumerate(legal_actions):
            legal[row, actions] = True
        logits = np.where(legal, logits, -np.inf)
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        priors = [probs[row, actions] for row, actions in enumerate(legal_actions)]
        if raw_values.shape[1] == 1 and self.num_players == 2:
            seats = np.array(players, dtype=np.intp)
            rows = np.arange(count)
            values = np.empty((count, 2))
            values[rows, seats] = raw_values[:, 0]
            values[rows, 1 - seats] = -raw_values[:, 0]
        else:
            values = raw_values
        self.calls += 1
        self.leaves += count
        self.seconds += spent_s + time.perf_counter() - started
        return priors, values

    def stats(self) -> dict[str, float]:
        stats = _stats(self.calls, self.leaves, self.seconds)
        stats["network_s"] = self.network_seconds
        return stats


def make_evaluator(model_id: str | None, ctx: AgentContext, *, rollouts: int = 1, seed: int = 0) -> LeafEvaluator:
    """A network evaluator for `model_id` (loaded through `ctx.load_model`, run on `ctx.device` in
    `ctx.precision`), else rollouts.

    The loader may return a network module or a checkpoint with `.model`.
    """
    game = ctx.games.load(ctx.board_type)
    if model_id is None:
        return RolloutEvaluator(game, rollouts=rollouts, seed=seed)
    if ctx.load_model is None:
        raise ValueError(f"agent needs model {model_id!r} but this context has no model loader")
    loaded = ctx.load_model(model_id)
    return NetworkEvaluator(getattr(loaded, "model", loaded), game, device=ctx.device, precision=ctx.precision)
