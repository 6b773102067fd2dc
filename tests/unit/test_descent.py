"""Descent: unbounded best-first minimax with completion."""
from __future__ import annotations

import numpy as np
import pyspiel
import pytest

from orchestrator.play.agents import AgentContext, InvalidAgent, make_agent
from orchestrator.play.descent import DEFAULT_ITERATIONS, make_descent_agent
from orchestrator.play.features import EVAL_BOUND, terminal_value
from orchestrator.play.games import BUILTIN
from orchestrator.play.heuristic import HeuristicEvaluator


def _state(board_type: str, actions: list[int]) -> pyspiel.State:
    state = BUILTIN.load(board_type).new_initial_state()
    for action in actions:
        state.apply_action(action)
    return state


def _play(agents, board_type: str = "tic_tac_toe", seed: int = 0) -> pyspiel.State:
    """Play one game; a None agent moves uniformly at random from a seeded generator."""
    state = BUILTIN.load(board_type).new_initial_state()
    rng = np.random.default_rng(seed)
    while not state.is_terminal():
        agent = agents[state.current_player()]
        if agent is None:
            legal = state.legal_actions()
            action = int(legal[rng.integers(len(legal))])
        else:
            action = agent.select_many([state])[0].action
            assert action in state.legal_actions()
        state.apply_action(action)
    return state


@pytest.mark.parametrize("seat", [0, 1])
def test_never_loses_tic_tac_toe_to_random(seat):
    agent = make_agent("descent", AgentContext(board_type="tic_tac_toe", seed=seat))
    results = []
    for game in range(25):
        agents = [None, None]
        agents[seat] = agent
        results.append(terminal_value(_play(agents, seed=2000 * seat + game), seat))
    assert min(results) >= 0.0
    assert sum(r > 0 for r in results) >= 15


def test_draws_against_minimax_and_itself():
    ctx = AgentContext(board_type="tic_tac_toe", seed=3)
    descent, other_descent = make_agent("descent", ctx), make_agent("descent_300", AgentContext("tic_tac_toe", seed=4))
    minimax = make_agent("minimax_9", ctx)
    for pairing in ([descent, minimax], [minimax, descent], [descent, other_descent], [other_descent, descent]):
        assert _play(pairing).returns() == [0.0, 0.0]


def test_takes_a_win_in_one_and_proves_it():
    # x: 0 1, o: 3 4, x to move: 2 wins now.
    state = _state("tic_tac_toe", [0, 3, 1, 4])
    decision = make_descent_agent(HeuristicEvaluator(), iterations=50).select_many([state])[0]
    assert decision.action == 2
    assert decision.policy == {2: 1.0}
    assert decision.stats["resolved"] == 1.0 and decision.stats["value"] > EVAL_BOUND
    assert decision.stats["iterations"] == 1  # the root is resolved by its first expansion


def test_blocks_an_immediate_loss():
    # x: 0 1, o: 4, o to move: anything but 2 loses at once.
    state = _state("tic_tac_toe", [0, 4, 1])
    for iterations in (5, 50):
        assert make_descent_agent(HeuristicEvaluator(), iterations).select_many([state])[0].action == 2


def test_proves_a_forced_loss_and_delays_it():
    # x: 0 4, o: 5, o to move: only 8 stops the diagonal; x's fork still wins two moves later.
    state = _state("tic_tac_toe", [0, 5, 4])
    decision = make_descent_agent(HeuristicEvaluator(), 200).select_many([state])[0]
    assert decision.action == 8
    assert decision.stats["resolved"] == 1.0
    assert decision.stats["value"] == pytest.approx(-(1.0 - 1e-6 * 7))


def test_stops_when_the_root_is_resolved_and_reuses_the_tree():
    agent = make_descent_agent(HeuristicEvaluator(), 10_000, seed=1)
    state = _state("tic_tac_toe", [4])
    first = agent.select_many([state])[0]
    assert first.stats["resolved"] == 1.0 and first.stats["value"] == 0.0  # a draw with best play
    assert first.stats["iterations"] < 10_000
    state.apply_action(first.action)
    state.apply_action(state.legal_actions()[0])
    again = agent.select_many([state])[0]  # two moves on: inside the solved tree
    assert again.stats["evaluations"] == 0


class _CountingEvaluator:
    """A stand-in NNUE network: the heuristic's values, recording the size of every batch."""

    def __init__(self) -> None:
        self.batches: list[int] = []
        self._inner = HeuristicEvaluator()

    def evaluate_many(self, states, player):
        self.batches.append(len(states))
        return self._inner.evaluate_many(states, player)


def test_expansion_evaluates_all_children_in_one_call():
    network = _CountingEvaluator()
    ctx = AgentContext(board_type="tic_tac_toe", load_model={"nnue1": network}.__getitem__)
    agent = make_agent("model:nnue1+descent_1", ctx)
    decision = agent.select_many([BUILTIN.load("tic_tac_toe").new_initial_state()])[0]
    # One descent from the empty board expands one node per ply, each in a single call, until
    # a node whose children decide the game.
    assert network.batches[:3] == [9, 8, 7]
    assert sum(network.batches) == decision.stats["evaluations"]
    assert decision.stats["iterations"] == 1 and decision.stats["depth"] == len(network.batches) - 1


def test_budget_and_name():
    ctx = AgentContext(board_type="connect_four", seed=0)
    assert make_agent("descent", ctx).iterations == DEFAULT_ITERATIONS
    agent = make_agent("descent_7", ctx)
    assert agent.iterations == 7 and agent.name == "descent_7"
    decision = agent.select_many([BUILTIN.load("connect_four").new_initial_state()])[0]
    assert decision.stats["iterations"] == 7


def test_refuses_games_it_does_not_fit():
    with pytest.raises(InvalidAgent, match="two-player zero-sum"):
        make_agent("descent", AgentContext(board_type="openspiel:cliff_walking"))


def test_connect_four_smoke():
    agent = make_agent("descent_20", AgentContext(board_type="connect_four", seed=2))
    state = _play([None, agent], board_type="connect_four", seed=5)
    assert state.is_terminal()
    assert terminal_value(state, 1) >= 0.0


def test_batched_selection_keeps_games_apart():
    agent = make_descent_agent(HeuristicEvaluator(), 30, seed=0)
    states = [_state("tic_tac_toe", []), _state("tic_tac_toe", [4]), _state("tic_tac_toe", [0, 3, 1, 4])]
    decisions = agent.select_many(states)
    assert [d.action in s.legal_actions() for d, s in zip(decisions, states)] == [True, True, True]
    assert decisions[2].action == 2
