"""Trends (seed section "Metrics & Analytics"): games, losses and gating outcomes of improvement runs over time.

Computed from the runs and ledgers in the cluster store (orchestrator.learn.trends); leader-only.
"""
from __future__ import annotations

import time

from pydantic import Field

from actors.pipeline import pipeline_actor
from orchestrator.gateway.endpoint import Endpoint
from orchestrator.gateway.routes_improvement import BoardQuery


class HistoryQuery(BoardQuery):
    since: float | None = Field(None, ge=0, le=2**63 - 1, description="unix time; only points from then on")


async def trends_summary(node, args: BoardQuery, request):
    return {"status": "success", **await node.call(pipeline_actor().trends.remote(args.board_type, time.time()))}


async def trends_history(node, args: HistoryQuery, request):
    points = await node.call(pipeline_actor().history.remote(args.board_type, args.since))
    return {"status": "success", "board_type": args.board_type, "count": len(points), "points": points}


ENDPOINTS = [
    Endpoint(("GET",), "/trends/summary", trends_summary,
             "Promotions, rollbacks, games/hour, first and latest loss, Elo chain of the best (?board_type=)",
             args=BoardQuery, leader_only=True),
    Endpoint(("GET",), "/trends/history", trends_history,
             "One point per finished cycle: games, loss, Elo delta and chain, best after it (?board_type=&since=)",
             args=HistoryQuery, leader_only=True),
]
