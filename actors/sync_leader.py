"""The leader's side of a planned sync, run inside the leader's SyncActor: plan from every alive
node's fresh manifest, record the sync in the cluster store (kind `syncs`, fenced by the leader's
epoch, before any target hears of it), then hand each target its transfers. `POST /sync/start`,
`POST /sync/training` and the start of a training run all come through here, so a training run's
window moves exactly as `/sync/training` moves it; the training start then waits for its target.
"""
from __future__ import annotations

import asyncio
import time
from typing import Any

from actors.naming import CLUSTER_STORE, election_name, lookup, peer_name, root_cause, sync_name
from orchestrator.errors import Conflict, NotFound, Unavailable
from orchestrator.sync.manifest import FileEntry
from orchestrator.sync.plan import plan_transfers

SYNCS = "syncs"
PEER_CALL_TIMEOUT_S = 60.0  # one node's manifest (a rescan rehashes only changed files) or one hand-over
POLL_S = 0.5  # how often a waiting training start asks its target how far the copy is


class SyncTimedOut(Unavailable):
    """A training run's window did not reach its node in time; the copy goes on there."""

    code = 504


def _url(peer: dict[str, Any]) -> str | None:
    return f"http://{peer['host']}:{peer['port']}" if peer.get("host") and peer.get("port") else None


async def _peers(node_id: str) -> dict[str, dict[str, Any]]:
    snapshot = await asyncio.wait_for(lookup(peer_name(node_id)).snapshot.remote(), PEER_CALL_TIMEOUT_S)
    return {p["node_id"]: p for p in snapshot["peers"]}


def _sync_actor(own, node_id: str) -> Any:
    try:
        return None if node_id == own.node_id else lookup(sync_name(node_id))
    except ValueError:
        raise Unavailable(f"node {node_id!r} has no sync actor", node_id=node_id) from None


async def _manifest(own, node_id: str) -> dict[str, FileEntry]:
    actor = _sync_actor(own, node_id)
    manifest = await (own.manifest(True) if actor is None
                      else asyncio.wait_for(actor.manifest.remote(True), PEER_CALL_TIMEOUT_S))
    return {f["path"]: FileEntry.from_dict(f) for f in manifest["files"]}


async def _manifests(own, node_ids: list[str]) -> tuple[dict[str, dict[str, FileEntry]], dict[str, str]]:
    answers = await asyncio.gather(*(_manifest(own, n) for n in node_ids), return_exceptions=True)
    manifests = {n: a for n, a in zip(node_ids, answers) if not isinstance(a, BaseException)}
    errors = {n: f"{type(root_cause(a)).__name__}: {root_cause(a)}" for n, a in zip(node_ids, answers)
              if isinstance(a, BaseException)}
    return manifests, errors


def _check_nodes(peers: dict[str, dict[str, Any]], names: list[str]) -> None:
    for name in names:
        if name not in peers:
            raise NotFound(f"unknown node {name!r}", node_id=name)
        if peers[name]["state"] != "alive":
            raise Conflict(f"node {name!r} is {peers[name]['state']}", node_id=name)


async def start_planned(own, request_doc: dict[str, Any], sync_id: str, priority: int) -> dict[str, Any]:
    """Plan, record and hand over one sync (idempotent per sync_id). Returns the record and whether
    this call created it."""
    existing = await asyncio.wait_for(lookup(CLUSTER_STORE).read.remote(SYNCS, sync_id), PEER_CALL_TIMEOUT_S)
    if existing is not None:
        if existing["request"] != request_doc:
            raise Conflict(f"sync {sync_id!r} exists with a different body", sync_id=sync_id)
        return {"record": existing, "created": False}
    election = lookup(election_name(own.node_id))
    status = await asyncio.wait_for(election.status.remote(), PEER_CALL_TIMEOUT_S)
    if not status["is_leader"]:
        raise Conflict(f"{own.node_id} is not the leader", leader_id=status["leader_id"], epoch=status["epoch"])
    epoch = status["epoch"]
    peers = await _peers(own.node_id)
    source, targets = request_doc["source_node"], request_doc["target_nodes"]
    named = ([source] if source else []) + (targets or [])
    _check_nodes(peers, named)
    manifests, unreachable = await _manifests(own, [n for n, p in peers.items() if p["state"] == "alive"])
    for name in named:
        if name not in manifests:
            raise Unavailable(f"node {name!r} did not give its manifest: {unreachable.get(name)}", node_id=name)
    plan = plan_transfers(manifests, request_doc["patterns"], request_doc["since_timestamp"], source_node=source,
                          target_nodes=targets, priority=priority)
    by_target = plan.by_target()
    sources = {n: _url(peers[n]) for n in {t.source_node for t in plan.transfers}}

    async def check_space(target: str, incoming: int) -> None:
        actor = _sync_actor(own, target)
        await (own.check_space(incoming) if actor is None
               else asyncio.wait_for(actor.check_space.remote(incoming), PEER_CALL_TIMEOUT_S))
    await asyncio.gather(*(check_space(t, sum(x.size for x in transfers))
                           for t, transfers in by_target.items()))  # 507 before anything is recorded
    record = {"sync_id": sync_id, "request": request_doc, "priority": priority, "created_at": time.time(),
              "leader_id": own.node_id, "epoch": epoch, "skipped": plan.skipped, "unreachable": unreachable,
              "targets": {t: {"files_total": len(x), "bytes_total": sum(y.size for y in x)}
                          for t, x in by_target.items()},
              "files_total": len(plan.transfers), "bytes_total": plan.bytes_total()}
    await asyncio.wait_for(election.leader_write.remote(SYNCS, sync_id, record),
                           PEER_CALL_TIMEOUT_S)  # refused unless we lead

    async def hand_over(target: str, transfers) -> None:
        await asyncio.wait_for(lookup(election_name(target)).check_command_epoch.remote(epoch),
                               PEER_CALL_TIMEOUT_S)  # a stale leader is refused
        docs = [t.to_dict() for t in transfers]
        actor = _sync_actor(own, target)
        await (own.start_sync(sync_id, docs, sources) if actor is None
               else asyncio.wait_for(actor.start_sync.remote(sync_id, docs, sources), PEER_CALL_TIMEOUT_S))
    await asyncio.gather(*(hand_over(target, transfers) for target, transfers in by_target.items()))
    return {"record": record, "created": True}


async def wait_for_target(own, record: dict[str, Any], target: str, timeout_s: float) -> dict[str, Any]:
    """Until `target` holds every file of the sync: its job's view (files, bytes, errors). A file
    that failed raises Unavailable naming it; not done within `timeout_s`, SyncTimedOut."""
    sync_id = record["sync_id"]
    if not record["targets"].get(target, {}).get("files_total"):
        return {"sync_id": sync_id, "node_id": target, "files_total": 0, "files_done": 0, "bytes_total": 0,
                "bytes_done": 0, "errors": [], "done": True}
    actor = _sync_actor(own, target)
    deadline = time.monotonic() + timeout_s
    while True:
        view = await (own.status(sync_id) if actor is None
                      else asyncio.wait_for(actor.status.remote(sync_id), PEER_CALL_TIMEOUT_S))
        if view["done"]:
            break
        if time.monotonic() >= deadline:
            raise SyncTimedOut(f"sync {sync_id}: {view['files_done']} of {view['files_total']} files reached "
                               f"{target} in {timeout_s:.0f}s; the copy goes on there", sync_id=sync_id,
                               node_id=target)
        await asyncio.sleep(POLL_S)
    if view["errors"]:
        first = view["errors"][0]
        raise Unavailable(f"sync {sync_id}: {len(view['errors'])} of {view['files_total']} files did not reach "
                          f"{target}; first: {first['path']} from {first['source_node']}: {first['error']}",
                          sync_id=sync_id, node_id=target)
    return view
