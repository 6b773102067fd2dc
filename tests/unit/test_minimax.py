"""Alpha-beta minimax over the heuristic or a registered evaluator."""
from __future__ import annotations

import numpy as np
import pyspiel
import pytest

from orchestrator.play.agents import AgentContext, InvalidAgent, make_agent
from orchestrator.play.features import EVAL_BOUND, terminal_value
from orchestrator.play.games import BUILTIN
from orchestrator.play.heuristic import HeuristicEvaluator
from orchestrator.play.minimax import StateEvaluator, make_minimax_agent

TTT = AgentContext(board_type="tic_tac_toe", seed=0)


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
def test_solving_depth_never_loses_tic_tac_toe_to_random(seat):
    agent = make_agent("minimax_9", AgentContext(board_type="tic_tac_toe", seed=seat))
    results = []
    for game in range(25):
        agents = [None, None]
        agents[seat] = agent
        results.append(terminal_value(_play(agents, seed=1000 * seat + game), seat))
    assert min(results) >= 0.0
    assert sum(r > 0 for r in results) >= 15


def test_solving_depth_draws_against_itself():
    first = make_agent("minimax_9", AgentContext(board_type="tic_tac_toe", seed=1))
    second = make_agent("minimax_9", AgentContext(board_type="tic_tac_toe", seed=2))
    for _ in range(3):  # the seeded tie-breaks vary the games
        assert _play([first, second]).returns() == [0.0, 0.0]
        assert _play([second, first]).returns() == [0.0, 0.0]


def test_takes_a_win_in_one_rather_than_blocking_or_waiting():
    # x: 0 1, o: 3 4, x to move: 2 wins now (5 would only block o's row).
    state = _state("tic_tac_toe", [0, 3, 1, 4])
    for depth in (1, 2, 9):
        decision = make_minimax_agent(None, depth).select_many([state])[0]
        assert decision.action == 2
        assert decision.stats["value"] > EVAL_BOUND
        assert decision.policy == {2: 1.0}


def test_prefers_the_faster_of_two_wins():
    # x: 0 4, o: 1 2, x to move: 8 wins now; 6 also wins (fork of 3 and 7) but later.
    state = _state("tic_tac_toe", [0, 1, 4, 2])
    decision = make_minimax_agent(None, 9).select_many([state])[0]
    assert decision.action == 8
    assert decision.stats["value"] == pytest.approx(1.0 - 1e-6 * 5)


def test_blocks_an_immediate_loss():
    # x: 0 1, o: 4, o to move: anything but 2 loses at once.
    state = _state("tic_tac_toe", [0, 4, 1])
    for depth in (2, 3, 9):
        assert make_minimax_agent(None, depth).select_many([state])[0].action == 2


def test_sees_a_forced_loss_and_delays_it():
    # x: 0 4, o: 5, o to move: only 8 stops the diagonal, and x still wins two moves later
    # (a fork); every other move loses at once.
    state = _state("tic_tac_toe", [0, 5, 4])
    decision = make_minimax_agent(None, 9).select_many([state])[0]
    assert decision.action == 8
    assert decision.stats["value"] == pytest.approx(-(1.0 - 1e-6 * 7))


def test_stats_and_search_are_reproducible():
    state = _state("square8", [19, 18])
    a = make_minimax_agent(None, 3, seed=5).select_many([state])[0]
    b = make_minimax_agent(None, 3, seed=5).select_many([state])[0]
    assert a == b
    assert a.stats["depth"] == 3 and a.stats["nodes"] > len(state.legal_actions())


class _CountingEvaluator:
    """A stand-in NNUE network: the heuristic's values, recording the size of every batch."""

    def __init__(self) -> None:
        self.batches: list[int] = []
        self._inner = HeuristicEvaluator()

    def evaluate_many(self, states, player):
        self.batches.append(len(states))
        return self._inner.evaluate_many(states, player)


def test_registered_model_drives_the_search_in_batches():
    network = _CountingEvaluator()
    assert isinstance(network, StateEvaluator)
    ctx = AgentContext(board_type="connect_four", seed=0, load_model={"nnue1": network}.__getitem__)
    agent = make_agent("model:nnue1+minimax_2", ctx)
    state = BUILTIN.load("connect_four").new_initial_state()
    decision = agent.select_many([state])[0]
    assert decision.action in state.legal_actions()
    assert network.batches and max(network.batches) == 7  # a node's children scored together
    assert sum(network.batches) == decision.stats["evaluations"]


def test_a_callable_model_is_accepted_and_bad_answers_are_refused():
    calls = []

    def prefer_centre(states, player):
        calls.append(len(states))
        return [0.5 if s.history()[-1] == 3 else 0.0 for s in states]

    ctx = AgentContext(board_type="connect_four", load_model={"fn": prefer_centre, "short": lambda s, p: [0.0],
                                                               "nan": lambda s, p: [float("nan")] * len(s),
                                                               "junk": 42}.__getitem__)
    state = BUILTIN.load("connect_four").new_initial_state()
    assert make_agent("model:fn+minimax_1", ctx).select_many([state])[0].action == 3
    assert calls == [7]
    for bad in ("short", "nan"):
        with pytest.raises(ValueError):
            make_agent(f"model:{bad}+minimax_1", ctx).select_many([state])
    with pytest.raises(InvalidAgent):
        make_agent("model:junk+minimax_1", ctx)
    with pytest.raises(InvalidAgent):
        make_agent("model:fn+minimax_1", AgentContext(board_type="connect_four"))


def test_refuses_games_negamax_does_not_fit():
    with pytest.raises(InvalidAgent, match="two-player zero-sum"):
        make_agent("minimax_2", AgentContext(board_type="openspiel:cliff_walking"))


def test_connect_four_smoke():
    agent = make_agent("minimax_2", AgentContext(board_type="connect_four", seed=1))
    state = _play([agent, None], board_type="connect_four", seed=3)
    assert state.is_terminal()
    assert terminal_value(state, 0) >= 0.0
