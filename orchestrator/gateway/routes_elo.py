"""Ratings (seed sections "Tournament & Evaluation" and the `/api/elo/leaderboard` example).

A Bradley–Terry maximum-likelihood fit over every stored evaluation game of a board type, with 95%
intervals relative to the anchor (see orchestrator.stats.bradley_terry); agents without a finite
estimate have `elo: null` and an open-ended interval.
"""
from __future__ import annotations

from orchestrator.gateway.endpoint import Endpoint
from orchestrator.gateway.evaluation_models import EloQuery, HistoryQuery
from orchestrator.gateway.routes_tournament import actor


async def elo_table(node, args: EloQuery, request):
    return await node.call(actor().ratings.remote(args.board_type, args.anchor))


async def elo_history(node, args: HistoryQuery, request):
    points = await node.call(actor().history.remote(args.agent, args.board_type))
    return {"status": "success", "agent": args.agent, "board_type": args.board_type, "history": points}


ENDPOINTS = [
    Endpoint(("GET",), "/elo/table", elo_table, "Bradley-Terry ratings with 95% intervals (?board_type=&anchor=)",
             args=EloQuery),
    Endpoint(("GET",), "/api/elo/leaderboard", elo_table, "The Elo table (same as /elo/table)", args=EloQuery),
    Endpoint(("GET",), "/elo/history", elo_history, "Ratings after each tournament or gauntlet (?agent=&board_type=)",
             args=HistoryQuery),
]
