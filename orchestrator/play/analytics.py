"""Game analytics over self-play records: per board_type counts that merge across files and nodes.

A `Tally` is additive, so per-file tallies are cached by (size, mtime) and per-node tallies are
summed for a cluster view; `finish` turns a tally into the reported figures.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from orchestrator.play.records import read_games

HOUR_S = 3600.0
MINUTE_S = 60.0


@dataclass
class Tally:
    games: int = 0
    total_length: int = 0
    seat_points: list[float] = field(default_factory=list)  # win 1, draw 1/2 per seat
    terminations: dict[str, int] = field(default_factory=dict)
    first_finished: float | None = None
    last_finished: float | None = None
    finished_per_minute: dict[int, int] = field(default_factory=dict)  # bounded, unlike a list of times

    def add_game(self, record: dict[str, Any]) -> None:
        self.games += 1
        self.total_length += int(record["length"])
        outcome = record["outcome"]
        best = max(outcome)
        winners = [i for i, value in enumerate(outcome) if value == best]
        if len(self.seat_points) < len(outcome):
            self.seat_points += [0.0] * (len(outcome) - len(self.seat_points))
        for seat in winners:
            self.seat_points[seat] += 1.0 / len(winners)
        kind = record.get("termination", "terminal")
        self.terminations[kind] = self.terminations.get(kind, 0) + 1
        finished = _timestamp(record.get("finished_at"))
        if finished is not None:
            minute = int(finished // MINUTE_S)
            self.finished_per_minute[minute] = self.finished_per_minute.get(minute, 0) + 1
            self.first_finished = min(filter(None, (self.first_finished, finished)))
            self.last_finished = max(filter(None, (self.last_finished, finished)))

    def merge(self, other: "Tally") -> "Tally":
        merged = Tally(self.games + other.games, self.total_length + other.total_length)
        width = max(len(self.seat_points), len(other.seat_points))
        merged.seat_points = [(self.seat_points + [0.0] * width)[i] + (other.seat_points + [0.0] * width)[i]
                              for i in range(width)]
        merged.terminations = dict(self.terminations)
        for kind, count in other.terminations.items():
            merged.terminations[kind] = merged.terminations.get(kind, 0) + count
        merged.finished_per_minute = dict(self.finished_per_minute)
        for minute, count in other.finished_per_minute.items():
            merged.finished_per_minute[minute] = merged.finished_per_minute.get(minute, 0) + count
        firsts = [t for t in (self.first_finished, other.first_finished) if t is not None]
        lasts = [t for t in (self.last_finished, other.last_finished) if t is not None]
        merged.first_finished = min(firsts, default=None)
        merged.last_finished = max(lasts, default=None)
        return merged

    def to_dict(self) -> dict[str, Any]:
        return {"games": self.games, "total_length": self.total_length, "seat_points": self.seat_points,
                "terminations": self.terminations, "first_finished": self.first_finished,
                "last_finished": self.last_finished,
                "finished_per_minute": {str(m): c for m, c in self.finished_per_minute.items()}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Tally":
        tally = cls(int(data["games"]), int(data["total_length"]), list(data["seat_points"]),
                    dict(data["terminations"]))
        tally.finished_per_minute = {int(m): int(c) for m, c in data["finished_per_minute"].items()}
        tally.first_finished = data["first_finished"]
        tally.last_finished = data["last_finished"]
        return tally

    def finish(self, now: float) -> dict[str, Any]:
        span_h = ((self.last_finished - self.first_finished) / HOUR_S) if self.first_finished is not None else 0.0
        return {
            "games": self.games,
            "games_last_hour": sum(c for m, c in self.finished_per_minute.items() if (now - HOUR_S) // MINUTE_S <= m),
            "games_per_hour": self.games / span_h if span_h > 0 else None,
            "mean_length": self.total_length / self.games if self.games else None,
            "seat_win_rates": [round(p / self.games, 4) for p in self.seat_points] if self.games else [],
            "terminations": self.terminations,
        }


def _timestamp(value: Any) -> float | None:
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value).timestamp()
        except ValueError:
            return None
    return None


class AnalyticsCache:
    """Per-file tallies, recomputed only when a file's size or mtime changes."""

    def __init__(self) -> None:
        self._files: dict[Path, tuple[tuple[int, float], str, Tally]] = {}

    def tallies(self, data_dir: Path) -> dict[str, Tally]:
        root = Path(data_dir) / "selfplay"
        seen: set[Path] = set()
        totals: dict[str, Tally] = {}
        for path in sorted(root.glob("*/*/*.jsonl")) if root.is_dir() else []:
            stat = path.stat()
            signature = (stat.st_size, stat.st_mtime)
            seen.add(path)
            cached = self._files.get(path)
            if cached is None or cached[0] != signature:
                tally = Tally()
                board_type = path.parent.parent.name
                for record in read_games([path]):
                    board_type = record.get("board_type", board_type)
                    tally.add_game(record)
                cached = self._files[path] = (signature, board_type, tally)
            _, board_type, tally = cached
            totals[board_type] = totals.get(board_type, Tally()).merge(tally)
        for gone in set(self._files) - seen:
            del self._files[gone]
        return totals


def search_stats(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per node and agent, from self-play jobs' progress: simulations/s and network evals/s of the
    jobs running now (summed), mean search depth (weighted by simulations), leaves per network call
    (weighted by calls), visits carried over by tree reuse and their share of all root visits, and
    totals over every job seen."""
    groups: dict[tuple[str, str], dict[str, float]] = {}
    for job in jobs:
        progress = job.get("progress") or {}
        if job.get("job_type") != "selfplay" or "agent" not in progress:
            continue
        g = groups.setdefault((job["node_id"], progress["agent"]), dict.fromkeys(
            ("jobs", "running", "simulations", "depth_sum", "simulations_per_s", "calls", "leaves", "evals_per_s",
             "positions", "carried"), 0.0))
        running = job.get("state") == "running"
        sims = float(progress.get("simulations", 0.0))
        g["jobs"] += 1
        g["running"] += running
        g["simulations"] += sims
        g["depth_sum"] += sims * float(progress.get("mean_depth", 0.0))
        g["calls"] += float(progress.get("eval_network_calls", 0.0))
        g["leaves"] += float(progress.get("eval_leaves", 0.0))
        g["positions"] += float(progress.get("positions", 0.0))
        g["carried"] += float(progress.get("carried_simulations", 0.0))
        if running:
            g["simulations_per_s"] += float(progress.get("simulations_per_s", 0.0))
            g["evals_per_s"] += float(progress.get("eval_evals_per_s", 0.0))
    return [{
        "node_id": node_id, "agent": agent, "jobs": int(g["jobs"]), "running_jobs": int(g["running"]),
        "simulations": g["simulations"], "positions": g["positions"],
        "simulations_per_s": g["simulations_per_s"],
        "mean_depth": g["depth_sum"] / g["simulations"] if g["simulations"] else None,
        "leaves_per_network_call": g["leaves"] / g["calls"] if g["calls"] else None,
        "network_evals_per_s": g["evals_per_s"],
        "carried_simulations": g["carried"],
        "carried_share": g["carried"] / (g["carried"] + g["simulations"]) if g["carried"] + g["simulations"] else None,
    } for (node_id, agent), g in sorted(groups.items())]
