"""Trends of improvement runs and the model leaderboard, computed from stored runs and ledgers.

Pure functions over the stored run and ledger documents, so every view can be
recomputed after any failure. Two kinds of Elo appear, and are named apart:
    elo_delta  one cycle's gating estimate of candidate minus best (from its SPRT games)
    elo_chain  the sum of the elo_delta of every promotion that is still in the best's lineage
               (a rolled-back promotion adds nothing); a quick trend, not a rating
Ratings proper (Bradley-Terry over every stored evaluation game, with 95% intervals) come from
the evaluation rating table and are what the leaderboard shows.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

SECONDS_PER_HOUR = 3600.0


def _finished_cycles(runs: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    cycles = [{"run_id": r["run_id"], **c} for r in runs for c in r["cycles"] if c["finished_at"] is not None]
    return sorted(cycles, key=lambda c: c["finished_at"])


def history(runs: Iterable[Mapping[str, Any]], ledger: Mapping[str, Any], since: float | None) -> list[dict[str, Any]]:
    """One point per finished cycle, oldest first: games, loss, gating outcome, the best after it."""
    runs = list(runs)
    bests = {e["event_id"].split(":")[0]: e for e in ledger["events"] if e["kind"] != "non_regression_passed"}
    chain, points, started = 0.0, [], None
    games_total = 0
    for cycle in _finished_cycles(runs):
        started = cycle["started_at"] if started is None else min(started, cycle["started_at"])
        games_total += cycle["games"]
        if cycle["outcome"] == "promoted" and cycle["elo_delta"] is not None:
            chain += cycle["elo_delta"]
        elapsed_h = max(cycle["finished_at"] - started, 1e-9) / SECONDS_PER_HOUR
        point = {"at": cycle["finished_at"], "run_id": cycle["run_id"], "cycle_id": cycle["cycle_id"],
                 "outcome": cycle["outcome"], "games": cycle["games"], "loss": cycle["loss"],
                 "elo_delta": cycle["elo_delta"], "elo_chain": chain, "games_total": games_total,
                 "games_per_hour": games_total / elapsed_h,
                 "best_after": bests[cycle["cycle_id"]]["model_id"] if cycle["cycle_id"] in bests else None,
                 "duration_s": cycle["finished_at"] - cycle["started_at"]}
        if since is None or point["at"] >= since:
            points.append(point)
    return points


def summary(runs: Iterable[Mapping[str, Any]], ledger: Mapping[str, Any], now: float) -> dict[str, Any]:
    runs = list(runs)
    points = history(runs, ledger, None)
    recent = [p for p in points if p["at"] >= now - SECONDS_PER_HOUR]
    losses = [p["loss"] for p in points if p["loss"] is not None]
    outcomes = [p["outcome"] for p in points]
    return {
        "board_type": ledger["board_type"], "current_best": ledger["best"],
        "runs": len(runs), "running": sum(1 for r in runs if r["state"] == "running"),
        "cycles_finished": len(points), "promotions": outcomes.count("promoted"),
        "rollbacks": sum(1 for e in ledger["events"] if e["kind"] in ("rollback", "manual_rollback")),
        "discards": outcomes.count("discarded"),
        "games_total": points[-1]["games_total"] if points else 0,
        "games_per_hour": points[-1]["games_per_hour"] if points else 0.0,
        "games_last_hour": sum(p["games"] for p in recent),
        "first_loss": losses[0] if losses else None, "latest_loss": losses[-1] if losses else None,
        "elo_chain": points[-1]["elo_chain"] if points else 0.0,
        "last_cycle_at": points[-1]["at"] if points else None,
    }


def leaderboard(table: Mapping[str, Any], ledger: Mapping[str, Any],
                cycles: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The rating table's network agents (`model:<id>+<search>`), best first, with where each came from."""
    former = {e["model_id"] for e in ledger["events"]}
    rows = []
    for row in table["rows"]:
        agent = row["agent"]
        if not agent.startswith("model:"):
            continue
        model_id = agent[len("model:"):].split("+", 1)[0]
        cycle = cycles.get(model_id)
        role = "best" if model_id == ledger["best"] else "former_best" if model_id in former else "candidate"
        rows.append({**row, "model_id": model_id, "role": role, "cycle_id": cycle["cycle_id"] if cycle else None,
                     "outcome": cycle["outcome"] if cycle else None})
    return {"board_type": table["board_type"], "anchor": table.get("anchor"), "current_best": ledger["best"],
            "rows": rows}
