"""Tournaments (seed section "Tournament & Evaluation"): the TournamentActor singleton runs them.

Starting and cancelling are leader-only (they schedule cluster work); status, reported results and
single games go to the singleton from any node. The seed's SSH tournament is a tournament pinned
over every alive Ray node, with per-node progress; `ssh_cancel` (alias `cancel`) cancels any
tournament, and its games in flight are killed at once.
"""
from __future__ import annotations

from actors.naming import TOURNAMENT_ACTOR, lookup
from orchestrator.gateway.endpoint import Endpoint
from orchestrator.gateway.evaluation_models import (MatchReport, PlayMatch, TournamentId, TournamentQuery,
                                                    TournamentResults, TournamentStart)


def actor():
    return lookup(TOURNAMENT_ACTOR)


async def _start(node, args: TournamentStart, kind: str):
    spec = {"tournament_id": args.tournament_id, "agents": args.agents, "board_type": args.board_type,
            "games_per_pairing": args.games_per_match, "opening_plies": args.opening_plies, "kind": kind}
    reply = await node.call(actor().start_tournament.remote(spec, node.election()["epoch"]))
    return {"status": "success", "tournament_id": reply["tournament_id"], "created": reply.pop("created"),
            "tournament": reply}


async def tournament_start(node, args: TournamentStart, request):
    return await _start(node, args, "round_robin")


async def ssh_start(node, args: TournamentStart, request):
    return await _start(node, args, "nodes")


async def tournament_status(node, args: TournamentQuery, request):
    reply = await node.call(actor().tournament_status.remote(args.tournament_id))
    return {"status": "success", "tournament": reply} if args.tournament_id else {"status": "success", **reply}


async def tournament_cancel(node, args: TournamentId, request):
    reply = await node.call(actor().cancel_tournament.remote(args.tournament_id, node.election()["epoch"]))
    return {"status": "success", "tournament": reply}


async def tournament_match(node, args: MatchReport, request):
    reply = await node.call(actor().report_match.remote(args.model_dump()))
    return {"status": "success", **reply}


async def play_elo_match(node, args: PlayMatch, request):
    reply = await node.call(actor().play_match.remote(args.agent_a, args.agent_b, args.board_type, args.seed,
                                                      args.timeout_s))
    return {"status": "success", "game": reply}


async def tournament_result(node, args: TournamentResults, request):
    results = [r.model_dump() for r in args.results]
    reply = await node.call(actor().submit_results.remote(args.tournament_id, results))
    return {"status": "success", "tournament_id": args.tournament_id, **reply}


ENDPOINTS = [
    Endpoint(("POST",), "/tournament/start", tournament_start, "Start a round-robin tournament (games on the cluster)",
             args=TournamentStart, leader_only=True),
    Endpoint(("GET",), "/tournament/status", tournament_status,
             "Tournament progress: done/total, games/s, ETA, standings (?tournament_id=)", args=TournamentQuery),
    Endpoint(("POST",), "/tournament/match", tournament_match, "Report one external result (match_id stored once)",
             args=MatchReport),
    Endpoint(("POST",), "/tournament/play_elo_match", play_elo_match, "Play one game now and return it",
             args=PlayMatch),
    Endpoint(("POST",), "/tournament/result", tournament_result, "A worker submits results of a tournament's games",
             args=TournamentResults),
    Endpoint(("POST",), "/tournament/ssh_start", ssh_start, "Start a tournament spread over every alive node",
             args=TournamentStart, leader_only=True),
    Endpoint(("GET",), "/tournament/ssh_status", tournament_status,
             "Distributed tournament progress, per node (?tournament_id=)", args=TournamentQuery),
    Endpoint(("POST",), "/tournament/ssh_cancel", tournament_cancel, "Cancel a tournament; its games stop at once",
             args=TournamentId, leader_only=True),
    Endpoint(("POST",), "/tournament/cancel", tournament_cancel, "Cancel a tournament (alias of ssh_cancel)",
             args=TournamentId, leader_only=True),
]
