"""Request models of the evaluation sections (tournament, Elo, A/B test, gauntlet).

Agents are `(model, search, budget)` strings (see orchestrator.play.agents); they are checked
against the game when the work is created, so a bad one is a 400 naming the field.
"""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AliasChoices, Field, model_validator

from orchestrator.models import RequestModel

MAX_INT = 2**63 - 1
ID = r"^[A-Za-z0-9._-]{1,96}$"
AgentName = Annotated[str, Field(min_length=1, max_length=300)]
BoardType = Annotated[str, Field(min_length=1, max_length=200, description="catalogue board type or openspiel:<game>")]
Score = Literal[0, 0.5, 1]
OPENING_PLIES = Field(default=None, ge=0, le=64,
                      description="random plies before a pair's games (same for both); default: the fewest that give "
                                  "the board 64 distinct openings (tic-tac-toe 2, connect four 3, square8 4)")


class TournamentStart(RequestModel):
    tournament_id: str | None = Field(default=None, pattern=ID, description="retrying with the same id is one tournament")
    agents: list[AgentName] = Field(min_length=2, max_length=32, validation_alias=AliasChoices("agents", "agent_ids"))
    games_per_match: int = Field(default=10, ge=1, le=100_000,
                                 validation_alias=AliasChoices("games_per_match", "games_per_pairing"),
                                 description="games per pairing, colours alternated")
    board_type: BoardType = "square8"
    opening_plies: int | None = OPENING_PLIES


class TournamentQuery(RequestModel):
    tournament_id: str | None = Field(default=None, pattern=ID)


class TournamentId(RequestModel):
    tournament_id: str = Field(pattern=ID)


class MatchReport(RequestModel):
    match_id: str = Field(pattern=r"^[A-Za-z0-9._:-]{1,128}$", description="the same match_id again is ignored")
    agent_a: AgentName
    agent_b: AgentName
    board_type: BoardType
    result: Score = Field(description="agent_a's score: 1, 0.5 or 0")

    @model_validator(mode="after")
    def _distinct(self) -> "MatchReport":
        if self.agent_a == self.agent_b:
            raise ValueError("agent_b must differ from agent_a")
        return self


class PlayMatch(RequestModel):
    agent_a: AgentName
    agent_b: AgentName
    board_type: BoardType = "square8"
    seed: int = Field(default=0, ge=0, le=MAX_INT)
    timeout_s: float = Field(default=60.0, gt=0, le=600)


class WorkerResult(RequestModel):
    game_id: str = Field(pattern=r"^[A-Za-z0-9._:-]{1,256}$", validation_alias=AliasChoices("game_id", "match_id"))
    result: Score = Field(description="score of the game's first agent (agent_a of its schedule entry)")


class TournamentResults(RequestModel):
    tournament_id: str = Field(pattern=ID)
    results: list[WorkerResult] = Field(min_length=1, max_length=10_000)


class EloQuery(RequestModel):
    board_type: BoardType = "square8"
    anchor: AgentName | None = Field(default=None, description="agent fixed at 0 (default: random, else the "
                                                               "smallest openspiel_mcts_<n>, else the most games)")


class HistoryQuery(RequestModel):
    agent: AgentName | None = None
    board_type: BoardType | None = None


class SprtFields(RequestModel):
    elo0: float = Field(default=0.0, ge=-2000, le=2000)
    elo1: float = Field(default=50.0, ge=-2000, le=2000)
    alpha: float = Field(default=0.05, gt=0, lt=0.5)
    beta: float = Field(default=0.05, gt=0, lt=0.5)
    elo_model: Literal["logistic", "normalized"] = "logistic"
    max_games: int = Field(default=400, ge=2, le=1_000_000)
    opening_plies: int | None = OPENING_PLIES

    @model_validator(mode="after")
    def _ordered(self) -> "SprtFields":
        if not self.elo0 < self.elo1:
            raise ValueError("elo1 must be above elo0")
        return self


class ABTestCreate(SprtFields):
    test_id: str | None = Field(default=None, pattern=ID, description="creating the same test_id again is one test")
    agent_a: AgentName
    agent_b: AgentName
    board_type: BoardType = "square8"


class ABTestId(RequestModel):
    test_id: str = Field(pattern=ID)


class ABTestResult(RequestModel):
    test_id: str = Field(pattern=ID)
    wins: int | None = Field(default=None, ge=0, le=MAX_INT)
    draws: int | None = Field(default=None, ge=0, le=MAX_INT)
    losses: int | None = Field(default=None, ge=0, le=MAX_INT)
    pentanomial: list[Annotated[int, Field(ge=0, le=MAX_INT)]] | None = Field(
        default=None, min_length=5, max_length=5, description="[LL, LD+DL, LW+DD+WL, DW+WD, WW] of agent_a")
    submission_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._:-]{1,128}$",
                                      description="a retried submission with the same id is counted once")

    @model_validator(mode="after")
    def _one_kind(self) -> "ABTestResult":
        counts = (self.wins, self.draws, self.losses)
        if self.pentanomial is not None and any(c is not None for c in counts):
            raise ValueError("give wins/draws/losses or pentanomial, not both")
        if self.pentanomial is None and all(c is None for c in counts):
            raise ValueError("give wins/draws/losses or pentanomial")
        return self


class GauntletExecute(SprtFields):
    gauntlet_id: str | None = Field(default=None, pattern=ID)
    candidate: AgentName
    baselines: list[AgentName] = Field(min_length=1, max_length=16)
    board_type: BoardType = "square8"


class GauntletQuery(RequestModel):
    gauntlet_id: str | None = Field(default=None, pattern=ID)


class QuickEval(RequestModel):
    candidate: AgentName
    baselines: list[AgentName] = Field(min_length=1, max_length=16)
    board_type: BoardType = "square8"
    games: int = Field(default=20, ge=1, le=1000, description="games against each baseline")
    opening_plies: int | None = OPENING_PLIES
