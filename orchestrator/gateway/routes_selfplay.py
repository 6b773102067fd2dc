"""Self-play (seed sections "Selfplay & Training", "Pipeline Control", "Metrics & Analytics")."""
from __future__ import annotations

import asyncio
import time
import uuid

from aiohttp import web

from orchestrator.cluster.placement import jobs_to_reduce, pick_selfplay_node
from orchestrator.errors import BadRequest, Conflict, NotFound, Unavailable
from orchestrator.gateway.dispatch import start_job_on, stop_job_on
from orchestrator.gateway.endpoint import Endpoint
from orchestrator.gateway.forward import forward_to_leader
from orchestrator.models import AnalyticsQuery, ReduceSelfplayRequest, SelfplayStartRequest, SelfplayWorkerRequest
from orchestrator.play.analytics import AnalyticsCache, Tally, search_stats
from orchestrator.play.games import GAMES_CONTEXT_KEY, GameCatalog
from orchestrator.play.selfplay import SelfplayConfig

WORKERS = "selfplay_workers"
ANALYTICS = web.AppKey("analytics_cache", AnalyticsCache)


def _config(args: SelfplayStartRequest, games: GameCatalog) -> dict:
    """Validated by the job's own config (a ValidationError is a 400 naming the field)."""
    config = SelfplayConfig.model_validate(args.job_fields(), context={GAMES_CONTEXT_KEY: games})
    return config.model_dump(mode="json", exclude_none=True)


def _workable(node, node_id: str) -> None:
    peer = node.peer(node_id)
    if peer is None:
        raise NotFound(f"unknown node {node_id!r}", node_id=node_id)
    if peer["state"] == "retired":
        raise Conflict(f"node {node_id!r} is retired and gets no work", node_id=node_id)


async def selfplay_start(node, args: SelfplayStartRequest, request):
    if args.node_id is None and not node.is_leader:
        return await forward_to_leader(node, request)
    config = _config(args, node.games)
    if args.node_id is not None:
        _workable(node, args.node_id)
    workers = await node.call(node.actors.cluster_store.list.remote(WORKERS))
    target = args.node_id or pick_selfplay_node(node.peers(), {k: v["capacity"] for k, v in workers.items()})
    if target is None:
        raise Unavailable("no alive node can take self-play")
    job_id = args.job_id or f"selfplay-{uuid.uuid4().hex[:12]}"
    epoch = node.election()["epoch"] if node.is_leader else None
    reply = await start_job_on(node, target, job_id, "selfplay", config, epoch)
    await node.refresh()
    return {"status": "success", "job_id": job_id, "node_id": target, **reply}


async def reduce_selfplay(node, args: ReduceSelfplayRequest, request):
    if (args.target_jobs is None) == (args.factor is None):
        raise BadRequest("give exactly one of target_jobs or factor", field="target_jobs")
    chosen = jobs_to_reduce(node.cluster_jobs(), target_jobs=args.target_jobs, factor=args.factor)
    stopped = await asyncio.gather(*(stop_job_on(node, j["node_id"], j["job_id"]) for j in chosen),
                                   return_exceptions=True)
    await node.refresh()
    return {"status": "success", "stopped_count": sum(not isinstance(s, Exception) for s in stopped),
            "stopped": [{"job_id": j["job_id"], "node_id": j["node_id"],
                         "error": str(s) if isinstance(s, Exception) else None} for j, s in zip(chosen, stopped)]}


async def selfplay_worker(node, args: SelfplayWorkerRequest, request):
    _workable(node, args.node_id)
    doc = {"node_id": args.node_id, "capacity": args.capacity, "registered_at": time.time()}
    await node.call(node.actors.election.leader_write.remote(WORKERS, args.node_id, doc))
    workers = await node.call(node.actors.cluster_store.list.remote(WORKERS))
    return {"status": "success", "worker": doc, "workers": sorted(workers.values(), key=lambda w: w["node_id"])}


async def _node_tallies(node, request) -> dict[str, Tally]:
    cache = request.app[ANALYTICS]
    return await asyncio.to_thread(cache.tallies, node.settings.node_dir())


async def _peer_tallies(node, peer) -> dict[str, Tally]:
    headers = {"Authorization": f"Bearer {node.settings.token()}"} if node.settings.token() else {}
    url = f"http://{peer['host']}:{peer['port']}/games/analytics?scope=node&raw=true"
    async with node.http().get(url, headers=headers) as answer:
        answer.raise_for_status()
        body = await answer.json()
    return {board: Tally.from_dict(tally) for board, tally in body["board_types"].items()}


async def games_analytics(node, args: AnalyticsQuery, request):
    totals = await _node_tallies(node, request)
    unreachable = []
    if args.scope == "cluster":
        others = [p for p in node.peers() if p["state"] == "alive" and not p["is_self"]]
        results = await asyncio.gather(*(_peer_tallies(node, p) for p in others), return_exceptions=True)
        for peer, result in zip(others, results):
            if isinstance(result, Exception):
                unreachable.append(peer["node_id"])
                continue
            for board, tally in result.items():
                totals[board] = totals.get(board, Tally()).merge(tally)
    if args.raw:
        return {"node_id": node.node_id, "board_types": {b: t.to_dict() for b, t in totals.items()}}
    now = time.time()
    return {"scope": args.scope, "node_id": node.node_id, "unreachable": unreachable,
            "board_types": {board: tally.finish(now) for board, tally in sorted(totals.items())}}


async def mcts_stats(node, request):
    return {"node_id": node.node_id, "stats": search_stats(node.cluster_jobs())}


ENDPOINTS = [
    Endpoint(("POST",), "/selfplay/start", selfplay_start,
             "Start self-play on node_id, or (leader) on the node the leader picks by load and GPU",
             args=SelfplayStartRequest),
    Endpoint(("POST",), "/reduce_selfplay", reduce_selfplay, "Stop self-play jobs gracefully across the cluster",
             args=ReduceSelfplayRequest, leader_only=True),
    Endpoint(("POST",), "/pipeline/selfplay_worker", selfplay_worker,
             "Register a node as a preferred self-play worker with a capacity", args=SelfplayWorkerRequest,
             leader_only=True),
    Endpoint(("GET",), "/games/analytics", games_analytics,
             "Per board_type: games, games/hour, mean length, seat win rates, terminations", args=AnalyticsQuery),
    Endpoint(("GET",), "/mcts/stats", mcts_stats,
             "Per node and agent: simulations/s, leaves per network call, mean depth, network evals/s, visits carried by tree reuse"),
]
