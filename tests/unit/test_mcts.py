"""Batched PUCT MCTS: strength against random, forced wins, batching of leaves across games."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from orchestrator.nn.resnet import PolicyValueNet, ResNetConfig
from orchestrator.play.agents import AgentContext, make_agent, parse_agent
from orchestrator.play.evaluators import NetworkEvaluator
from orchestrator.play.games import BUILTIN
from orchestrator.play.mcts import build_mcts


def _play_against_random(agent, board_type: str, games: int) -> list[float]:
    """All games in lock-step; the searching agent takes seat (game % 2). Returns its score per game."""
    game = BUILTIN.load(board_type)
    opponent = make_agent("random", AgentContext(board_type, seed=99))
    states = [game.new_initial_state() for _ in range(games)]
    seats = [i % 2 for i in range(games)]
    while any(not s.is_terminal() for s in states):
        for player in (agent, opponent):
            live = [i for i, s in enumerate(states) if not s.is_terminal()]
            turn = [i for i in live if (states[i].current_player() == seats[i]) == (player is agent)]
            if turn:
                for i, decision in zip(turn, player.select_many([states[i] for i in turn])):
                    assert decision.action in states[i].legal_actions()
                    states[i].apply_action(decision.action)
    return [(s.returns()[seat] + 1) / 2 for s, seat in zip(states, seats)]


def test_mcts_200_beats_random_on_square8():
    agent = make_agent("mcts_200", AgentContext("square8", seed=7))
    scores = _play_against_random(agent, "square8", games=20)
    assert sum(s == 1.0 for s in scores) >= 18, scores


def _tic_tac_toe(moves):
    state = BUILTIN.load("tic_tac_toe").new_initial_state()
    for move in moves:
        state.apply_action(move)
    return state


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_puct_finds_the_forced_win_in_tic_tac_toe(seed):
    # x o x / . . . / . o .  with x to move: only the centre (4) wins, by a double threat.
    state = _tic_tac_toe([0, 1, 2, 7])
    agent = make_agent("mcts_400", AgentContext("tic_tac_toe", seed=seed))
    decision = agent.select_many([state])[0]
    assert decision.action == 4
    assert max(decision.policy, key=decision.policy.get) == 4
    assert sum(decision.policy.values()) == pytest.approx(1.0)


def test_puct_takes_an_immediate_win_and_blocks():
    win = _tic_tac_toe([0, 3, 1, 4])  # x x . / o o . : x wins at 2 (o would win at 5)
    block = _tic_tac_toe([0, 3, 1])  # x x . / o . . : o must block at 2
    agent = make_agent("mcts_200", AgentContext("tic_tac_toe", seed=3))
    assert [d.action for d in agent.select_many([win, block])] == [2, 2]


def test_forced_move_needs_no_search():
    state = _tic_tac_toe([0, 1, 2, 4, 3, 5, 7, 6])  # one empty square left
    decision = make_agent("mcts_50", AgentContext("tic_tac_toe")).select_many([state])[0]
    assert decision.action == 8 and decision.policy == {8: 1.0} and decision.stats["simulations"] == 0


def _tiny_net_context(board_type: str, seed: int = 0) -> AgentContext:
    torch.manual_seed(seed)
    net = PolicyValueNet(ResNetConfig.for_game(BUILTIN.spec(board_type), blocks=1, channels=8))
    return AgentContext(board_type, seed=seed, load_model=lambda model_id: net)


def _openings(board_type: str, count: int):
    game, rng = BUILTIN.load(board_type), random.Random(5)
    states = []
    for i in range(count):
        state = game.new_initial_state()
        for _ in range(i % 6):
            state.apply_action(rng.choice(state.legal_actions()))
        states.append(state)
    return states


def test_network_mcts_batches_one_leaf_per_game_per_call():
    states = _openings("square8", 8)
    agent = build_mcts(parse_agent("model:tiny+mcts_16"), _tiny_net_context("square8"))
    decisions = agent.select_many(states)
    for state, decision in zip(states, decisions):
        assert decision.action in state.legal_actions()
        assert sum(decision.policy.values()) == pytest.approx(1.0)
        assert decision.stats["simulations"] == 16 and decision.stats["mean_depth"] >= 1
    # one call for the roots, then one per simulation round: 8 leaves each
    assert decisions[0].stats["network_calls"] == 17
    assert decisions[0].stats["leaves_per_call"] == pytest.approx(8.0)


def test_single_leaf_mode_and_virtual_loss_change_only_the_batching():
    states = _openings("square8", 4)
    single = build_mcts(parse_agent("model:tiny+mcts_16"), _tiny_net_context("square8"), max_batch=1)
    assert single.select_many(states)[0].stats["leaves_per_call"] == 1.0
    wide = build_mcts(parse_agent("model:tiny+mcts_16"), _tiny_net_context("square8"), leaves_per_game=4)
    decisions = wide.select_many(states)
    assert decisions[0].stats["leaves_per_call"] > 4.0
    assert all(d.action in s.legal_actions() for s, d in zip(states, decisions))
    # virtual loss is undone: every simulation leaves exactly one visit behind
    assert all(sum(d.policy.values()) == pytest.approx(1.0) for d in decisions)


def test_root_noise_is_seeded():
    states = _openings("square8", 3)
    first = build_mcts(parse_agent("mcts_32"), AgentContext("square8", seed=11), dirichlet_epsilon=0.25)
    second = build_mcts(parse_agent("mcts_32"), AgentContext("square8", seed=11), dirichlet_epsilon=0.25)
    assert [d.policy for d in first.select_many(states)] == [d.policy for d in second.select_many(states)]


def test_network_evaluator_matches_the_network_on_legal_moves():
    torch.manual_seed(3)
    game = BUILTIN.load("square8")
    net = PolicyValueNet(ResNetConfig.for_game(BUILTIN.spec("square8"), blocks=1, channels=8)).eval()
    evaluator = NetworkEvaluator(net, game, precision="float32")  # exact: this checks the arithmetic around the net
    states = _openings("square8", 5)
    players = [s.current_player() for s in states]
    observations = evaluator.observations(states, players)
    expected = np.array([s.observation_tensor() for s in states], dtype=np.float32).reshape(observations.shape)
    np.testing.assert_array_equal(observations, expected)
    legal = [s.legal_actions() for s in states]
    priors, values = evaluator.evaluate(states, legal)
    with torch.inference_mode():
        logits, raw = net(torch.from_numpy(expected))
    for row, (actions, prior) in enumerate(zip(legal, priors)):
        np.testing.assert_allclose(prior, torch.softmax(logits[row, actions], 0).numpy(), rtol=1e-4, atol=1e-6)
        # one value output: the player to move gets it, the opponent its negation
        assert values[row, players[row]] == pytest.approx(raw[row, 0].item(), abs=1e-5)
        assert values[row, 1 - players[row]] == pytest.approx(-raw[row, 0].item(), abs=1e-5)
    assert evaluator.stats()["leaves_per_call"] == 5.0
