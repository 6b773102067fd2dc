"""Bradley–Terry maximum likelihood against closed-form cases; open-ended intervals where no finite
estimate exists; independence of game order; the documented anchor."""
import math
import random

import pytest

from orchestrator.stats.bradley_terry import (ABOVE, BELOW, ESTIMATED, UNCONNECTED, GameResult, UnknownAnchor,
                                              fit)

Z95 = 1.959964
ELO_PER_NAT = 400 / math.log(10)


def games(a, b, wins=0, draws=0, losses=0):
    return [GameResult(a, b, 1)] * wins + [GameResult(a, b, 0.5)] * draws + [GameResult(a, b, 0)] * losses


def rows(table):
    return {row.agent: row for row in table.rows}


def test_two_agents_match_the_closed_form():
    table = fit(games("a", "random", wins=7, losses=3))
    a = rows(table)["a"]
    assert table.anchor == "random" and rows(table)["random"].elo == 0
    assert a.elo == pytest.approx(400 * math.log10(7 / 3))
    error = ELO_PER_NAT / math.sqrt(10 * 0.7 * 0.3)  # inverse Fisher information at the MLE
    assert (a.ci_low, a.ci_high) == (pytest.approx(a.elo - Z95 * error), pytest.approx(a.elo + Z95 * error))
    assert (a.games, a.wins, a.draws, a.losses, a.estimate) == (10, 7, 0, 3, ESTIMATED)


def test_draws_count_half():
    with_draws = rows(fit(games("a", "random", wins=5, draws=4, losses=1)))["a"]
    halves = rows(fit(games("a", "random", wins=7, losses=3)))["a"]
    assert with_draws.elo == pytest.approx(halves.elo) and with_draws.draws == 4


def test_a_balanced_cycle_rates_everyone_equal():
    results = games("a", "b", wins=3) + games("b", "c", wins=3) + games("c", "a", wins=3)
    table = fit(results, anchor="b")
    assert all(row.elo == pytest.approx(0, abs=1e-6) for row in table.rows)
    assert rows(table)["b"].ci_low == rows(table)["b"].ci_high == 0, "the anchor is the fixed point"
    assert rows(table)["a"].ci_low < 0 < rows(table)["a"].ci_high


def test_transitive_chain_sums_differences():
    # a beats b 3:1 and b beats c 3:1, each pair on its own => r_a - r_b = r_b - r_c = 400 log10 3
    results = games("a", "b", wins=30, losses=10) + games("b", "c", wins=30, losses=10)
    table = rows(fit(results, anchor="c"))
    step = 400 * math.log10(3)
    assert table["b"].elo == pytest.approx(step, rel=1e-6) and table["a"].elo == pytest.approx(2 * step, rel=1e-6)


def test_fit_does_not_depend_on_game_order():
    results = (games("a", "random", wins=6, draws=2, losses=4) + games("b", "random", wins=9, losses=3)
               + games("a", "b", wins=2, draws=1, losses=5))
    shuffled = results[:]
    random.Random(7).shuffle(shuffled)
    assert fit(results) == fit(shuffled)


def test_all_wins_has_no_estimate_but_a_lower_bound():
    table = fit(games("model:new", "random", wins=5))
    new = rows(table)["model:new"]
    assert new.estimate == ABOVE and new.elo is None and new.ci_high is None
    p = 0.05 ** (1 / 5)  # winning all 5 has probability 5% at the bound
    assert new.ci_low == pytest.approx(400 * math.log10(p / (1 - p)))
    assert table.rows[0].agent == "model:new", "an open-ended agent above is listed first"


def test_all_losses_has_an_upper_bound_and_isolated_agents_have_nothing():
    results = games("random", "weak", wins=4) + games("x", "y", draws=1) + games("random", "b", wins=2, losses=2)
    table = fit(results)
    weak, x = rows(table)["weak"], rows(table)["x"]
    p = 0.05 ** (1 / 4)
    assert weak.estimate == BELOW and weak.ci_low is None and weak.ci_high == pytest.approx(-400 * math.log10(p / (1 - p)))
    assert x.estimate == UNCONNECTED and (x.elo, x.ci_low, x.ci_high) == (None, None, None)
    assert [r.agent for r in table.rows][-3:] == ["weak", "x", "y"]


def test_anchor_choice():
    results = games("openspiel_mcts_100", "openspiel_mcts_20", wins=3, losses=1) + games("m", "n", wins=1, losses=1)
    assert fit(results).anchor == "openspiel_mcts_20"
    assert fit(games("m", "n", wins=2, losses=1) + games("m", "o", wins=1, losses=1)).anchor == "m"
    shifted = rows(fit(results, anchor="openspiel_mcts_100"))
    assert shifted["openspiel_mcts_20"].elo == pytest.approx(-400 * math.log10(3))
    with pytest.raises(UnknownAnchor):
        fit(results, anchor="nobody")
    assert fit([]).rows == () and fit([]).anchor is None


def test_bad_scores_are_refused():
    with pytest.raises(ValueError):
        fit([GameResult("a", "b", 0.3)])
    with pytest.raises(ValueError):
        fit([GameResult("a", "a", 1)])
