"""Evaluation games between agents named by strings: single games, colour-swapped pairs, batches.

`play_games` plays many games at once: every round, the live games are grouped by the agent to
move and each agent chooses in all of its games with one `select_many` call, so games that share a
network share its forward passes. A game's opening (`opening_plies` uniformly random legal moves,
drawn from the game's seed) is the same for both games of a pair, which differ only in who moves
first. Results are agent A's score: 1, 0.5 or 0, from the game's returns.

Where a request leaves `opening_plies` out, a board gets `default_opening_plies`: the fewest random
plies that reach at least `OPENINGS_WANTED` distinct positions. Deterministic searches replay an
opening exactly, so an SPRT over pairs from a handful of openings counts repeats as independent
evidence; two plies give tic-tac-toe 72 openings but an 8x8 Othello board only 12.

Game ids are deterministic (`pair_games`), so a game played again after a failure has the id of
the first attempt and is stored once.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import pyspiel

from orchestrator.play.agents import Agent


@dataclass(frozen=True)
class EvalGame:
    game_id: str
    first: str  # the agent that moves first (player 0)
    second: str
    seed: int
    opening_plies: int = 0


@dataclass(frozen=True)
class PlayedGame:
    game_id: str
    first: str
    second: str
    score_first: float  # 1, 0.5 or 0
    moves: int

    def score_of(self, agent: str) -> float:
        if agent not in (self.first, self.second):
            raise ValueError(f"{agent!r} did not play {self.game_id}")
        return self.score_first if agent == self.first else 1 - self.score_first


def check_two_player(game: pyspiel.Game) -> None:
    if game.num_players() != 2:
        raise ValueError(f"evaluation needs a two-player game, not {game.num_players()} players")


def pair_games(pair_id: str, agent_a: str, agent_b: str, seed: int, opening_plies: int = 0) -> tuple[EvalGame, EvalGame]:
    """Two games from one opening: A moves first in `<pair_id>-0`, B in `<pair_id>-1`."""
    return (EvalGame(f"{pair_id}-0", agent_a, agent_b, seed, opening_plies),
            EvalGame(f"{pair_id}-1", agent_b, agent_a, seed, opening_plies))


def opening(game: pyspiel.Game, plies: int, seed: int) -> pyspiel.State:
    """The state after up to `plies` random legal moves; stops one move early rather than end the game."""
    rng = random.Random(seed)
    state = game.new_initial_state()
    for _ in range(plies):
        action = rng.choice(state.legal_actions())
        child = state.child(action)
        if child.is_terminal():
            break
        state = child
    return state


OPENINGS_WANTED = 64
MAX_DEFAULT_OPENING_PLIES = 8  # beyond this a random opening decides more of the game than the agents


def default_opening_plies(game: pyspiel.Game) -> int:
    """The fewest plies after which `opening` can reach `OPENINGS_WANTED` distinct non-terminal positions
    (or the most there are, for a game that never has that many)."""
    frontier = [game.new_initial_state()]
    for plies in range(1, MAX_DEFAULT_OPENING_PLIES + 1):
        reached: dict[tuple[int, str], pyspiel.State] = {}
        for state in frontier:
            for action in state.legal_actions():
                child = state.child(action)
                if not child.is_terminal():
                    reached.setdefault((child.current_player(), str(child)), child)
                if len(reached) >= OPENINGS_WANTED:
                    return plies
        if not reached:
            return plies - 1
        frontier = list(reached.values())
    return MAX_DEFAULT_OPENING_PLIES


def _score_first(state: pyspiel.State) -> float:
    returns = state.returns()
    return 1.0 if returns[0] > returns[1] else 0.5 if returns[0] == returns[1] else 0.0


def play_games(game: pyspiel.Game, agents: Mapping[str, Agent], games: Sequence[EvalGame],
               should_stop: Callable[[], bool] | None = None) -> list[PlayedGame]:
    """Play `games` together; returns the finished ones in order (all, unless `should_stop` said so,
    in which case the games still going are abandoned and not returned)."""
    check_two_player(game)
    states = [opening(game, g.opening_plies, g.seed) for g in games]
    moves = [0] * len(games)
    live = [i for i, state in enumerate(states) if not state.is_terminal()]
    while live:
        if should_stop is not None and should_stop():
            break
        by_agent: dict[str, list[int]] = {}
        for i in live:
            mover = games[i].first if states[i].current_player() == 0 else games[i].second
            by_agent.setdefault(mover, []).append(i)
        for name, indices in by_agent.items():
            decisions = agents[name].select_many([states[i] for i in indices])
            for i, decision in zip(indices, decisions):
                states[i].apply_action(decision.action)
                moves[i] += 1
        live = [i for i in live if not states[i].is_terminal()]
    return [PlayedGame(g.game_id, g.first, g.second, _score_first(s), n)
            for g, s, n in zip(games, states, moves) if s.is_terminal()]
