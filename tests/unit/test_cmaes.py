import json
import math

import numpy as np
import pytest

from actors.tunables import CMAES_TUNABLES
from orchestrator.errors import Conflict
from orchestrator.learn.cmaes import CMAESConfig, CMAESRun, Tunable, tunable_params
from orchestrator.learn.cmaes_games import Outcome, evaluate_candidate, external_outcome, play_fitness_match
from orchestrator.play.agents import Decision

TARGET = {"material": 1.5, "mobility": -2.0, "corner": 3.0}


def config(**overrides):
    values = dict(run_id="run1", params={name: (-4.0, 4.0) for name in TARGET}, generations=40, popsize=8,
                  sigma0=0.3, seed=7)
    values.update(overrides)
    return CMAESConfig(**values)


def fitness(params):
    return -sum((params[name] - TARGET[name]) ** 2 for name in TARGET)


def drive(run, now=0.0, generations=None, seen=None):
    """Evaluate every candidate analytically until the run finishes (or `generations` more)."""
    stop_at = None if generations is None else run.generation + generations
    while not run.finished and run.generation != stop_at:
        for candidate in run.next_candidates(now):
            if seen is not None:
                seen.append(candidate)
            now += 1.0
            run.submit(candidate.candidate_id, candidate.generation, fitness(candidate.params), 2, now)
    return now


def test_reaches_near_optimum_on_analytic_fitness():
    run = CMAESRun.start(config(), CMAES_TUNABLES)
    now = drive(run)
    status = run.status(now)
    assert status.finished and status.stop_reason == "generations"
    assert status.generation == 40 and status.evaluations_done == 40 * 8 and status.games_done == 2 * 40 * 8
    for name, target in TARGET.items():
        assert abs(status.mean_params[name] - target) < 0.05
        assert abs(status.best_params[name] - target) < 0.1
    assert status.best_fitness > -0.01
    assert run.next_candidates(now) == []


def test_candidate_ids_are_deterministic_and_params_within_bounds():
    run = CMAESRun.start(config(params={"material": (0.0, 0.5), "corner": (-1.0, 3.0)}), CMAES_TUNABLES)
    candidates = run.next_candidates(0.0)
    assert [c.candidate_id for c in candidates] == [f"run1-g0-c{i}" for i in range(8)]
    assert all(0.0 <= c.params["material"] <= 0.5 and -1.0 <= c.params["corner"] <= 3.0 for c in candidates)
    assert run.next_candidates(1.0) == []  # all handed out already
    again = CMAESRun.start(config(params={"material": (0.0, 0.5), "corner": (-1.0, 3.0)}), CMAES_TUNABLES).next_candidates(0.0)
    assert [c.params for c in again] == [c.params for c in candidates]


def test_duplicate_submission_is_ignored_and_reported():
    run = CMAESRun.start(config(popsize=4), CMAES_TUNABLES)
    first, *rest = run.next_candidates(0.0)
    assert run.submit(first.candidate_id, 0, 0.5, 2, 1.0).accepted
    result = run.submit(first.candidate_id, 0, 0.9, 2, 2.0)
    assert result.duplicate and not result.accepted
    status = run.status(2.0)
    assert status.evaluations_done == 1 and status.done == 1 and status.duplicates == 1
    assert status.best_fitness == 0.5
    for candidate in rest:
        run.submit(candidate.candidate_id, 0, 0.1, 2, 3.0)
    assert run.generation == 1
    # A late copy of an evaluation from a generation already told to cma is a duplicate too.
    late = run.submit(first.candidate_id, 0, 0.9, 2, 4.0)
    assert late.duplicate and run.status(4.0).evaluations_done == 4


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -math.inf, "0.5", None])
def test_non_finite_fitness_is_rejected_naming_the_field(bad):
    run = CMAESRun.start(config(popsize=4), CMAES_TUNABLES)
    candidate = run.next_candidates(0.0)[0]
    with pytest.raises(ValueError, match="fitness"):
        run.submit(candidate.candidate_id, 0, bad, 2, 1.0)
    with pytest.raises(ValueError, match="games"):
        run.submit(candidate.candidate_id, 0, 0.5, 0, 1.0)
    assert run.status(1.0).evaluations_done == 0
    assert run.submit(candidate.candidate_id, 0, 0.5, 2, 1.0).accepted


def test_unknown_candidate_or_wrong_generation_is_rejected():
    run = CMAESRun.start(config(popsize=4), CMAES_TUNABLES)
    candidate = run.next_candidates(0.0)[0]
    with pytest.raises(KeyError, match="unknown candidate"):
        run.submit("run1-g0-c99", 0, 0.5, 2, 1.0)
    with pytest.raises(KeyError):
        run.submit("other-g0-c0", 0, 0.5, 2, 1.0)
    with pytest.raises(KeyError, match="generation"):
        run.submit(candidate.candidate_id, 1, 0.5, 2, 1.0)
    with pytest.raises(KeyError):
        run.submit("run1-g3-c0", 3, 0.5, 2, 1.0)  # a generation not asked yet
    assert run.status(1.0).evaluations_done == 0


def test_overdue_redispatches_the_same_candidates_and_never_fills_them():
    run = CMAESRun.start(config(popsize=4), CMAES_TUNABLES)
    candidates = run.next_candidates(0.0)
    run.submit(candidates[0].candidate_id, 0, 0.5, 2, 5.0)
    assert run.overdue(9.0, timeout_s=10.0) == []
    late = run.overdue(10.0, timeout_s=10.0)
    assert [c.candidate_id for c in late] == [c.candidate_id for c in candidates[1:]]
    assert [c.params for c in late] == [c.params for c in candidates[1:]]
    assert all(c.attempt == 2 for c in late)
    assert run.overdue(15.0, timeout_s=10.0) == []  # re-armed at 10.0
    status = run.status(15.0)
    assert status.done == 1 and status.pending == 3 and status.generation == 0
    for candidate in late:
        run.submit(candidate.candidate_id, 0, 0.2, 2, 16.0)
    assert run.generation == 1


def test_record_round_trip_mid_generation_continues_identically():
    original = CMAESRun.start(config(generations=12), CMAES_TUNABLES)
    now = drive(original, generations=3)
    candidates = original.next_candidates(now)
    for candidate in candidates[:3]:
        original.submit(candidate.candidate_id, candidate.generation, fitness(candidate.params), 2, now)
    record = json.loads(json.dumps(original.to_record()))
    restored = CMAESRun.from_record(record)
    assert restored.status(now) == original.status(now)
    # The restored run hands out nothing new for this generation; the missing ones come back as overdue.
    assert restored.next_candidates(now) == []
    missing = restored.overdue(now + 100, timeout_s=50)
    assert [c.candidate_id for c in missing] == [c.candidate_id for c in candidates[3:]]
    original.overdue(now + 100, timeout_s=50)
    np.random.seed(123)  # the runs' random streams are their own, not numpy's global one
    handed_out = []
    for run in (original, restored):
        for candidate in missing:
            run.submit(candidate.candidate_id, candidate.generation, fitness(candidate.params), 2, now + 101)
        np.random.rand(5)
        handed_out.append([])
        drive(run, now + 101, seen=handed_out[-1])
    assert len(handed_out[0]) == 8 * 8 and handed_out[0] == handed_out[1]
    assert original.status(1e6) == restored.status(1e6)


def test_corrupt_record_is_refused():
    record = CMAESRun.start(config(), CMAES_TUNABLES).to_record()
    with pytest.raises(ValueError, match="record"):
        CMAESRun.from_record({**record, "es": record["es"][:40]})
    with pytest.raises(ValueError, match="version"):
        CMAESRun.from_record({**record, "version": 99})


def test_status_reports_rate_and_eta():
    run = CMAESRun.start(config(popsize=4, generations=3), CMAES_TUNABLES)
    assert run.status(0.0).eta_s is None and run.status(0.0).queued == 4
    candidates = run.next_candidates(100.0)
    for candidate in candidates[:2]:
        run.submit(candidate.candidate_id, 0, 0.5, 2, 110.0)
    status = run.status(110.0)
    assert (status.queued, status.pending, status.done) == (0, 2, 2)
    assert status.evaluations_per_s == pytest.approx(0.2)
    assert status.eta_s == pytest.approx((3 * 4 - 2) / 0.2)
    assert json.dumps(status.to_dict())


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="params.material"):
        config(params={"material": (1.0, 1.0)})
    with pytest.raises(ValueError, match="sigma0"):
        config(sigma0=0.0)
    with pytest.raises(ValueError, match="initial.corner"):
        config(initial={"corner": 9.0})
    with pytest.raises(ValueError, match="params"):
        CMAESRun.start(config(params={"not_a_weight": (0.0, 1.0)}), CMAES_TUNABLES)
    with pytest.raises(ValueError, match="agent"):
        tunable_params("random", CMAES_TUNABLES)
    assert CMAESConfig.from_dict(config().to_dict()) == config()


def test_starts_from_the_agents_defaults():
    run = CMAESRun.start(config(params={"corner": (-4.0, 4.0)}), CMAES_TUNABLES)
    assert run.mean_params() == pytest.approx({"corner": tunable_params("heuristic", CMAES_TUNABLES)["corner"][2]})


class FirstMove:
    """Plays the first legal move and remembers the openings it was handed in each seat."""

    name = "first"

    def __init__(self):
        self.seen = set()

    def select_many(self, states):
        for state in states:
            history = state.history()
            self.seen.add((state.current_player(), tuple(history[:2])))
        return [Decision(action=s.legal_actions()[0], policy={s.legal_actions()[0]: 1.0}) for s in states]


def test_fitness_match_is_paired_deterministic_and_scored_in_points():
    agent = FirstMove()
    outcome = play_fitness_match("tic_tac_toe", lambda seed: agent, "heuristic", 5, seed=3, opening_plies=2)
    assert outcome.games == 6 and outcome.fitness == (outcome.wins + outcome.draws / 2) / 6
    openings = {opening for _, opening in agent.seen}
    seats = {seat for seat, _ in agent.seen}
    assert seats == {0, 1}
    # Each opening is played from both seats: the candidate moves first after it in one game, second in the other.
    for opening in openings:
        assert {seat for seat, seen in agent.seen if seen == opening} == {0, 1}
    again = play_fitness_match("tic_tac_toe", lambda seed: FirstMove(), "heuristic", 5, seed=3, opening_plies=2)
    assert again == outcome


def test_evaluate_candidate_runs_a_heuristic_candidate():
    run = CMAESRun.start(config(board_type="tic_tac_toe", baseline="heuristic", games_per_candidate=4, popsize=4), CMAES_TUNABLES)
    candidate = run.next_candidates(0.0)[0]
    outcome = evaluate_candidate(run.config, candidate, CMAES_TUNABLES)
    assert outcome.games == 4 and 0.0 <= outcome.fitness <= 1.0
    assert run.submit(candidate.candidate_id, candidate.generation, outcome.fitness, outcome.games, 1.0).accepted


def test_search_constants_are_tunable():
    assert tunable_params("mcts_8", CMAES_TUNABLES)["c_puct"][2] == 1.5
    gumbel = tunable_params("model:abc+gumbel_16", CMAES_TUNABLES)
    assert set(gumbel) == {"c_visit", "c_scale"} and (gumbel["c_visit"][2], gumbel["c_scale"][2]) == (50.0, 0.1)
    for agent, params in (("mcts_4", {"c_puct": (0.5, 4.0)}), ("gumbel_4", {"c_visit": (10.0, 100.0)})):
        run = CMAESRun.start(config(agent=agent, params=params, board_type="tic_tac_toe", games_per_candidate=2,
                                    popsize=2), CMAES_TUNABLES)
        candidate = run.next_candidates(0.0)[0]
        outcome = evaluate_candidate(run.config, candidate, CMAES_TUNABLES)
        assert outcome.games == 2 and 0.0 <= outcome.fitness <= 1.0


def test_the_tunables_catalogue_is_handed_in():
    seen = []
    only = {"heuristic": Tunable(params={"knob": (0.0, 10.0, 2.0)},
                                 build=lambda spec, ctx, values: seen.append((spec.kind, ctx.seed, values)))}
    run = CMAESRun.start(config(params={"knob": (0.0, 4.0)}), only)
    assert run.mean_params() == pytest.approx({"knob": 2.0})
    with pytest.raises(ValueError, match="params"):
        CMAESRun.start(config(params={"corner": (0.0, 1.0)}), only)
    with pytest.raises(ValueError, match="agent"):
        tunable_params("mcts_8", only)
    from orchestrator.learn.cmaes_games import candidate_factory
    candidate_factory(run.config, {"knob": 3.0}, only)(11)
    assert seen == [("heuristic", 11, {"knob": 3.0})]


def test_external_evaluations_only_for_external_runs_with_the_runs_games():
    run_config = config(games_per_candidate=20)
    good = dict(games=20, wins=11, draws=4, losses=5)
    assert external_outcome(run_config, True, **good) == Outcome(11, 4, 5)
    assert external_outcome(run_config, True, **good).fitness == pytest.approx(13 / 20)
    assert external_outcome(run_config, True, **good, fitness=0.65).fitness == pytest.approx(0.65)
    refused = (
        (False, good),  # the cluster evaluates this run itself
        (True, {**good, "games": 1, "wins": 1, "draws": 0, "losses": 0}),  # one lucky game is not twenty
        (True, {**good, "wins": 20}),  # a breakdown that does not sum to the games
        (True, {**good, "fitness": 1.0}),  # a fitness the breakdown does not score
    )
    for external, body in refused:
        with pytest.raises(Conflict):
            external_outcome(run_config, external, **body)
    with pytest.raises(ValueError, match="wins"):
        external_outcome(run_config, True, **{**good, "wins": -1})
