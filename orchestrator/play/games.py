"""The game catalogue: a `board_type` names an OpenSpiel game; engine code never special-cases one.

`square8` is the default (Othello 8x8). Any OpenSpiel game can be named directly as
`openspiel:<game string>`, for example `openspiel:tic_tac_toe` or `openspiel:hex(board_size=7)`.
A deployment adds its own board types (cluster.yaml `games`): the catalogue is built once from
settings with `GameCatalog.from_settings` and passed to whatever needs it; `BUILTIN` is the
catalogue of the built-in games alone. Pydantic configs that name a board type validate it against
the catalogue given as validation context (`model_validate(data, context={"games": catalog})`).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping

import pyspiel

DEFAULT_BOARD_TYPE = "square8"
OPENSPIEL_PREFIX = "openspiel:"
GAMES_CONTEXT_KEY = "games"

BUILTIN_GAMES: Mapping[str, str] = MappingProxyType({
    "square8": "othello",
    "connect_four": "connect_four",
    "breakthrough": "breakthrough(rows=6,columns=6)",
    "hex": "hex(board_size=5)",
    "tic_tac_toe": "tic_tac_toe",
})


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


@dataclass(frozen=True)
class GameCatalog:
    """board_type -> OpenSpiel game string. Immutable; build it with `from_settings`."""

    games: Mapping[str, str]

    @classmethod
    def from_settings(cls, extra: Mapping[str, str]) -> GameCatalog:
        """The built-in games plus a deployment's own; built-in names cannot be redefined, and every
        extra game is loaded here, so a bad one fails at start-up rather than in the middle of a job."""
        games = dict(BUILTIN_GAMES)
        for board_type, string in extra.items():
            if games.get(board_type, string) != string:
                raise UnknownGame(f"board_type {board_type!r} is built in as {games[board_type]!r}")
            if board_type.startswith(OPENSPIEL_PREFIX):
                raise UnknownGame(f"board_type {board_type!r} may not start with {OPENSPIEL_PREFIX!r}")
            _load_string(string)
            games[board_type] = string
        return cls(MappingProxyType(games))

    def __hash__(self) -> int:
        return hash(tuple(sorted(self.games.items())))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GameCatalog) and dict(self.games) == dict(other.games)

    def __reduce__(self) -> tuple[Any, ...]:
        # MappingProxyType does not pickle; Ray ships a catalogue to tasks and actors.
        return _rebuild, (dict(self.games),)

    def board_types(self) -> list[str]:
        return sorted(self.games)

    def game_string(self, board_type: str) -> str:
        if board_type in self.games:
            return self.games[board_type]
        if board_type.startswith(OPENSPIEL_PREFIX) and len(board_type) > len(OPENSPIEL_PREFIX):
            return board_type[len(OPENSPIEL_PREFIX):]
        known = ", ".join(self.board_types())
        raise UnknownGame(f"unknown board_type {board_type!r}; known: {known}, or openspiel:<game string>")

    def load(self, board_type: str) -> pyspiel.Game:
        return _load_string(self.game_string(board_type))

    def spec(self, board_type: str) -> GameSpec:
        return _spec(board_type, self.game_string(board_type))


def _rebuild(games: dict[str, str]) -> GameCatalog:
    return GameCatalog(MappingProxyType(games))


def catalog_in(context: Any) -> GameCatalog:
    """The catalogue a pydantic validator was given as context, else the built-in one."""
    if isinstance(context, Mapping) and isinstance(context.get(GAMES_CONTEXT_KEY), GameCatalog):
        return context[GAMES_CONTEXT_KEY]
    return BUILTIN


@functools.lru_cache(maxsize=64)
def _load_string(string: str) -> pyspiel.Game:
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
def _spec(board_type: str, string: str) -> GameSpec:
    game = _load_string(string)
    return GameSpec(
        board_type=board_type,
        game_string=string,
        num_players=game.num_players(),
        num_actions=game.num_distinct_actions(),
        observation_shape=tuple(game.observation_tensor_shape()),
        max_game_length=game.max_game_length(),
    )


BUILTIN = GameCatalog.from_settings({})
