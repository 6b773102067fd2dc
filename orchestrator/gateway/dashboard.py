"""The HTML dashboard: one server-rendered page over the cached status, refreshing itself.

Every value is escaped; the page needs no script and no external asset, so it works on an
air-gapped cluster and behind the same token as every other endpoint.
"""
from __future__ import annotations

import html
from typing import Any

REFRESH_S = 5
STYLE = ("body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse;"
         "margin-bottom:1.5em}th,td{border:1px solid #ccc;padding:4px 8px;text-align:left}th{background:#f3f3f3}"
         ".alive,.healthy,.completed{color:#080}.suspect,.degraded,.stopping,.stopped{color:#a60}"
         ".dead,.critical,.failed,.killed,.retired,.unavailable{color:#b00}.ok{color:#080}")


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return f'<td class="{html.escape(text)}">{html.escape(text)}</td>'


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body or '<tr><td colspan=99>none</td></tr>'}</table>"


def _progress(job: dict[str, Any]) -> str:
    progress = job.get("progress") or {}
    for done, total in (("games_done", "games_total"), ("step", "steps"), ("done", "total")):
        if done in progress and total in progress:
            return f"{progress[done]}/{progress[total]}"
    return ""


def render(status: dict[str, Any], health: dict[str, Any]) -> str:
    """`status` and `health` are the node's /status and /health answers."""
    peers = _table(["node", "state", "host", "port", "since heartbeat (s)", "running jobs", "cpu %", "gpus"], [
        [p["node_id"], p["state"], p["host"], p["port"], p["seconds_since_heartbeat"], len(p["running_jobs"]),
         p["resources"].get("cpu_percent"), p["resources"].get("ray_gpus")] for p in status["peers"]])
    jobs = _table(["job", "type", "node", "state", "stuck", "progress", "attempt"], [
        [j["job_id"], j["job_type"], j["node_id"], j["state"], "stuck" if j["stuck"] else "", _progress(j), j["attempt"]]
        for j in status["jobs"]])
    title = f"P2P orchestrator: {status['node_id']}"
    return (f'<!doctype html><html><head><meta charset="utf-8"><meta http-equiv="refresh" content="{REFRESH_S}">'
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"
            f"<h1>{html.escape(title)}</h1>"
            f"<p>leader: <b>{html.escape(str(status['leader_id']))}</b> (epoch {status.get('epoch', 0)}) &middot; "
            f'cluster health: <b class="{status["cluster_health"]}">{status["cluster_health"]}</b> &middot; '
            f'this node: <b class="{health["status"]}">{health["status"]}</b>'
            f'{"".join(f" &middot; {html.escape(reason)}" for reason in health["reasons"])}</p>'
            f"<h2>Peers</h2>{peers}<h2>Jobs</h2>{jobs}</body></html>")
