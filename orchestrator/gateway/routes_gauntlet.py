"""Gauntlets (seed section "Gauntlet Evaluation"): a candidate against each baseline, one SPRT each.

`execute` answers at once with the gauntlet id; `status` gives each test's SPRT state and the
verdict (passed: every test accepted H1; failed: one accepted H0; inconclusive: one hit max_games).
`quick-eval` is a small fixed-size match, labelled as not a decision.
"""
from __future__ import annotations

from orchestrator.gateway.endpoint import Endpoint
from orchestrator.gateway.evaluation_models import GauntletExecute, GauntletQuery, QuickEval
from orchestrator.gateway.routes_tournament import actor

QUICK_EVAL_NOTE = "a fixed-size match for a first look; not a statistical decision (use /gauntlet/execute)"


async def gauntlet_execute(node, args: GauntletExecute, request):
    reply = await node.call(actor().execute_gauntlet.remote(args.model_dump(), node.election()["epoch"]))
    return {"status": "success", "gauntlet_id": reply["gauntlet_id"], "created": reply.pop("created"),
            "gauntlet": reply}


async def gauntlet_status(node, args: GauntletQuery, request):
    reply = await node.call(actor().gauntlet_status.remote(args.gauntlet_id))
    return {"status": "success", "gauntlet": reply} if args.gauntlet_id else {"status": "success", **reply}


async def quick_eval(node, args: QuickEval, request):
    spec = {"tournament_id": None, "agents": [args.candidate, *args.baselines], "board_type": args.board_type,
            "games_per_pairing": args.games, "opening_plies": args.opening_plies, "kind": "quick_eval"}
    reply = await node.call(actor().start_tournament.remote(spec, node.election()["epoch"]))
    reply.pop("created")
    return {"status": "success", "tournament_id": reply["tournament_id"], "decision": None, "note": QUICK_EVAL_NOTE,
            "status_url": f"/tournament/status?tournament_id={reply['tournament_id']}", "tournament": reply}


ENDPOINTS = [
    Endpoint(("POST",), "/gauntlet/execute", gauntlet_execute, "Play a candidate against baselines until each SPRT decides",
             args=GauntletExecute, leader_only=True),
    Endpoint(("GET",), "/gauntlet/status", gauntlet_status, "Gauntlets: each test's SPRT state and the verdict",
             args=GauntletQuery),
    Endpoint(("POST",), "/gauntlet/quick-eval", quick_eval, "A small fixed-size match (not a decision)",
             args=QuickEval, leader_only=True),
]
