"""The heuristic evaluator, its named weights, and the `heuristic` agent."""
from __future__ import annotations

import math

import numpy as np
import pyspiel
import pytest

from orchestrator.play.agents import AgentContext, AgentSpec, make_agent
from orchestrator.play.features import FEATURE_NAMES, features, features_many, terminal_value
from orchestrator.play.games import BUILTIN
from orchestrator.play.heuristic import (
    DEFAULT_WEIGHTS,
    HEURISTIC_PARAMS,
    HeuristicEvaluator,
    InvalidHeuristicParams,
    build_heuristic,
    make_heuristic_agent,
)


def _state(board_type: str, actions: list[int]) -> pyspiel.State:
    state = BUILTIN.load(board_type).new_initial_state()
    for action in actions:
        state.apply_action(action)
    return state


def _random_positions(board_type: str, count: int, seed: int, min_moves: int = 4) -> list[pyspiel.State]:
    rng = np.random.default_rng(seed)
    positions = []
    while len(positions) < count:
        state = BUILTIN.load(board_type).new_initial_state()
        length = int(rng.integers(min_moves, 40))
        for _ in range(length):
            if state.is_terminal():
                break
            legal = state.legal_actions()
            state.apply_action(int(legal[rng.integers(len(legal))]))
        if not state.is_terminal():
            positions.append(state)
    return positions


def _play_vs_random(agent, seat: int, seed: int, board_type: str) -> float:
    state = BUILTIN.load(board_type).new_initial_state()
    rng = np.random.default_rng(seed)
    while not state.is_terminal():
        if state.current_player() == seat:
            action = agent.select_many([state])[0].action
        else:
            legal = state.legal_actions()
            action = int(legal[rng.integers(len(legal))])
        state.apply_action(action)
    return terminal_value(state, seat)


def test_params_are_named_bounded_and_one_per_feature():
    assert tuple(HEURISTIC_PARAMS) == FEATURE_NAMES
    for low, high, default in HEURISTIC_PARAMS.values():
        assert low < default < high


@pytest.mark.parametrize("board_type", ["square8", "tic_tac_toe", "connect_four", "breakthrough", "hex"])
def test_features_are_bounded_antisymmetric_and_leave_the_state_alone(board_type):
    for state in _random_positions(board_type, 5, seed=1, min_moves=1):
        history, legal = state.history(), state.legal_actions()
        mine, theirs = features(state, 0), features(state, 1)
        assert mine.shape == (len(FEATURE_NAMES),)
        assert np.all(np.abs(mine) <= 1.0)
        np.testing.assert_allclose(mine, -theirs, atol=1e-12)
        assert state.history() == history and state.legal_actions() == legal
    batch = _random_positions(board_type, 4, seed=2, min_moves=1)
    np.testing.assert_allclose(features_many(batch, 1), np.stack([features(s, 1) for s in batch]))


def test_material_is_read_from_the_right_planes_in_absolute_and_relative_encodings():
    material = FEATURE_NAMES.index("material")
    # tic-tac-toe encodes colours absolutely, Othello from the viewer's side; both must agree.
    after_x = _state("tic_tac_toe", [4])
    assert features(after_x, 0)[material] > 0 > features(after_x, 1)[material]
    othello = _state("square8", [19])  # black (player 0) flips one disc: 4 against 1
    assert features(othello, 0)[material] == pytest.approx(3 / 5)
    assert features(othello, 1)[material] == pytest.approx(-3 / 5)


def test_terminal_states_are_worth_exactly_one_minus_one_or_zero():
    evaluator = HeuristicEvaluator()
    x_wins = _state("tic_tac_toe", [0, 3, 1, 4, 2])
    draw = _state("tic_tac_toe", [0, 4, 8, 2, 6, 3, 5, 7, 1])
    assert x_wins.is_terminal() and draw.is_terminal()
    assert evaluator.evaluate(x_wins, 0) == 1.0
    assert evaluator.evaluate(x_wins, 1) == -1.0
    assert evaluator.evaluate(draw, 0) == 0.0
    open_state = _state("tic_tac_toe", [4])
    assert -1.0 < evaluator.evaluate(open_state, 0) < 1.0


def test_evaluator_is_zero_sum_and_batched():
    evaluator = HeuristicEvaluator()
    positions = _random_positions("square8", 6, seed=3)
    for state in positions:
        assert evaluator.evaluate(state, 0) == pytest.approx(-evaluator.evaluate(state, 1))
    batch = evaluator.evaluate_many(positions, 0)
    np.testing.assert_allclose(batch, [evaluator.evaluate(s, 0) for s in positions])


def _unique_best(weights: dict[str, float], state: pyspiel.State) -> int | None:
    children = [state.child(a) for a in state.legal_actions()]
    values = HeuristicEvaluator(weights).evaluate_many(children, state.current_player())
    best = np.flatnonzero(values == values.max())
    return int(state.legal_actions()[best[0]]) if len(best) == 1 else None


@pytest.mark.parametrize("name", list(HEURISTIC_PARAMS))
def test_every_weight_changes_the_agents_move_somewhere(name):
    low, high, _ = HEURISTIC_PARAMS[name]
    pulled_low = {**DEFAULT_WEIGHTS, name: low}
    pulled_high = {**DEFAULT_WEIGHTS, name: high}
    for state in _random_positions("square8", 40, seed=4):
        move_low, move_high = _unique_best(pulled_low, state), _unique_best(pulled_high, state)
        if move_low is not None and move_high is not None and move_low != move_high:
            # The agent plays the evaluator's unique best move, so the weight alone moved it.
            assert make_heuristic_agent(pulled_low, seed=0).select_many([state])[0].action == move_low
            assert make_heuristic_agent(pulled_high, seed=0).select_many([state])[0].action == move_high
            return
    pytest.fail(f"weight {name!r} never changed the chosen move")


def test_heuristic_beats_random_on_othello():
    agent = make_heuristic_agent(DEFAULT_WEIGHTS, seed=7)
    results = [_play_vs_random(agent, seat=game % 2, seed=100 + game, board_type="square8") for game in range(20)]
    wins = sum(result > 0 for result in results)
    assert wins >= 14, f"heuristic won only {wins}/20 against random"


def test_two_ply_heuristic_blocks_an_immediate_loss():
    # x holds 0 and 1; o (to move) must take 2 or lose at once.
    state = _state("tic_tac_toe", [0, 4, 1])
    assert make_heuristic_agent({}, seed=0, depth=2).select_many([state])[0].action == 2


def test_seed_fixes_the_choice_and_policy_is_one_hot():
    state = BUILTIN.load("square8").new_initial_state()  # four symmetric opening moves: a tie
    picks = {make_heuristic_agent({}, seed=s).select_many([state])[0].action for s in range(12)}
    assert picks <= set(state.legal_actions()) and len(picks) > 1
    decision = make_heuristic_agent({}, seed=3).select_many([state])[0]
    assert decision == make_heuristic_agent({}, seed=3).select_many([state])[0]
    assert decision.policy == {decision.action: 1.0}


def test_named_agent_loads_and_validates_params():
    stored = {"good": {"corner": 3.0, "mobility": -1.0}, "unknown": {"corners": 1.0},
              "nan": {"edge": math.nan}, "text": {"edge": "high"}, "bool": {"edge": True}, "list": [1.0]}
    ctx = AgentContext(board_type="square8", seed=1, load_model=stored.__getitem__)
    agent = make_agent("heuristic@good", ctx)
    assert agent.evaluator.weights == {**DEFAULT_WEIGHTS, "corner": 3.0, "mobility": -1.0}
    assert agent.name == "heuristic@good"
    for bad in ("unknown", "nan", "text", "bool", "list"):
        with pytest.raises(InvalidHeuristicParams):
            make_agent(f"heuristic@{bad}", ctx)
    with pytest.raises(InvalidHeuristicParams):
        build_heuristic(AgentSpec(kind="heuristic", params_id="good"), AgentContext(board_type="square8"))
    default = make_agent("heuristic", AgentContext(board_type="square8"))
    assert default.evaluator.weights == DEFAULT_WEIGHTS
    assert default.select_many([BUILTIN.load("square8").new_initial_state()])[0].action in (19, 26, 37, 44)


def test_connect_four_and_breakthrough_smoke():
    for board_type in ("connect_four", "breakthrough"):
        agent = make_agent("heuristic", AgentContext(board_type=board_type, seed=1))
        result = _play_vs_random(agent, seat=1, seed=9, board_type=board_type)
        assert result in (-1.0, 0.0, 1.0)
