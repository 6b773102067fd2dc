"""The game catalogue: a `board_type` names an OpenSpiel game; engine code never special-cases one.

`square8` is the default (Othello 8x8). Any OpenSpiel game can be named directly as
`openspiel:<game string>`, for example `openspiel:tic_tac_toe` or `openspiel:hex(board_size=7)`.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import pyspiel

DEFAULT_BOARD_TYPE = "square8"
OPENSPIEL_PREFIX = "openspiel:"

CATALOGUE: dict[str, str] = {
    "square8": "othello",
    "connect_four": "connect_four",
    "breakthrough": "breakthrough(rows=6,columns=6)",
    "hex": "hex(board_size=5)",
    "tic_tac_toe": "tic_tac_toe",
}


class UnknownGame(ValueError):
    """A board_type that is neither in the catalogue nor a loadable `openspiel:` game."""


@dataclass(frozen=True)
class GameSpec:
    board_type: str
    game_string: str
    num_players: int
    num_actions: int
    observation_shape: tuple[int, ...]
    max_game_length: int


def register_games(extra: dict[str, str]) -> None:
    """Add a deployment's own board types (cluster.yaml `games`); built-in names cannot be redefined."""
    for board_type, string in extra.items():
        if CATALOGUE.get(board_type, string) != string:
            raise UnknownGame(f"board_type {board_type!r} is built in as {CATALOGUE[board_type]!r}")
        if board_type.startswith(OPENSPIEL_PREFIX):
            raise UnknownGame(f"board_type {board_type!r} may not start with {OPENSPIEL_PREFIX!r}")
        CATALOGUE[board_type] = string
        load_game(board_type)  # fail at start-up, not in the middle of a job


def game_string(board_type: str) -> str:
    if board_type in CATALOGUE:
        return CATALOGUE[board_type]
    if board_type.startswith(OPENSPIEL_PREFIX) and len(board_type) > len(OPENSPIEL_PREFIX):
        return board_type[len(OPENSPIEL_PREFIX):]
    known = ", ".join(sorted(CATALOGUE))
    raise UnknownGame(f"unknown board_type {board_type!r}; known: {known}, or openspiel:<game string>")


@functools.lru_cache(maxsize=64)
def load_game(board_type: str) -> pyspiel.Game:
    string = game_string(board_type)
    try:
        game = pyspiel.load_game(string)
    except pyspiel.SpielError as exc:
        raise UnknownGame(f"OpenSpiel cannot load {string!r}: {exc}") from None
    kind = game.get_type()
    if kind.dynamics != pyspiel.GameType.Dynamics.SEQUENTIAL or kind.chance_mode != pyspiel.GameType.ChanceMode.DETERMINISTIC:
        raise UnknownGame(f"{string!r} is not a deterministic sequential game, which search here requires")
    if not kind.provides_observation_tensor:
        raise UnknownGame(f"{string!r} provides no observation tensor, which networks and the heuristic need")
    return game


@functools.lru_cache(maxsize=64)
def game_spec(board_type: str) -> GameSpec:
    game = load_game(board_type)
    return GameSpec(
        board_type=board_type,
        game_string=game_string(board_type),
        num_players=game.num_players(),
        num_actions=game.num_distinct_actions(),
        observation_shape=tuple(game.observation_tensor_shape()),
        max_game_length=game.max_game_length(),
    )
