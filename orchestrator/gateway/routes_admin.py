"""Admin and registry endpoints (seed sections "Admin Endpoints", "Registry Management", heartbeat)."""
from __future__ import annotations

from orchestrator.gateway.endpoint import Endpoint
from orchestrator.models import (ActionResponse, HeartbeatRequest, NodeIdRequest, PurgeResponse, PurgeStaleQuery,
                                 RegisterRequest, VotersChangeRequest, VotersResponse)

HOURS_S = 3600.0


async def unretire(node, args: NodeIdRequest, request):
    peer = await node.call(node.actors.peer.unretire.remote(args.node_id))
    await node.refresh()
    return {"status": "success", "message": f"Node '{args.node_id}' has been unretired", "node_id": args.node_id,
            "peer": peer}


async def purge_retired(node, request):
    purged = await node.call(node.actors.peer.purge_retired.remote())
    await node.refresh()
    return {"status": "success", "purged_count": len(purged), "purged_nodes": purged}


async def purge_stale(node, args: PurgeStaleQuery, request):
    purged = await node.call(node.actors.peer.purge_stale.remote(args.max_age_hours * HOURS_S))
    await node.refresh()
    return {"status": "success", "purged_count": len(purged), "purged_nodes": purged}


async def _http_heartbeat(node, args: HeartbeatRequest, request, register: bool) -> dict:
    reply = await node.call(node.actors.peer.http_heartbeat.remote(args.model_dump(), request.remote, register))
    return {"status": "success", "node_id": node.node_id, "leader_id": node.leader_id, "peer": reply["peer"]}


async def heartbeat(node, args: HeartbeatRequest, request):
    return await _http_heartbeat(node, args, request, register=False)


async def register(node, args: RegisterRequest, request):
    reply = await _http_heartbeat(node, args, request, register=True)
    await node.refresh()
    return {**reply, "peers": node.peers()}


async def voters(node, args: VotersChangeRequest, request):
    changed = await node.call(node.actors.election.change_voters.remote(args.add, args.remove))
    await node.refresh()
    return {"status": "success", **changed}


ENDPOINTS = [
    Endpoint(("POST",), "/admin/unretire", unretire, "Unretire a retired peer (body or ?node_id=)",
             args=NodeIdRequest, response=ActionResponse),
    Endpoint(("GET", "POST"), "/admin/purge_retired", purge_retired, "Remove every retired peer",
             response=PurgeResponse),
    Endpoint(("GET", "POST"), "/admin/purge_stale", purge_stale, "Remove peers silent for max_age_hours",
             args=PurgeStaleQuery, response=PurgeResponse),
    Endpoint(("POST",), "/heartbeat", heartbeat, "Heartbeat from a non-Ray peer (keeps it alive; never moves "
             "a known address)", args=HeartbeatRequest),
    Endpoint(("POST",), "/register", register, "Register a non-Ray peer at the address the request comes from; "
             "answers with the known peers", args=RegisterRequest),
    Endpoint(("POST",), "/admin/voters", voters, "Add or remove voters of a cluster whose voters were recorded at "
             "formation (the leader steps down, then records the change)", args=VotersChangeRequest,
             response=VotersResponse, leader_only=True),
]
