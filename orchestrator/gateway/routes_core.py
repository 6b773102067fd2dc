"""Health & status (seed section "Health & Status"), the root, the nodes table and /openapi.json."""
from __future__ import annotations

from aiohttp import web

from orchestrator import __version__
from orchestrator.gateway.dashboard import render
from orchestrator.gateway.endpoint import Endpoint
from orchestrator.gateway.keys import OPENAPI
from orchestrator.models import HealthResponse, NodesTableQuery, NodesTableResponse, RootResponse, StatusResponse

TABLE_COLUMNS = ("node_id", "state", "host", "port", "seconds_since_heartbeat", "running_jobs", "cpu_percent", "gpus")


async def root(node, request):
    links = {name: f"/{name}" for name in ("health", "status", "dashboard", "nodes/table")}
    links["openapi"] = "/openapi.json"
    return {"name": "p2p-orchestrator", "version": __version__, "node_id": node.node_id, "links": links}


async def health(node, request):
    return node.health()


async def status(node, request):
    return node.status()


def _table_rows(peers: list[dict]) -> list[dict]:
    return [{
        "node_id": p["node_id"], "state": p["state"], "host": p["host"], "port": p["port"],
        "seconds_since_heartbeat": p["seconds_since_heartbeat"], "running_jobs": len(p["running_jobs"]),
        "cpu_percent": p["resources"].get("cpu_percent"), "gpus": p["resources"].get("ray_gpus"),
    } for p in peers]


def render_text_table(rows: list[dict]) -> str:
    cells = [list(TABLE_COLUMNS)] + [["" if r[c] is None else str(r[c]) for c in TABLE_COLUMNS] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(TABLE_COLUMNS))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells) + "\n"


async def nodes_table(node, args: NodesTableQuery, request):
    rows = _table_rows(node.peers())
    if args.format == "text":
        return web.Response(text=render_text_table(rows), content_type="text/plain")
    return {"nodes": rows}


async def dashboard(node, request):
    return web.Response(text=render(node.status(), node.health()), content_type="text/html")


async def openapi(node, request):
    return request.app[OPENAPI]


ENDPOINTS = [
    Endpoint(("GET",), "/", root, "Basic orchestrator info and links", response=RootResponse),
    Endpoint(("GET",), "/health", health, "Liveness, from the cached view (no token needed)",
             response=HealthResponse, public=True),
    Endpoint(("GET",), "/status", status, "Cluster status: leader, peers, jobs, health", response=StatusResponse),
    Endpoint(("GET",), "/nodes/table", nodes_table, "Cluster nodes as JSON rows, or ?format=text",
             args=NodesTableQuery, response=NodesTableResponse),
    Endpoint(("GET",), "/dashboard", dashboard, "HTML dashboard: leader, health, peers and jobs"),
    Endpoint(("GET",), "/openapi.json", openapi, "This API's OpenAPI document"),
]
