"""Rollout MCTS's fast path: the rollout evaluator's values and priors, and the per-node Q and N + 1 the backups keep."""
from __future__ import annotations

import math

import numpy as np
import pytest

from orchestrator.play.agents import AgentContext, parse_agent
from orchestrator.play.evaluators import RolloutEvaluator
from orchestrator.play.games import BUILTIN
from orchestrator.play.mcts import MCTSAgent, MCTSConfig, build_mcts


def _tic_tac_toe(moves):
    state = BUILTIN.load("tic_tac_toe").new_initial_state()
    for move in moves:
        state.apply_action(move)
    return state


def test_rollout_values_are_per_seat_from_the_winners_view():
    # x o x / o o . / x . x with o (player 1) to move: both empty squares (5 and 7) complete a line for o.
    o_wins = _tic_tac_toe([6, 1, 8, 3, 0, 4, 2])
    # x o x / x o o / o x . with x to move: the last square (8) draws.
    draw = _tic_tac_toe([0, 1, 2, 4, 3, 5, 7, 6])
    assert o_wins.current_player() == 1 and o_wins.legal_actions() == [5, 7] and draw.legal_actions() == [8]
    evaluator = RolloutEvaluator(num_players=2, rollouts=3, seed=4)
    priors, values = evaluator.evaluate([o_wins, draw], [o_wins.legal_actions(), draw.legal_actions()])
    np.testing.assert_array_equal(values, [[-1.0, 1.0], [0.0, 0.0]])
    np.testing.assert_array_equal(priors[0], [0.5, 0.5])
    np.testing.assert_array_equal(priors[1], [1.0])
    assert not o_wins.is_terminal() and not draw.is_terminal()  # the playouts ran on copies
    assert evaluator.stats()["leaves"] == 2.0 and evaluator.stats()["network_calls"] == 1.0


def test_rollout_values_average_real_playouts_and_repeat_at_a_seed():
    states = [BUILTIN.load("square8").new_initial_state() for _ in range(6)]
    legal = [s.legal_actions() for s in states]

    def run(seed):
        return RolloutEvaluator(num_players=2, rollouts=4, seed=seed).evaluate(states, legal)[1]

    values = run(1)
    assert values.shape == (6, 2) and np.all(np.abs(values) <= 1.0)
    np.testing.assert_array_equal(values.sum(axis=1), 0.0)  # Othello is zero-sum
    assert np.all(values * 4 == np.round(values * 4))  # a mean of four results in {-1, 0, 1}
    np.testing.assert_array_equal(values, run(1))
    assert len({tuple(row) for row in values}) > 1  # successive playouts differ


def test_shared_uniform_priors_cannot_be_changed_in_place():
    evaluator = RolloutEvaluator(num_players=2)
    priors = evaluator.uniform(4)
    assert priors is evaluator.uniform(4)
    with pytest.raises(ValueError):
        priors[0] = 1.0


def _expanded(node):
    yield node
    for child in node.children:
        if child is not None and child.actions is not None:
            yield from _expanded(child)


@pytest.mark.parametrize("options", [{}, {"leaves_per_game": 3}, {"dirichlet_epsilon": 0.25}])
def test_backups_keep_q_and_n_plus_one_and_selection_is_plain_puct(options):
    agent = build_mcts(parse_agent("mcts_64"), AgentContext("connect_four", seed=2), tree_reuse=True, **options)
    states = [BUILTIN.load("connect_four").new_initial_state() for _ in range(2)]
    states[1].apply_action(3)
    agent.select_many(states)
    roots = [root for trees in agent._trees.values() for root in trees]
    assert len(roots) == 2
    for root in roots:
        nodes = list(_expanded(root))
        assert len(nodes) > 10
        for node in nodes:
            N, W = np.array(node.N), np.array(node.W)
            np.testing.assert_array_equal(node.Q, W / np.maximum(N, 1.0))
            np.testing.assert_array_equal(node.N1, N + 1.0)
            assert node.visits == N.sum()
            # The textbook PUCT score from N and W alone, in numpy, picks the same child.
            explore = (agent.config.c_puct * math.sqrt(node.visits + 1)) * np.array(node.priors) / (N + 1.0)
            assert agent.choose(node) == int(np.argmax(W / np.maximum(N, 1.0) + explore))


class _BatchOnlyRollouts(RolloutEvaluator):
    """The rollout evaluator without its one-leaf entry point, so each leaf goes through `_evaluate`."""

    evaluate_one = None


@pytest.mark.parametrize("options", [{}, {"dirichlet_epsilon": 0.25}])
def test_the_one_leaf_rollout_entry_point_searches_as_the_batch_one(options):
    def search(evaluator_type):
        agent = MCTSAgent("mcts_96", evaluator_type(num_players=2, seed=3), MCTSConfig(96, **options), seed=3)
        state = BUILTIN.load("square8").new_initial_state()
        decisions = []
        for _ in range(4):
            decision = agent.select_many([state])[0]
            decisions.append((decision.action, decision.policy, decision.stats["mean_depth"]))
            state.apply_action(decision.action)
        return decisions, agent.evaluator.stats()["leaves"]

    assert search(RolloutEvaluator) == search(_BatchOnlyRollouts)
