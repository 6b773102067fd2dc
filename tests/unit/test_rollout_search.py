"""Rollout MCTS's fast path: the rollout evaluator's values and priors, and the per-node Q and N + 1 the backups keep."""
from __future__ import annotations

import math

import numpy as np
import pyspiel
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
    # x . x / o o x / o x o with x to move: the last square (1) wins for x.
    x_wins = _tic_tac_toe([0, 3, 2, 4, 5, 6, 7, 8])
    assert o_wins.current_player() == 1 and o_wins.legal_actions() == [5, 7] and draw.legal_actions() == [8]
    assert x_wins.current_player() == 0 and x_wins.legal_actions() == [1]
    states = [o_wins, draw, x_wins]
    evaluator = RolloutEvaluator(BUILTIN.load("tic_tac_toe"), rollouts=3, seed=4)
    priors, values = evaluator.evaluate(states, [s.legal_actions() for s in states])
    np.testing.assert_array_equal(values, [[-1.0, 1.0], [0.0, 0.0], [1.0, -1.0]])
    np.testing.assert_array_equal(priors[0], [0.5, 0.5])
    np.testing.assert_array_equal(priors[1], [1.0])
    assert not any(s.is_terminal() for s in states)  # the playouts ran on copies
    assert evaluator.stats()["leaves"] == 3.0 and evaluator.stats()["network_calls"] == 1.0
    assert evaluator.playout(x_wins) == [1.0, -1.0] and evaluator.stats()["leaves"] == 4.0


def test_games_other_than_two_player_zero_sum_score_every_seat_from_the_playout_itself():
    game = pyspiel.load_game("cliff_walking")  # one player, general-sum: no value is a negation of another
    states = [game.new_initial_state() for _ in range(8)]
    legal = [s.legal_actions() for s in states]

    def run(seed):
        return RolloutEvaluator(game, rollouts=2, seed=seed).evaluate(states, legal)[1]

    values = run(5)
    assert values.shape == (8, 1) and np.all(values < 0)  # every step of the walk costs one
    assert np.all(values * 2 == np.round(values * 2))  # a mean of two integer returns
    np.testing.assert_array_equal(values, run(5))
    assert len(set(values[:, 0].tolist())) > 1
    assert all(s.move_number() == 0 for s in states)


def test_shared_uniform_priors_cannot_be_changed_in_place():
    evaluator = RolloutEvaluator(BUILTIN.load("square8"))
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
    """The rollout evaluator without its one-leaf entry point, so PUCT keeps every leaf as a node and each goes through `_evaluate`."""

    playout = None


@pytest.mark.parametrize("options", [{}, {"dirichlet_epsilon": 0.25}])
def test_the_one_leaf_rollout_entry_point_searches_as_the_batch_one(options):
    def search(evaluator_type):
        agent = MCTSAgent("mcts_96", evaluator_type(BUILTIN.load("square8"), seed=3), MCTSConfig(96, **options), seed=3)
        state = BUILTIN.load("square8").new_initial_state()
        decisions = []
        for _ in range(4):
            decision = agent.select_many([state])[0]
            decisions.append((decision.action, decision.policy, decision.stats["mean_depth"]))
            state.apply_action(decision.action)
        return decisions, agent.evaluator.stats()["leaves"]

    assert search(RolloutEvaluator) == search(_BatchOnlyRollouts)


def test_one_leaf_rollout_search_keeps_a_leaf_as_a_node_once_it_is_reached_again():
    agent = build_mcts(parse_agent("mcts_300"), AgentContext("square8", seed=1), tree_reuse=True)
    state = BUILTIN.load("square8").new_initial_state()
    decision = agent.select_many([state])[0]
    (root,) = [root for trees in agent._trees.values() for root in trees]
    nodes = list(_expanded(root))
    assert root.visits == 300 and decision.stats["simulations"] == 300.0
    # Leaves reached once left only their visit in the parent: fewer nodes than playouts.
    assert 10 < len(nodes) < 300 / 2
    for node in nodes:
        assert node.visits == sum(node.N)
        for visits, child in zip(node.N, node.children):
            assert (child is None) == (visits <= 1)
