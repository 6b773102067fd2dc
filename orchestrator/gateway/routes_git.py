"""Git operations (seed section "Git Operations") and the cluster-wide update of the seed's examples.

After an update that moved HEAD, the node restarts itself once the answer is out (see
orchestrator.ops.restart): its gateway drains, its actors stop, the process re-executes from the
new code and its jobs resume. The cluster update goes node by node, the leader last, so the
leader that drives it is the last to go away; it moves on from a node only once that node is back
healthy on its new commit, so a commit whose code cannot start stops at the first node it reaches.
"""
from __future__ import annotations

import asyncio
import time
import weakref
from pathlib import Path
from typing import Any

import aiohttp
from pydantic import Field

from orchestrator.errors import ApiError
from orchestrator.gateway.endpoint import Endpoint
from orchestrator.models import RequestModel
from orchestrator.ops import restart
from orchestrator.ops.git import GitRepo, check_ref
from orchestrator.ops.rollout import not_back_because

REACHABLE_STATES = ("alive", "suspect")
RESTART_DELAY_S = 0.5  # long enough for the answer to leave before the gateway drains
HEALTH_POLL_S = 1.0  # between looks at an updated peer's /health and /git/status
UPDATE_ATTEMPTS = 2  # a peer's update, once more after a transient failure
TRANSIENT_CODES = (503, 504)
CODE_ROOT = Path(__file__).resolve().parents[2]
_repos: "weakref.WeakKeyDictionary[Any, GitRepo]" = weakref.WeakKeyDictionary()


def repo_of(node) -> GitRepo:
    """One GitRepo per gateway, so concurrent updates on a node are refused, not interleaved."""
    repo = _repos.get(node)
    if repo is None:
        s = node.settings
        repo = _repos.setdefault(node, GitRepo(s.git_repo_dir or CODE_ROOT, s.git_remote, s.git_branch, s.git_timeout_s))
    return repo


class GitUpdateRequest(RequestModel):
    ref: str | None = Field(None, min_length=1, max_length=200,
                            description="a plain branch name or a 40-hex commit; default: the configured git_branch")


async def git_status(node, request):
    return {"node_id": node.node_id, **(await asyncio.to_thread(repo_of(node).status)).to_dict()}


async def update_here(node, ref: str | None) -> dict[str, Any]:
    result = await asyncio.to_thread(repo_of(node).update, ref)
    restarting = result["updated"] and restart.available()
    if restarting:
        asyncio.get_running_loop().call_later(RESTART_DELAY_S, restart.request)
    return {"status": "success", "node_id": node.node_id, **result, "restarting": restarting}


async def git_update(node, args: GitUpdateRequest, request):
    return await update_here(node, args.ref)


def _peer_call(node, peer: dict[str, Any], method: str, path: str, timeout_s: float, **kwargs):
    token = node.settings.token()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return node.http().request(method, f"http://{peer['host']}:{peer['port']}{path}", headers=headers,
                               timeout=aiohttp.ClientTimeout(total=timeout_s), **kwargs)


def _update_timeout_s(settings) -> float:
    return settings.git_timeout_s * 3  # a fetch, a merge and their checks


def rollout_bound_s(node) -> float:
    """The longest a cluster update can take, by this node's peer table: each peer's update and its wait
    to be back, in turn, then the leader's own update; a forwarded request waits at least this long,
    since the node's forward_timeout_s can be far less than several nodes' restarts."""
    s = node.settings
    peers = sum(1 for p in node.peers() if p["state"] in REACHABLE_STATES)
    last_look_s = HEALTH_POLL_S + 2 * (s.git_timeout_s + HEALTH_POLL_S)  # the wait's final sleep and two reads
    updates_s = UPDATE_ATTEMPTS * (_update_timeout_s(s) + HEALTH_POLL_S)
    per_peer_s = updates_s + s.git_rollout_health_timeout_s + last_look_s
    return max(s.forward_timeout_s, peers * per_peer_s + _update_timeout_s(s))


async def _update_peer(node, peer: dict[str, Any], ref: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The peer's update answer, and the peer as last read; a transient failure (no address known yet,
    unreachable, or its fetch failing: 503/504) is tried again, as a fast-forward to the same target is
    idempotent; a refusal (dirty tree, bad ref: 4xx) is not."""
    attempts = 0
    while True:
        attempts += 1
        if not _addressed(peer):
            peer = next((p for p in await _fresh_peers(node) if p["node_id"] == peer["node_id"]), peer)
        report = await _update_peer_once(node, peer, ref) if _addressed(peer) else \
            {"node_id": peer["node_id"], "status": "error", "code": 503,
             "error": "no known address yet (its actor has not answered a heartbeat)"}
        if report["status"] == "success" or report.get("code") not in TRANSIENT_CODES or attempts >= UPDATE_ATTEMPTS:
            return {**report, "attempts": attempts}, peer
        await asyncio.sleep(HEALTH_POLL_S)


def _addressed(peer: dict[str, Any]) -> bool:
    return bool(peer.get("host") and peer.get("port"))


async def _fresh_peers(node) -> list[dict[str, Any]]:
    """The PeerActor's table now, not the gateway's cached view: a view taken before a peer's address
    was learned (or kept while refreshes fail on a loaded node) shows that peer without one."""
    return (await node.call(node.actors.peer.snapshot.remote()))["peers"]


async def _update_peer_once(node, peer: dict[str, Any], ref: str | None) -> dict[str, Any]:
    timeout_s = _update_timeout_s(node.settings)
    try:
        async with _peer_call(node, peer, "POST", "/git/update", timeout_s, json={"ref": ref} if ref else {}) as answer:
            body = await answer.json(content_type=None)
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
        return {"node_id": peer["node_id"], "status": "error", "code": 503, "error": f"unreachable: {type(exc).__name__}"}
    if answer.status != 200 or not isinstance(body, dict):
        error = body.get("error") if isinstance(body, dict) else str(body)[:300]
        return {"node_id": peer["node_id"], "status": "error", "code": answer.status, "error": error}
    return {**body, "node_id": peer["node_id"]}


async def _read(node, peer: dict[str, Any], path: str) -> dict[str, Any] | None:
    """A peer's JSON answer, or None while it does not give one (restarting, starting, gone)."""
    try:
        async with _peer_call(node, peer, "GET", path, node.settings.git_timeout_s + HEALTH_POLL_S) as answer:
            body = await answer.json(content_type=None)
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
        return None
    return body if answer.status == 200 and isinstance(body, dict) else None


async def _await_back(node, peer: dict[str, Any], report: dict[str, Any], answered_at: float) -> dict[str, Any]:
    """Poll the updated peer until it is back on its new commit (see orchestrator.ops.rollout), or
    git_rollout_health_timeout_s passes: then the report says it did not come back, and why."""
    timeout_s = node.settings.git_rollout_health_timeout_s
    while True:
        health = await _read(node, peer, "/health")
        status = await _read(node, peer, "/git/status") if health is not None else None
        waited_s = time.monotonic() - answered_at
        reason = not_back_because(health, status, report["current_commit"], bool(report.get("restarting")), waited_s)
        if reason is None:
            return {**report, "healthy_after_s": round(waited_s, 3), "error": None}
        if waited_s >= timeout_s:
            return {**report, "status": "error", "code": 504, "healthy_after_s": None,
                    "error": f"did not come back healthy within {timeout_s:g}s (git_rollout_health_timeout_s): {reason}"}
        await asyncio.sleep(HEALTH_POLL_S)


async def cluster_git_update(node, args: GitUpdateRequest, request):
    """Node by node, the leader last; each updated peer must be back before the next is touched,
    and the first that fails (refused, unreachable, not back in time) stops the rollout there."""
    ref = check_ref(args.ref) if args.ref is not None else None  # a bad ref fails once, before any node moves
    # suspect peers are tried too: a late heartbeat is no reason to leave a node on old code
    others = sorted((p for p in await _fresh_peers(node) if p["state"] in REACHABLE_STATES and not p["is_self"]),
                    key=lambda p: p["node_id"])
    reports: list[dict[str, Any]] = []
    for index, peer in enumerate(others):
        report, peer = await _update_peer(node, peer, ref)
        if report["status"] == "success":
            report = await _await_back(node, peer, report, time.monotonic())
        reports.append(report)
        if report["status"] != "success":
            untouched = [p["node_id"] for p in others[index + 1:]] + [node.node_id]
            return {"status": "stopped", "leader_id": node.node_id, "ref": ref, "stopped_at": peer["node_id"],
                    "untouched": untouched, "updated_count": sum(1 for r in reports if r.get("updated")),
                    "failed_count": 1, "nodes": reports}
    try:  # the leader cannot watch itself come back: it reports what it did and restarts after answering
        reports.append({**await update_here(node, ref), "healthy_after_s": None, "error": None})
    except ApiError as exc:
        reports.append({"node_id": node.node_id, "status": "error", "code": exc.code, "error": exc.message})
    failed = sum(1 for r in reports if r["status"] != "success")
    return {"status": "success" if not failed else "partial", "leader_id": node.node_id, "ref": ref, "stopped_at": None,
            "untouched": [], "updated_count": sum(1 for r in reports if r.get("updated")), "failed_count": failed,
            "nodes": reports}


ENDPOINTS = [
    Endpoint(("GET",), "/git/status", git_status,
             "Branch, commit, dirty, behind/ahead of the deployed checkout (after a bounded fetch)"),
    Endpoint(("POST",), "/git/update", git_update,
             "Fast-forward the checkout to the configured branch, a branch name or a 40-hex commit; then restart",
             args=GitUpdateRequest),
    Endpoint(("POST",), "/api/cluster/git/update", cluster_git_update,
             "Update every alive node's checkout, one by one, the leader last, waiting for each to be back healthy "
             "on the new commit; the first that is not stops the rollout. Reports per node",
             args=GitUpdateRequest, leader_only=True, forward_timeout_s=rollout_bound_s),
]
