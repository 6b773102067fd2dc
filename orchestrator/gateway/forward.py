"""Forwarding leader-only calls: a follower relays the request to the leader and relays the answer.

The answer carries `X-P2P-Leader` naming the leader. With no leader known the answer is 503 with
`leader_id: null`. A request that was already forwarded once is never forwarded again (the
leader changed under it), so two nodes can never bounce a request between them.
"""
from __future__ import annotations

import aiohttp
from aiohttp import web

from orchestrator.errors import Unavailable

LEADER_HEADER = "X-P2P-Leader"
FORWARDED_HEADER = "X-P2P-Forwarded-By"
PASSED_HEADERS = ("Authorization", "Content-Type", "Accept")


async def forward_to_leader(node, request: web.Request, timeout_s: float | None = None) -> web.StreamResponse:
    leader = node.leader_id
    if leader is None:
        raise Unavailable("no leader known; retry when one is elected", leader_id=None)
    # Only ever to the address the peer table holds for the leader (which heartbeats cannot move,
    # see membership.py): the bearer token travels with the request.
    peer = node.peer(leader)
    if peer is None or peer["is_self"] or peer["state"] == "retired" or not peer["host"] or not peer["port"]:
        raise Unavailable(f"leader {leader} has no known address", leader_id=leader)
    if FORWARDED_HEADER in request.headers:
        raise Unavailable(f"forwarded by {request.headers[FORWARDED_HEADER]} but this node is not the leader",
                          leader_id=leader)
    headers = {name: request.headers[name] for name in PASSED_HEADERS if name in request.headers}
    headers[FORWARDED_HEADER] = node.node_id
    url = f"http://{peer['host']}:{peer['port']}{request.path_qs}"
    try:
        timeout = aiohttp.ClientTimeout(total=timeout_s or node.settings.forward_timeout_s)
        async with node.http().request(request.method, url, data=await request.read(), headers=headers,
                                       timeout=timeout) as answer:
            body = await answer.read()
            return web.Response(body=body, status=answer.status, content_type=answer.content_type,
                                headers={LEADER_HEADER: leader})
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise Unavailable(f"leader {leader} unreachable: {type(exc).__name__}", leader_id=leader) from None
