"""Connectivity diagnostics (seed section "Connectivity Diagnostics") and the outgoing-call statistics.

`outgoing_trace` is attached to the gateway's one client session, so every call this node makes
to another gateway (leader forwarding, analytics fan-out, cluster git updates, probes) is counted
without touching the call sites.
"""
from __future__ import annotations

import asyncio
import re
import time
import weakref
from types import SimpleNamespace
from typing import Annotated, Any

import aiohttp
from pydantic import Field

from actors.cluster_view import ray_nodes
from orchestrator.errors import BadRequest, NotFound
from orchestrator.gateway.endpoint import Endpoint
from orchestrator.gateway.routes_registry import registry_of
from orchestrator.models import NODE_ID, RequestModel
from orchestrator.ops.connectivity import probe_targets, resolve, tcp_connect, verdict
from orchestrator.ops.transport_stats import TransportStats

PROBE_CONCURRENCY = 32
_stats: "weakref.WeakKeyDictionary[Any, TransportStats]" = weakref.WeakKeyDictionary()


def transport_of(node) -> TransportStats:
    return _stats.setdefault(node, TransportStats())


def _peer_key(url) -> str:
    return f"{url.host}:{url.port}"


def outgoing_trace(node) -> aiohttp.TraceConfig:
    """Client hooks that feed this node's TransportStats (latency: request start to answer headers)."""
    stats = transport_of(node)
    trace = aiohttp.TraceConfig()

    async def started(session, ctx: SimpleNamespace, params) -> None:
        ctx.started = time.perf_counter()

    async def ended(session, ctx: SimpleNamespace, params) -> None:
        status = params.response.status
        stats.record(_peer_key(params.url), time.perf_counter() - ctx.started, time.time(),
                     error=f"HTTP {status}" if status >= 500 else None)

    async def failed(session, ctx: SimpleNamespace, params) -> None:
        stats.record(_peer_key(params.url), None, time.time(), error=type(params.exception).__name__)

    async def sent(session, ctx, params) -> None:
        stats.add_bytes(_peer_key(params.url), sent=len(params.chunk))

    async def received(session, ctx, params) -> None:
        stats.add_bytes(_peer_key(params.url), received=len(params.chunk))

    trace.on_request_start.append(started)
    trace.on_request_end.append(ended)
    trace.on_request_exception.append(failed)
    trace.on_request_chunk_sent.append(sent)
    trace.on_response_chunk_received.append(received)
    return trace


async def health_round_trip(node, host: str, port: int, timeout_s: float) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        async with node.http().get(f"http://{host}:{port}/health",
                                   timeout=aiohttp.ClientTimeout(total=timeout_s)) as answer:
            body = await answer.json(content_type=None)
            return {"ok": answer.status == 200, "http_status": answer.status,
                    "round_trip_ms": round((time.perf_counter() - started) * 1000, 3), "answer": body, "error": None}
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
        return {"ok": False, "http_status": None, "round_trip_ms": None, "answer": None,
                "error": type(exc).__name__ if isinstance(exc, asyncio.TimeoutError) else f"{type(exc).__name__}: {exc}"[:300]}


async def diagnose(node, request):
    node_id = request.match_info["node_id"]
    if not re.fullmatch(NODE_ID, node_id):
        raise BadRequest(f"node_id: not a valid node id: {node_id!r}", field="node_id")
    peer = node.peer(node_id)
    if peer is None:
        raise NotFound(f"unknown node {node_id!r}", node_id=node_id)
    timeout_s = node.settings.probe_timeout_s
    host, port = peer["host"], peer["port"]
    resolved, tcp, health, nodes = await asyncio.gather(
        resolve(host, port, timeout_s), tcp_connect(host, port, timeout_s),
        health_round_trip(node, host, port, timeout_s), asyncio.to_thread(ray_nodes))
    ray_node = next((n for n in nodes if n["NodeID"] == peer.get("ray_node_id")), None)
    ray_view = {"ray_node_id": peer.get("ray_node_id"), "known": ray_node is not None,
                "alive": ray_node["Alive"] if ray_node else None,
                "address": ray_node["NodeManagerAddress"] if ray_node else None,
                "resources": ray_node["Resources"] if ray_node else None}
    return {"node_id": node_id, "from_node_id": node.node_id, "address": {"host": host, "port": port, **resolved},
            "tcp": tcp, "health": health, "ray": ray_view,
            "heartbeat": {"state": peer["state"], "seconds_since_heartbeat": peer["seconds_since_heartbeat"]},
            **verdict(tcp["ok"], health["ok"], ray_view["alive"])}


async def transport_stats(node, request):
    by_address = {f"{p['host']}:{p['port']}": p["node_id"] for p in node.peers()}
    peers = [{"peer": address, "node_id": by_address.get(address), **figures}
             for address, figures in sorted(transport_of(node).snapshot().items())]
    return {"node_id": node.node_id, "peers": peers}


class ProbeVastRequest(RequestModel):
    host_ids: list[Annotated[str, Field(max_length=128)]] | None = Field(None, max_length=1000,
                                       description="only these registry hosts (default: every Vast.ai host)")
    timeout_s: float | None = Field(None, gt=0, le=60, allow_inf_nan=False,
                                    description="per connection; default the node's probe_timeout_s")


async def _probe(node, target, timeout_s: float, limit: asyncio.Semaphore) -> dict[str, Any]:
    async with limit:
        tcp = await tcp_connect(target.address, target.port, timeout_s)
        result = {"host_id": target.host_id, "service": target.service, "address": target.address,
                  "port": target.port, "tcp": tcp}
        if target.service == "gateway" and tcp["ok"]:
            result["health"] = await health_round_trip(node, target.address, target.port, timeout_s)
        return result


async def probe_vast(node, args: ProbeVastRequest, request):
    hosts = registry_of(node).hosts("vast")
    if args.host_ids is not None:
        unknown = sorted(set(args.host_ids) - {h.host_id for h in hosts})
        if unknown:
            raise NotFound(f"not Vast.ai hosts of the registry: {', '.join(unknown[:10])}", host_ids=unknown[:10])
        hosts = tuple(h for h in hosts if h.host_id in set(args.host_ids))
    limit = asyncio.Semaphore(PROBE_CONCURRENCY)
    timeout_s = args.timeout_s or node.settings.probe_timeout_s
    results = await asyncio.gather(*(_probe(node, t, timeout_s, limit) for t in probe_targets(hosts)))
    return {"status": "success", "host_count": len(hosts), "probed": len(results),
            "reachable": sum(1 for r in results if r["tcp"]["ok"]), "results": list(results),
            "unprobed": sorted(h.host_id for h in hosts if not h.address or not h.ports)}


ENDPOINTS = [
    Endpoint(("GET",), "/connectivity/diagnose/{node_id}", diagnose,
             "From this node to a peer: resolved address, TCP connect time, /health round trip, Ray's view, "
             "last heartbeat"),
    Endpoint(("GET",), "/connectivity/transport_stats", transport_stats,
             "Per peer: requests, errors, bytes, p50/p99 latency of this node's outgoing calls"),
    Endpoint(("POST",), "/connectivity/probe_vast", probe_vast,
             "Probe the Vast.ai hosts known to the registry (TCP and /health); never an address from the request",
             args=ProbeVastRequest),
]
