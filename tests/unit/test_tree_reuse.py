"""Tree reuse: the subtree under the move played seeds the next search (PUCT and Gumbel)."""
from __future__ import annotations

import random

import numpy as np
import pytest

from orchestrator.play.agents import AgentContext, parse_agent
from orchestrator.play.evaluators import RolloutEvaluator
from orchestrator.play.games import BUILTIN
from orchestrator.play.gumbel import GumbelAgent, GumbelConfig, build_gumbel
from orchestrator.play.mcts import MCTSAgent, MCTSConfig, build_mcts


class Recording:
    """Records every searched root as its search starts, through the real `init_root` hook."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.started = []  # (root, its visit counts at the start, this search's budget, root data)

    def init_root(self, root, simulations):
        data = super().init_root(root, simulations)
        self.started.append((root, np.array(root.N), simulations, data))
        return data


class RecordingMCTS(Recording, MCTSAgent):
    pass


class RecordingGumbel(Recording, GumbelAgent):
    pass


def _agent(kind: str, simulations: int, seed: int = 0, **options):
    evaluator = RolloutEvaluator(BUILTIN.load("tic_tac_toe"), seed=seed)
    if kind == "mcts":
        config = MCTSConfig(simulations, dirichlet_epsilon=0.25, tree_reuse=True, **options)
        return RecordingMCTS(f"mcts_{simulations}", evaluator, config, seed=seed)
    config = GumbelConfig(simulations, tree_reuse=True, **options)
    return RecordingGumbel(f"gumbel_{simulations}", evaluator, config, seed=seed)


@pytest.mark.parametrize("kind", ["mcts", "gumbel"])
def test_the_reused_root_is_the_chosen_child_with_its_visit_counts(kind):
    state = BUILTIN.load("tic_tac_toe").new_initial_state()
    agent = _agent(kind, 48)
    first = agent.select_many([state])[0]
    root = agent.started[-1][0]
    child = root.children[root.actions.index(first.action)]
    counts = np.array(child.N)
    assert counts.sum() == root.N[root.actions.index(first.action)] - 1 > 0  # all but the visit that expanded it

    state.apply_action(first.action)
    second = agent.select_many([state])[0]
    reused, counts_at_start, budget, _ = agent.started[-1]
    assert reused is child
    np.testing.assert_array_equal(counts_at_start, counts)
    assert second.stats["carried_simulations"] == counts.sum()
    assert budget == second.stats["simulations"] == 48 - counts.sum()
    # The budget counts the root's visits: carried plus new, every one on a legal move.
    assert sum(reused.N) == 48 and reused.actions == state.legal_actions()
    assert second.action in state.legal_actions() and set(second.policy) <= set(state.legal_actions())


# Moves played at these seeds with reuse off. First recorded from the code before tree reuse existed;
# re-recorded once, when rollouts moved to OpenSpiel's RandomRolloutEvaluator and its random stream
# (the network paths never changed). With reuse off, the search must not change by accident.
_BEFORE_REUSE = [
    (build_mcts, "mcts_24", "tic_tac_toe", 5, {"dirichlet_epsilon": 0.25}, 3, 9,
     [[6, 2, 3, 0, 1, 8, 4, 5], [4, 1, 3, 6, 0, 8, 5], [4, 0, 7, 1, 2, 6, 3, 5, 8]]),
    (build_gumbel, "gumbel_24", "connect_four", 5, {}, 3, 8,
     [[1, 5, 6, 3, 4, 6, 3, 1], [0, 3, 1, 5, 4, 0, 3, 5], [2, 2, 6, 5, 6, 2, 0, 6]]),
    (build_mcts, "mcts_24", "connect_four", 2, {"dirichlet_epsilon": 0.25, "leaves_per_game": 3}, 2, 6,
     [[5, 3, 3, 0, 2, 0], [3, 0, 0, 4, 3, 3]]),
]


@pytest.mark.parametrize("build, name, board_type, seed, options, games, plies, expected", _BEFORE_REUSE)
def test_without_reuse_the_moves_at_these_seeds_stay_as_recorded(
    build, name, board_type, seed, options, games, plies, expected
):
    agent = build(parse_agent(name), AgentContext(board_type, seed=seed), tree_reuse=False, **options)
    states = [BUILTIN.load(board_type).new_initial_state() for _ in range(games)]
    for _ in range(plies):
        live = [s for s in states if not s.is_terminal()]
        for state, decision in zip(live, agent.select_many(live)):
            assert decision.stats.get("carried_simulations", 0.0) == 0
            state.apply_action(decision.action)
    assert [s.history() for s in states] == expected


@pytest.mark.parametrize("kind", ["mcts", "gumbel"])
def test_reuse_over_real_games_only_carries_subtrees_of_the_same_position(kind):
    """Lock-step games where two games repeat each other's moves (equal keys) and some moves are
    off the searched line (sampled at random), as in self-play with temperature."""
    game = BUILTIN.load("connect_four")
    agent = _agent(kind, 32, seed=3)
    rng = random.Random(7)
    states = [game.new_initial_state() for _ in range(4)]
    carried = 0.0
    while not all(s.is_terminal() for s in states):
        live = [s for s in states if not s.is_terminal()]
        before = len(agent.started)
        decisions = agent.select_many(live)
        searched = [s for s in live if len(s.legal_actions()) > 1]
        roots = [entry[0] for entry in agent.started[before:]]
        assert len(roots) == len(searched) and len({id(r) for r in roots}) == len(roots)  # no tree shared
        for root, state in zip(roots, searched):
            assert root.state.history() == state.history() and root.state.serialize() == state.serialize()
            assert root.actions == state.legal_actions()
        moves = [d.action if rng.random() < 0.7 else rng.choice(s.legal_actions()) for s, d in zip(live, decisions)]
        if states[0] in live and states[1] in live and states[0].history() == states[1].history():
            moves[live.index(states[1])] = moves[live.index(states[0])]  # game 1 shadows game 0
        for state, decision, move in zip(live, decisions, moves):
            carried += decision.stats.get("carried_simulations", 0.0)
            state.apply_action(move)
    assert carried > 0


def test_reuse_follows_the_opponents_reply_between_searches():
    state = BUILTIN.load("tic_tac_toe").new_initial_state()
    agent = _agent("mcts", 200, seed=1)
    mine = agent.select_many([state])[0].action
    root = agent.started[-1][0]
    after_mine = root.children[root.actions.index(mine)]
    reply = max(after_mine.actions, key=lambda a: after_mine.N[after_mine.actions.index(a)])
    expected = after_mine.children[after_mine.actions.index(reply)]
    counts = np.array(expected.N)
    state.apply_action(mine)
    state.apply_action(reply)  # played by the opponent, who is not this agent
    decision = agent.select_many([state])[0]
    assert agent.started[-1][0] is expected and decision.stats["carried_simulations"] == counts.sum() > 0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gumbel_draws_new_root_noise_for_a_reused_root(seed):
    state = BUILTIN.load("connect_four").new_initial_state()
    agent = _agent("gumbel", 64, seed=seed, max_considered=4)
    state.apply_action(agent.select_many([state])[0].action)
    first_gumbel = agent.started[-1][3].gumbel
    decision = agent.select_many([state])[0]
    root, carried, budget, data = agent.started[-1]
    assert carried.sum() > 0 and budget < 64
    # Fresh noise: a new draw, and this search's own top 4 of g + logits are what it visits.
    assert not np.array_equal(np.sort(data.gumbel[np.isfinite(data.gumbel)]), np.sort(first_gumbel[np.isfinite(first_gumbel)]))
    considered = set(np.argsort(-(data.gumbel + data.logits))[:4].tolist())
    new_visits = root.N - carried
    assert set(np.flatnonzero(new_visits).tolist()) == considered and new_visits.sum() == budget
    # Sequential halving over this search's visits: the move is among the most visited of them.
    best = root.actions.index(decision.action)
    assert best in considered and new_visits[best] == new_visits.max()
