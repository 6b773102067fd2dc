"""Gumbel AlphaZero root search: the halving schedule, a hand-built bandit, and legal play in real games."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from orchestrator.nn.resnet import PolicyValueNet, ResNetConfig
from orchestrator.play.agents import AgentContext, make_agent, parse_agent
from orchestrator.play.games import BUILTIN
from orchestrator.play.gumbel import GumbelAgent, GumbelConfig, build_gumbel, completed_q, halving_schedule
from orchestrator.play.mcts import Node


class BanditState:
    """A one-move game: player 0 picks an arm and receives its fixed payoff (player 1 the negation).

    It has the parts of pyspiel.State that search touches, so the search runs on it unchanged.
    """

    def __init__(self, payoffs, chosen=None):
        self.payoffs = payoffs
        self.chosen = chosen

    def is_terminal(self):
        return self.chosen is not None

    def current_player(self):
        return -4 if self.is_terminal() else 0

    def returns(self):
        value = self.payoffs[self.chosen] if self.is_terminal() else 0.0
        return [value, -value]

    def legal_actions(self):
        return [] if self.is_terminal() else list(range(len(self.payoffs)))

    def child(self, action):
        return BanditState(self.payoffs, action)


def _root_after_search(agent, state):
    """Run the agent's simulations on one root and return the root and its Gumbel data (white box)."""
    root = Node(state)
    agent._evaluate([root])
    data = agent.init_root(root, agent.simulations)
    choices = []
    for _ in range(agent.simulations):
        path, leaf = agent._descend(root, data)
        choices.append(path[0][1])
        agent._backup(path, leaf.returns)
    return root, data, choices


class BanditRollouts:
    """What random rollouts converge to on a bandit: uniform priors and the mean payoff of the arms."""

    num_players = 2

    def __init__(self):
        self.calls = self.leaves = 0
        self.seconds = 0.0

    def evaluate(self, states, legal_actions):
        self.calls += 1
        self.leaves += len(states)
        values = [[float(np.mean(s.payoffs)), -float(np.mean(s.payoffs))] for s in states]
        return [np.full(len(actions), 1.0 / len(actions)) for actions in legal_actions], np.array(values)

    def stats(self):
        return {"network_calls": float(self.calls), "leaves": float(self.leaves)}


def _bandit_agent(simulations, seed=0, **options):
    config = GumbelConfig(simulations=simulations, c_scale=1.0, **options)
    return GumbelAgent("gumbel_bandit", BanditRollouts(), config, seed=seed)


def test_halving_schedule_phases():
    # 4 arms, 16 simulations: two phases; 4 arms x 2 visits, then the best 2 x 4 visits.
    assert halving_schedule(4, 16) == (0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5)
    # 8 arms, 24 simulations: 8 x 1, 4 x 2, then 2 arms share the remaining 8.
    assert halving_schedule(8, 24) == (0,) * 8 + (1,) * 4 + (2,) * 4 + (3, 3, 4, 4, 5, 5, 6, 6)
    assert halving_schedule(1, 3) == (0, 1, 2)
    assert len(halving_schedule(16, 200)) == 200


@pytest.mark.parametrize("seed", range(5))
def test_sequential_halving_on_a_bandit_keeps_the_best_arms(seed):
    payoffs = [-0.8, 0.1, -0.2, 0.9, -0.5, 0.3, -0.9, 0.0]
    agent = _bandit_agent(24, seed=seed)
    decision = agent.select_many([BanditState(payoffs)])[0]
    assert decision.action == 3
    # Visits follow the halving: all 8 arms once, the best 4 twice more, the best 2 four times more.
    root, _, _ = _root_after_search(_bandit_agent(24, seed=seed), BanditState(payoffs))
    visits = dict(zip(root.actions, root.N.astype(int).tolist()))
    assert sorted(visits.values()) == [1, 1, 1, 1, 3, 3, 7, 7]
    ranked = sorted(visits, key=lambda a: -payoffs[a])
    assert {visits[a] for a in ranked[:2]} == {7}
    assert {visits[a] for a in ranked[2:4]} == {3}
    # The improved policy puts most of its mass on the best arm.
    assert max(decision.policy, key=decision.policy.get) == 3


def test_gumbel_top_k_considers_m_arms_with_the_largest_gumbel_plus_logit():
    payoffs = list(np.linspace(-1, 1, 20))
    _, data, choices = _root_after_search(_bandit_agent(8, max_considered=4), BanditState(payoffs))
    root_choices = Counter(choices)
    assert set(root_choices) == set(np.argsort(-(data.gumbel + data.logits))[:4].tolist())
    assert sorted(root_choices.values()) == [1, 1, 3, 3]


def test_completed_q_uses_the_mixed_value_for_unvisited_actions():
    N = np.array([2.0, 0.0, 1.0])
    W = np.array([1.0, 0.0, -1.0])  # Q = 0.5 and -1.0 for the visited actions
    priors = np.array([0.5, 0.25, 0.25])
    sigma = completed_q(N, W, priors, raw_value=0.0, c_visit=50.0, c_scale=0.1)
    # mixed = (0 + 3 * (0.5*0.5 + 0.25*-1) / 0.75) / 4 = 0; rescaled to [0, 1]: 1, 2/3, 0
    assert sigma == pytest.approx((50 + 2) * 0.1 * np.array([1.0, 2 / 3, 0.0]))


@pytest.mark.parametrize("board_type", ["square8", "tic_tac_toe", "connect_four"])
def test_gumbel_plays_legal_moves_with_rollouts(board_type):
    game = BUILTIN.load(board_type)
    agent = make_agent("gumbel_16", AgentContext(board_type, seed=4))
    states = [game.new_initial_state() for _ in range(3)]
    for _ in range(6):
        live = [s for s in states if not s.is_terminal()]
        for state, decision in zip(live, agent.select_many(live)):
            assert decision.action in state.legal_actions()
            assert set(decision.policy) <= set(state.legal_actions())
            assert sum(decision.policy.values()) == pytest.approx(1.0)
            state.apply_action(decision.action)


def test_gumbel_with_a_network_batches_across_games():
    torch.manual_seed(0)
    net = PolicyValueNet(ResNetConfig.for_game(BUILTIN.spec("square8"), blocks=1, channels=8))
    ctx = AgentContext("square8", seed=1, load_model=lambda model_id: net)
    agent = build_gumbel(parse_agent("model:tiny+gumbel_8"), ctx, leaves_per_game=2)
    states = [BUILTIN.load("square8").new_initial_state() for _ in range(6)]
    decisions = agent.select_many(states)
    assert all(d.action in s.legal_actions() for s, d in zip(states, decisions))
    assert decisions[0].stats["leaves_per_call"] > 6
