"""Evaluation games on real OpenSpiel games: results from the game's returns, colour-swapped pairs
from one opening, batching by the agent to move, and the OpenSpiel MCTSBot reference agent."""
import pytest

from orchestrator.play.agents import AgentContext, make_agent
from orchestrator.play.evaluation import (OPENINGS_WANTED, EvalGame, default_opening_plies, opening, pair_games,
                                         play_games)
from orchestrator.play.games import BUILTIN


class Counting:
    """Wraps a real agent to record how many states each select_many call received."""

    def __init__(self, agent):
        self.agent, self.name, self.calls = agent, agent.name, []

    def select_many(self, states):
        self.calls.append(len(states))
        return self.agent.select_many(states)


def agents(board, *names, seed=0):
    return {n: make_agent(n, AgentContext(board_type=board, seed=seed)) for n in names}


def test_a_strong_search_beats_random_from_both_sides():
    game = BUILTIN.load("tic_tac_toe")
    players = agents("tic_tac_toe", "openspiel_mcts_200", "random")
    games = [g for k in range(4) for g in pair_games(f"p{k}", "openspiel_mcts_200", "random", seed=k)]
    played = play_games(game, players, games)
    assert [p.game_id for p in played] == [g.game_id for g in games]
    scores = [p.score_of("openspiel_mcts_200") for p in played]
    assert all(s in (0.5, 1.0) for s in scores) and sum(scores) >= 6, scores
    assert {p.first for p in played} == {"openspiel_mcts_200", "random"}, "colours alternate"


def test_pairs_share_the_opening_and_swap_colours():
    first, second = pair_games("t-7", "a", "b", seed=11, opening_plies=3)
    assert (first.game_id, first.first, first.second) == ("t-7-0", "a", "b")
    assert (second.game_id, second.first, second.second) == ("t-7-1", "b", "a")
    game = BUILTIN.load("connect_four")
    assert str(opening(game, 3, first.seed)) == str(opening(game, 3, second.seed))
    assert str(opening(game, 3, 11)) != str(opening(game, 3, 12))
    assert len(opening(game, 3, 11).history()) == 3


def test_opening_never_ends_the_game():
    game = BUILTIN.load("tic_tac_toe")
    for seed in range(20):
        assert not opening(game, 9, seed).is_terminal()


def distinct_openings(game, plies, draws=4000):
    return len({str(opening(game, plies, seed)) for seed in range(draws)})


@pytest.mark.parametrize("board, plies", [("tic_tac_toe", 2), ("connect_four", 3), ("square8", 4)])
def test_a_board_default_opening_reaches_enough_distinct_positions_and_one_ply_less_does_not(board, plies):
    game = BUILTIN.load(board)
    assert default_opening_plies(game) == plies
    # what random openings actually draw, counted apart from the function's own enumeration
    assert distinct_openings(game, plies) >= OPENINGS_WANTED > distinct_openings(game, plies - 1)


def test_games_are_batched_per_agent_to_move():
    game = BUILTIN.load("connect_four")
    base = agents("connect_four", "random", "mcts_4")
    counted = {n: Counting(a) for n, a in base.items()}
    games = [g for k in range(3) for g in pair_games(f"b{k}", "mcts_4", "random", seed=k)]
    played = play_games(game, counted, games)
    assert len(played) == 6
    # each round, the three games where mcts_4 is to move go to it in one call
    assert max(counted["mcts_4"].calls) == 3 and counted["mcts_4"].calls[0] == 3, counted["mcts_4"].calls
    total_moves = sum(p.moves for p in played)
    assert len(counted["mcts_4"].calls) + len(counted["random"].calls) < total_moves, "several games per call"


def test_results_are_the_games_returns():
    game = BUILTIN.load("tic_tac_toe")
    players = agents("tic_tac_toe", "random", "openspiel_mcts_500")
    played = play_games(game, players, [EvalGame("x", "random", "openspiel_mcts_500", seed=1)])[0]
    assert played.score_first in (0.0, 0.5) and played.score_of("openspiel_mcts_500") == 1 - played.score_first
    with pytest.raises(ValueError):
        played.score_of("nobody")


def test_a_stop_abandons_unfinished_games():
    game = BUILTIN.load("connect_four")
    calls = []
    played = play_games(game, agents("connect_four", "random"), [EvalGame("s", "random", "random", seed=0)],
                        should_stop=lambda: calls.append(1) or len(calls) > 3)
    assert played == []


# --- runs: schedules and progress recomputed from stored game records ------------------------------
from orchestrator.play.evaluation_runs import ABTest, Gauntlet, Tournament, game_record  # noqa: E402


def test_a_round_robin_schedule_alternates_colours_in_pairs():
    t = Tournament.round_robin("t", "tic_tac_toe", ["a", "b", "c"], 5, 2, "round_robin", 0.0)
    games = t.schedule()
    assert len(games) == t.total == 15 and len({g.game_id for g in games}) == 15
    ab = [g for g in games if {g.first, g.second} == {"a", "b"}]
    assert [g.first for g in ab] == ["a", "b", "a", "b", "a"]
    assert ab[0].seed == ab[1].seed != ab[2].seed, "a pair shares its opening"
    assert t.schedule() == games, "the schedule is fixed by the tournament id"
    quick = Tournament.candidate_against("q", "tic_tac_toe", "new", ["x", "y"], 4, 0, 0.0)
    assert quick.total == 8 and all("new" in (g.first, g.second) for g in quick.schedule())
    assert Tournament.from_doc(t.to_doc()) == t


def _store(test, index, first_score, second_score):
    g0, g1 = test.pair(index)
    return {g0.game_id: game_record(g0.game_id, g0.first, g0.second, "tic_tac_toe", first_score, "abtest", test.test_id, 0),
            g1.game_id: game_record(g1.game_id, g1.first, g1.second, "tic_tac_toe", second_score, "abtest", test.test_id, 0)}


def test_an_abtest_counts_completed_pairs_and_settles_on_the_sprt():
    test = ABTest("ab", "new", "old", "tic_tac_toe", 0, 100, 0.05, 0.05, "logistic", 1000, 2, 0.0, state="running")
    records = {}
    records.update(_store(test, 0, 1, 0))  # new wins as first and as second player: WW
    records.update(_store(test, 1, 1, 1))  # new wins, then loses: WL
    half = _store(test, 2, 0.5, 0.5)
    records[next(iter(half))] = next(iter(half.values()))  # a pair with one game stored does not count yet
    wdl, penta, games = test.counts(records)
    assert (wdl, penta, games) == ([3, 0, 1], [0, 0, 1, 0, 1], 4)
    assert test.settle(records, 1.0) is test, "undecided after two pairs"
    for k in range(3, 40):
        records.update(_store(test, k, 1, 0))
    done = test.settle(records, 2.0)
    assert done.state == "finished" and done.final["decision"] == "H1" and done.status({})["decision"] == "H1"
    assert ABTest.from_doc(done.to_doc()) == done


def test_submitted_results_are_counted_once_per_submission_id():
    test = ABTest("m", "a", "b", "tic_tac_toe", 0, 10, 0.05, 0.05, "logistic", 100, 0, 0.0)
    once = test.add_results((3, 1, 2), None, "s1")
    assert once.add_results((3, 1, 2), None, "s1") is once
    assert once.counts({})[0] == [3, 1, 2]
    capped = ABTest("c", "a", "b", "tic_tac_toe", -100, 100, 0.05, 0.05, "logistic", 6, 0, 0.0, state="running")
    ended = capped.add_results((3, 0, 3), None, None).settle({}, 1.0)
    assert ended.state == "finished" and ended.final["decision"] is None and ended.final["games"] == 6


def test_gauntlet_verdicts():
    assert Gauntlet.verdict([("finished", "H1"), ("running", None)]) is None
    assert Gauntlet.verdict([("finished", "H1"), ("running", "H0")]) == "failed"
    assert Gauntlet.verdict([("finished", "H1"), ("finished", "H1")]) == "passed"
    assert Gauntlet.verdict([("finished", "H1"), ("finished", None)]) == "inconclusive"
