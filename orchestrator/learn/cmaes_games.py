"""The games that score a CMA-ES candidate (`orchestrator.learn.cmaes`), run by an evaluation task.

`play_fitness_match` plays paired games from seeded random openings, colours swapped within each
pair, scored as the candidate's mean points. An evaluation from outside the cluster is taken only
by a run made for external workers, as a wins/draws/losses breakdown of exactly the run's games
(`external_outcome`); its fitness is derived, never trusted.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from orchestrator.errors import Conflict
from orchestrator.learn.cmaes import Candidate, CMAESConfig, Tunables, finite, invalid, tunable_params


class EvaluationRefused(Conflict):
    """An evaluation the run does not take: not an external run, or not the games it asked for."""


@dataclass(frozen=True)
class Outcome:
    """A candidate's games against the baseline; its fitness is its mean points (win 1, draw 0.5)."""

    wins: int
    draws: int
    losses: int

    @property
    def games(self) -> int:
        return self.wins + self.draws + self.losses

    @property
    def fitness(self) -> float:
        return (self.wins + 0.5 * self.draws) / self.games


def external_outcome(config: CMAESConfig, external: bool, *, games: int, wins: int, draws: int, losses: int,
                     fitness: float | None = None) -> Outcome:
    """An evaluation sent from outside the cluster, checked against its run. Only a run created for
    external workers takes one; it must report exactly the run's `games_per_candidate`, as a
    wins/draws/losses breakdown that sums to it, and the fitness is derived from that breakdown (a
    `fitness` sent along must agree with it). Raises EvaluationRefused (409) otherwise."""
    run_id = config.run_id
    if not external:
        raise EvaluationRefused(f"CMA-ES run {run_id!r} evaluates its candidates on the cluster; it takes no "
                                "external evaluations (start it with external_workers: true)", run_id=run_id)
    for name, value in (("games", games), ("wins", wins), ("draws", draws), ("losses", losses)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise invalid(name, "must be a non-negative integer")
    if games != config.games_per_candidate:
        raise EvaluationRefused(f"games: run {run_id!r} asks for {config.games_per_candidate} games per candidate, "
                                f"not {games}", run_id=run_id, field="games")
    outcome = Outcome(int(wins), int(draws), int(losses))
    if outcome.games != games:
        raise EvaluationRefused(f"wins/draws/losses: {wins}+{draws}+{losses} = {outcome.games} games, not {games}",
                                run_id=run_id, field="wins")
    if fitness is not None and abs(finite("fitness", fitness) - outcome.fitness) > 1e-9:
        raise EvaluationRefused(f"fitness: {fitness} is not the {outcome.fitness} that {wins} wins, {draws} draws "
                                f"and {losses} losses score", run_id=run_id, field="fitness")
    return outcome


AgentFactory = Callable[[int], Any]  # seed -> an `Agent` with the candidate's parameters


def evaluation_seed(config: CMAESConfig, generation: int) -> int:
    """All candidates of a generation play the same openings (common random numbers cut the noise
    in comparing them); each generation gets fresh openings so the tuning does not overfit a few."""
    digest = hashlib.sha256(f"{config.run_id}:{config.seed}:{generation}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def candidate_factory(config: CMAESConfig, params: Mapping[str, float], tunables: Tunables, *,
                      load_model: Callable[[str], Any] | None = None, device: str = "cpu") -> AgentFactory:
    """seed -> the candidate's agent, for `play_fitness_match`. `load_model` serves `model:<id>`
    agents, as in `AgentContext`."""
    from orchestrator.play.agents import AgentContext, parse_agent

    tunable = tunable_params(config.agent, tunables)
    unknown = sorted(set(params) - set(tunable))
    if unknown:
        raise invalid("params", f"{unknown} are not tunable for {config.agent}; tunable: {sorted(tunable)}")
    spec = parse_agent(config.agent)
    build = tunables[spec.kind].build
    values = dict(params)
    return lambda seed: build(spec, AgentContext(board_type=config.board_type, seed=seed, load_model=load_model,
                                                 device=device), values)


def _opening(game: Any, plies: int, rng: np.random.Generator) -> Any:
    """A few uniformly random moves; stops short rather than hand over a finished game."""
    state = game.new_initial_state()
    for _ in range(plies):
        legal = state.legal_actions()
        child = state.child(int(legal[rng.integers(len(legal))]))
        if child.is_terminal():
            break
        state = child
    return state


def play_fitness_match(board_type: str, candidate_agent_factory: AgentFactory, baseline_agent_name: str,
                       games: int, seed: int, *, opening_plies: int = 4,
                       load_model: Callable[[str], Any] | None = None, device: str = "cpu") -> Outcome:
    """The candidate's results against the baseline over paired games (fitness: its mean points).

    Each seeded random opening is played twice with colours swapped, so an opening's bias cancels
    within its pair; an odd `games` is rounded up to whole pairs. All games advance together, so
    each agent's `select_many` sees every game waiting on it at once.
    """
    from orchestrator.play.agents import AgentContext, make_agent
    from orchestrator.play.games import BUILTIN

    if isinstance(games, bool) or not isinstance(games, int) or games < 1:
        raise invalid("games", "must be a positive integer")
    game = BUILTIN.load(board_type)
    if game.num_players() != 2:
        raise invalid("board_type", f"{board_type} has {game.num_players()} players; fitness matches need two")
    candidate = candidate_agent_factory(seed)
    baseline = make_agent(baseline_agent_name, AgentContext(board_type=board_type, seed=seed + 1,
                                                            load_model=load_model, device=device))
    pairs = (games + 1) // 2
    states, candidate_seat = [], []
    for pair in range(pairs):
        opening = _opening(game, opening_plies, np.random.default_rng([seed, pair]))
        for seat in (0, 1):
            states.append(opening.clone())
            candidate_seat.append(seat)
    while True:
        active = [i for i, state in enumerate(states) if not state.is_terminal()]
        if not active:
            break
        mine = [i for i in active if states[i].current_player() == candidate_seat[i]]
        theirs = [i for i in active if states[i].current_player() != candidate_seat[i]]
        for agent, turn in ((candidate, mine), (baseline, theirs)):
            if turn:
                for i, decision in zip(turn, agent.select_many([states[i] for i in turn])):
                    states[i].apply_action(decision.action)
    mine_vs_theirs = [(state.returns()[seat], state.returns()[1 - seat]) for state, seat in zip(states, candidate_seat)]
    return Outcome(wins=sum(a > b for a, b in mine_vs_theirs), draws=sum(a == b for a, b in mine_vs_theirs),
                   losses=sum(a < b for a, b in mine_vs_theirs))


def evaluate_candidate(config: CMAESConfig, candidate: Candidate, tunables: Tunables, *,
                       load_model: Callable[[str], Any] | None = None, device: str = "cpu") -> Outcome:
    """What an evaluation task runs for one candidate: its fitness match."""
    factory = candidate_factory(config, candidate.params, tunables, load_model=load_model, device=device)
    return play_fitness_match(config.board_type, factory, config.baseline, config.games_per_candidate,
                              evaluation_seed(config, candidate.generation), opening_plies=config.opening_plies,
                              load_model=load_model, device=device)
