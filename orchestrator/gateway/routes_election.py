"""Election & leadership (seed section "Election & Leadership"): Bully, voter leases, coordinator."""
from __future__ import annotations

from orchestrator.gateway.endpoint import Endpoint
from orchestrator.gateway.middleware import error_response
from orchestrator.models import (CoordinatorRequest, ElectionAnswer, ElectionRequest, ElectionStatus, GrantStatus,
                                 LeaseGranted, LeaseRequestBody)


async def _ask(node, kind: str, payload: dict):
    reply = await node.call(node.actors.election.on_request.remote(kind, payload))
    await node.refresh()
    return reply


async def election(node, args: ElectionRequest, request):
    return await _ask(node, "election", args.model_dump())


async def lease(node, args: LeaseRequestBody, request):
    reply = await _ask(node, "lease", args.model_dump())
    if reply["granted"]:
        return reply
    holder = reply.get("holder")
    why = f"lease held by {holder} for {reply['remaining_s']:.3f}s" if holder else f"lease refused: {reply['reason']}"
    return error_response(409, why, **reply)


async def grant(node, request):
    return await node.call(node.actors.election.on_request.remote("grant", {}))


async def coordinator(node, args: CoordinatorRequest, request):
    reply = await _ask(node, "coordinator", args.model_dump())
    if reply["accepted"]:
        return {"status": "success", **reply}
    why = {"stale_epoch": f"stale epoch {args.epoch}: this node follows epoch {reply['epoch']}",
           "unknown_leader": f"{args.leader_id} is neither a voter nor a known peer",
           "unregistered_epoch": f"the cluster store has not registered epoch {args.epoch} for {args.leader_id}"}
    return error_response(409, why[reply["reason"]], **reply)


async def election_status(node, request):
    return await node.call(node.actors.election.status.remote())


ENDPOINTS = [
    Endpoint(("POST",), "/election", election, "Bully: a candidate asks; a higher node answers ALIVE",
             args=ElectionRequest, response=ElectionAnswer),
    Endpoint(("POST",), "/election/lease", lease, "Ask this voter for a leader lease (409 when held)",
             args=LeaseRequestBody, response=LeaseGranted),
    Endpoint(("GET",), "/election/grant", grant, "This voter's current grant", response=GrantStatus),
    Endpoint(("POST",), "/coordinator", coordinator, "A leader announces itself (409: stale epoch, unknown "
             "leader, or an epoch the cluster store did not register for it)",
             args=CoordinatorRequest),
    Endpoint(("GET",), "/election/status", election_status, "This node's role, epoch, voters and quorum",
             response=ElectionStatus),
]
