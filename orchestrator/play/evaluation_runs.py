"""Tournaments, A/B tests and gauntlets as plain records: their game schedules and their progress.

Nothing here plays or stores anything. A run's record holds what was asked and how it ended; which
of its games are done is read from the stored game results (one record per game id, written once),
so a run resumed anywhere recomputes its progress from those records and never replays a game.

- A tournament's games are fixed when it starts: every pairing plays `games_per_pairing` games in
  colour-swapped pairs (game k of a pairing: pair k // 2, the pairing's first agent moves first when
  k is even), from openings seeded by the tournament id.
- An A/B test plays colour-swapped pairs of agent_a against agent_b, pair after pair, until the SPRT
  over the completed pairs (pentanomial) decides or `max_games` games are counted; results
  submitted from outside add trinomial or pentanomial counts (one kind per test, never both).
- A gauntlet is one A/B test of the candidate against each baseline; it passes when every test
  accepts H1, fails as soon as one accepts H0, and is inconclusive when one ends undecided.
"""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Iterable, Mapping

from orchestrator.play.evaluation import EvalGame, pair_games
from orchestrator.stats.bradley_terry import GameResult, fit
from orchestrator.stats.pentanomial import pentanomial
from orchestrator.stats.sprt import SprtParams, SprtResult, sprt

RUNNING, FINISHED, CANCELLED, CREATED = "running", "finished", "cancelled", "created"
FAILED = "failed"  # its games kept failing (an agent that cannot play on this node, say)
MAX_SEED = 2**63 - 1


def derived_seed(*parts: Any) -> int:
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") & MAX_SEED


def game_record(game_id: str, agent_a: str, agent_b: str, board_type: str, result: float, source: str,
                source_id: str | None, now: float, node_id: str | None = None, moves: int | None = None) -> dict[str, Any]:
    """The one stored record of an evaluation game; `result` is agent_a's score (1, 0.5 or 0)."""
    return {"game_id": game_id, "agent_a": agent_a, "agent_b": agent_b, "board_type": board_type,
            "result": result, "source": source, "source_id": source_id, "played_at": now, "node_id": node_id,
            "moves": moves}


def ratings(records: Iterable[Mapping[str, Any]], board_type: str, anchor: str | None = None) -> dict[str, Any]:
    """The /elo/table body for one board type (see orchestrator.stats.bradley_terry for the rules)."""
    table = fit([GameResult(r["agent_a"], r["agent_b"], r["result"]) for r in records
                 if r["board_type"] == board_type], anchor=anchor)
    return {"board_type": board_type, "anchor": table.anchor, "level": 0.95,
            "rows": [asdict(row) for row in table.rows]}


# --- tournaments -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Tournament:
    tournament_id: str
    board_type: str
    agents: tuple[str, ...]
    games_per_pairing: int
    pairings: tuple[tuple[int, int], ...]  # indices into agents
    opening_plies: int
    kind: str  # "round_robin", "nodes" (spread over every alive node) or "quick_eval"
    created_at: float
    state: str = RUNNING
    finished_at: float | None = None
    nodes: tuple[str, ...] = ()  # for kind "nodes": the Ray nodes its games are pinned to

    @classmethod
    def round_robin(cls, tournament_id: str, board_type: str, agents: list[str], games_per_pairing: int,
                    opening_plies: int, kind: str, now: float, nodes: tuple[str, ...] = ()) -> "Tournament":
        pairings = tuple((i, j) for i in range(len(agents)) for j in range(i + 1, len(agents)))
        return cls(tournament_id, board_type, tuple(agents), games_per_pairing, pairings, opening_plies, kind, now,
                   nodes=nodes)

    @classmethod
    def candidate_against(cls, tournament_id: str, board_type: str, candidate: str, baselines: list[str],
                          games_per_pairing: int, opening_plies: int, now: float) -> "Tournament":
        agents = (candidate, *baselines)
        return cls(tournament_id, board_type, agents, games_per_pairing,
                   tuple((0, j) for j in range(1, len(agents))), opening_plies, "quick_eval", now)

    @property
    def total(self) -> int:
        return len(self.pairings) * self.games_per_pairing

    def schedule(self) -> list[EvalGame]:
        games = []
        for i, j in self.pairings:
            for pair in range((self.games_per_pairing + 1) // 2):
                seed = derived_seed(self.tournament_id, i, j, pair)
                both = pair_games(f"{self.tournament_id}-{i}v{j}-{pair}", self.agents[i], self.agents[j], seed,
                                  self.opening_plies)
                games.extend(both[: self.games_per_pairing - 2 * pair])
        return games

    def to_doc(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> "Tournament":
        return cls(**{**doc, "agents": tuple(doc["agents"]), "pairings": tuple(tuple(p) for p in doc["pairings"]),
                      "nodes": tuple(doc["nodes"])})

    def status(self, records: list[Mapping[str, Any]], rate_gps: float | None, now: float) -> dict[str, Any]:
        done = len(records)
        standings: dict[str, dict[str, float]] = {a: {"agent": a, "games": 0, "points": 0.0, "wins": 0, "draws": 0,
                                                      "losses": 0} for a in self.agents}
        for r in records:
            for agent, score in ((r["agent_a"], r["result"]), (r["agent_b"], 1 - r["result"])):
                row = standings[agent]
                row["games"] += 1
                row["points"] += score
                row["wins" if score == 1 else "draws" if score == 0.5 else "losses"] += 1
        table = sorted(standings.values(), key=lambda row: (-row["points"], row["agent"]))
        remaining = self.total - done
        eta = None if self.state != RUNNING else 0.0 if remaining == 0 else (remaining / rate_gps if rate_gps else None)
        return {"tournament_id": self.tournament_id, "kind": self.kind, "board_type": self.board_type,
                "agents": list(self.agents), "games_per_pairing": self.games_per_pairing,
                "opening_plies": self.opening_plies, "state": self.state, "done": done, "total": self.total, "games_per_s": rate_gps, "eta_s": eta,
                "created_at": self.created_at, "finished_at": self.finished_at, "standings": table,
                "ratings": ratings(records, self.board_type)["rows"] if records else []}


# --- A/B tests -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ABTest:
    test_id: str
    agent_a: str
    agent_b: str
    board_type: str
    elo0: float
    elo1: float
    alpha: float
    beta: float
    elo_model: str
    max_games: int
    opening_plies: int
    created_at: float
    source: str = "abtest"  # or "gauntlet"
    state: str = CREATED
    finished_at: float | None = None
    submitted_wdl: tuple[int, int, int] = (0, 0, 0)
    submitted_pentanomial: tuple[int, int, int, int, int] = (0, 0, 0, 0, 0)
    submissions: tuple[str, ...] = ()
    final: dict[str, Any] | None = field(default=None, compare=False)  # the SPRT numbers it ended on

    @property
    def params(self) -> SprtParams:
        return SprtParams(self.elo0, self.elo1, self.alpha, self.beta, self.elo_model)

    def spec(self) -> dict[str, Any]:
        """What a retried create must repeat to be the same test."""
        keys = ("agent_a", "agent_b", "board_type", "elo0", "elo1", "alpha", "beta", "elo_model", "max_games",
                "opening_plies")
        return {k: getattr(self, k) for k in keys}

    def pair(self, index: int) -> tuple[EvalGame, EvalGame]:
        return pair_games(f"{self.test_id}-p{index}", self.agent_a, self.agent_b,
                          derived_seed(self.test_id, index), self.opening_plies)

    def to_doc(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> "ABTest":
        return cls(**{**doc, "submitted_wdl": tuple(doc["submitted_wdl"]), "submissions": tuple(doc["submissions"]),
                      "submitted_pentanomial": tuple(doc["submitted_pentanomial"])})

    def completed_pairs(self, records: Mapping[str, Mapping[str, Any]]) -> list[tuple[float, float]]:
        """agent_a's scores in each pair whose two games are both stored, in pair order."""
        pairs, index = [], 0
        prefix = f"{self.test_id}-p"
        indices = sorted({int(gid[len(prefix):].rsplit("-", 1)[0]) for gid in records if gid.startswith(prefix)})
        for index in indices:
            first, second = (records.get(f"{prefix}{index}-{k}") for k in (0, 1))
            if first is not None and second is not None:
                pairs.append((first["result"], 1 - second["result"]))
        return pairs

    def counts(self, records: Mapping[str, Mapping[str, Any]]) -> tuple[list[int], list[int], int]:
        """(wins/draws/losses known game by game, pentanomial, games counted)."""
        pairs = self.completed_pairs(records)
        wins, draws, losses = self.submitted_wdl
        for score in (s for pair in pairs for s in pair):
            wins, draws, losses = wins + (score == 1), draws + (score == 0.5), losses + (score == 0)
        penta = [a + b for a, b in zip(pentanomial(pairs), self.submitted_pentanomial)]
        games = 2 * len(pairs) + sum(self.submitted_wdl) + 2 * sum(self.submitted_pentanomial)
        return [wins, draws, losses], penta, games

    def evaluate(self, records: Mapping[str, Mapping[str, Any]]) -> tuple[SprtResult, list[int], list[int], int]:
        wdl, penta, games = self.counts(records)
        result = sprt(self.params, pentanomial=penta) if sum(penta) else sprt(self.params, wdl=wdl)
        return result, wdl, penta, games

    def settle(self, records: Mapping[str, Mapping[str, Any]], now: float) -> "ABTest":
        """Finished once the SPRT decides or max_games are counted; the numbers it ended on are kept."""
        if self.state not in (CREATED, RUNNING):
            return self
        result, wdl, penta, games = self.evaluate(records)
        if result.decision is None and games < self.max_games:
            return self
        return replace(self, state=FINISHED, finished_at=now, final=self._view(result, wdl, penta, games))

    def status(self, records: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        numbers = self.final if self.final is not None else self._view(*self.evaluate(records))
        return {"test_id": self.test_id, "state": self.state, "source": self.source, "agent_a": self.agent_a,
                "agent_b": self.agent_b, "board_type": self.board_type, "elo0": self.elo0, "elo1": self.elo1,
                "alpha": self.alpha, "beta": self.beta, "elo_model": self.elo_model, "max_games": self.max_games,
                "opening_plies": self.opening_plies, "created_at": self.created_at, "finished_at": self.finished_at,
                **numbers}

    @staticmethod
    def _view(result: SprtResult, wdl: list[int], penta: list[int], games: int) -> dict[str, Any]:
        return {"games": games, "wins": wdl[0], "draws": wdl[1], "losses": wdl[2], "pentanomial": penta,
                "llr": result.llr, "lower_bound": result.lower_bound, "upper_bound": result.upper_bound,
                "decision": result.decision, "elo": result.elo,
                "elo_ci95": list(result.elo_ci95) if result.elo_ci95 else None, "los": result.los,
                "clamped": result.clamped}

    def add_results(self, wdl: tuple[int, int, int] | None, penta: tuple[int, ...] | None,
                    submission_id: str | None) -> "ABTest":
        """Counts reported from outside; a submission_id seen before adds nothing (a client retry)."""
        if submission_id is not None and submission_id in self.submissions:
            return self
        submissions = self.submissions + ((submission_id,) if submission_id else ())
        if wdl is not None:
            return replace(self, submitted_wdl=tuple(a + b for a, b in zip(self.submitted_wdl, wdl)),
                           submissions=submissions)
        return replace(self, submitted_pentanomial=tuple(a + b for a, b in zip(self.submitted_pentanomial, penta)),
                       submissions=submissions)


# --- gauntlets -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Gauntlet:
    gauntlet_id: str
    candidate: str
    baselines: tuple[str, ...]
    board_type: str
    test_ids: tuple[str, ...]
    created_at: float
    state: str = RUNNING
    finished_at: float | None = None

    @staticmethod
    def test_id(gauntlet_id: str, index: int) -> str:
        return f"{gauntlet_id}-b{index}"

    def to_doc(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> "Gauntlet":
        return cls(**{**doc, "baselines": tuple(doc["baselines"]), "test_ids": tuple(doc["test_ids"])})

    @staticmethod
    def verdict(decisions: list[tuple[str, str | None]]) -> str | None:
        """(state, decision) of each test -> "passed", "failed", "inconclusive", or None while going on."""
        if any(d == "H0" for _, d in decisions):
            return "failed"
        if all(s == FINISHED for s, _ in decisions):
            return "passed" if all(d == "H1" for _, d in decisions) else "inconclusive"
        if any(s in (CANCELLED, FAILED) for s, _ in decisions):
            return "cancelled"
        return None
