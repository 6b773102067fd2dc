"""Data sync (seed sections "Data Sync" and the manifest endpoints).

A sync is a record in the cluster store (kind `syncs`, written by the leader before any target
hears of it) plus, on each target, a job in its SyncActor. Targets report progress through
`POST /sync/job_update`, which the leader stores per (sync, node) in kind `sync_progress`;
`GET /sync/status` is computed from those records, so any node can answer it and a new leader
finds every sync where the old one left it.
"""
from __future__ import annotations

import asyncio
import os
import time
import uuid
from typing import Annotated, Any, Literal
from urllib.parse import quote

from aiohttp import web
from pydantic import Field

from actors.naming import lookup, root_cause, sync_name
from actors.sync_leader import SYNCS
from orchestrator.errors import Conflict, NotFound, Unavailable
from orchestrator.gateway.endpoint import Endpoint
from orchestrator.gateway.routes_training import training_node
from orchestrator.models import JOB_ID, NODE_ID, RequestModel
from orchestrator.sync.manifest import FileEntry, check_pattern, select
from orchestrator.sync.plan import PRIORITY_DEFAULT, merge_manifests
from orchestrator.sync.transfer import RangeNotSatisfiable, parse_range

PROGRESS = "sync_progress"
MAX_COUNT = 2**63 - 1


class ManifestQuery(RequestModel):
    kind: Literal["selfplay", "model", "training"] | None = None
    board_type: str | None = Field(None, max_length=256)


class PullRequest(RequestModel):
    patterns: list[str] = Field(min_length=1, max_length=256,
                                description="globs relative to the data dir; ** spans dirs")
    since_timestamp: float | None = Field(None, ge=0, allow_inf_nan=False,
                                          description="only files modified after this (unix seconds)")


class FileQuery(RequestModel):
    path: str = Field(min_length=1, max_length=4096, description="relative to the data directory")


class SyncStartRequest(RequestModel):
    patterns: list[str] = Field(min_length=1, max_length=256)
    since_timestamp: float | None = Field(None, ge=0, allow_inf_nan=False)
    source_node: str | None = Field(None, pattern=NODE_ID, description="copy this node's versions; default: newest")
    target_nodes: list[Annotated[str, Field(pattern=NODE_ID)]] | None = Field(None, max_length=1024,
                                                                             description="default: every alive node")
    sync_id: str | None = Field(None, pattern=JOB_ID, description="idempotency key: the same id twice is one sync")


class SyncTrainingRequest(RequestModel):
    board_type: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    node_id: str | None = Field(None, pattern=NODE_ID, description="the training node; default: the one training picks")
    sync_id: str | None = Field(None, pattern=JOB_ID)


class ModelPushRequest(RequestModel):
    model_id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$")


class SyncStatusQuery(RequestModel):
    sync_id: str | None = Field(None, pattern=JOB_ID)


class JobUpdateRequest(RequestModel):
    sync_id: str = Field(pattern=JOB_ID)
    node_id: str = Field(pattern=NODE_ID)
    files_done: int = Field(ge=0, le=MAX_COUNT)
    bytes_done: int = Field(ge=0, le=MAX_COUNT)
    files_total: int | None = Field(None, ge=0, le=MAX_COUNT)
    bytes_total: int | None = Field(None, ge=0, le=MAX_COUNT)
    bytes_resumed: int = Field(0, ge=0, le=MAX_COUNT, description="bytes not fetched again: resumed partials")
    clean_retries: int = Field(0, ge=0, le=MAX_COUNT, description="files refetched after a sha256 mismatch")
    errors: list[dict[str, Any] | str] = Field(default_factory=list, max_length=10_000)
    done: bool = False


# --- this node's data -------------------------------------------------------------------------
async def data_manifest(node, args: ManifestQuery, request):
    manifest = await node.call(node.actors.sync.manifest.remote(False))
    return _filtered(manifest, args)


async def refresh_manifest(node, args: ManifestQuery, request):
    manifest = await node.call(node.actors.sync.manifest.remote(True))
    return {"status": "success", **_filtered(manifest, args)}


def _filtered(manifest: dict[str, Any], args: ManifestQuery) -> dict[str, Any]:
    files = [f for f in manifest["files"]
             if args.kind in (None, f["kind"]) and args.board_type in (None, f["board_type"])]
    return {**manifest, "files": files, "file_count": len(files), "total_bytes": sum(f["size"] for f in files)}


def _base_url(node, node_id: str) -> str | None:
    peer = node.peer(node_id)
    if peer is None or not peer["host"] or not peer["port"]:
        return None
    return f"http://{peer['host']}:{peer['port']}"


async def sync_pull(node, args: PullRequest, request):
    patterns = [check_pattern(p) for p in args.patterns]
    manifest = await node.call(node.actors.sync.manifest.remote(True))
    chosen = select((FileEntry.from_dict(f) for f in manifest["files"]), patterns, args.since_timestamp)
    base = _base_url(node, node.node_id) or f"http://{request.host}"
    files = [{"path": e.path, "size": e.size, "mtime": e.mtime, "sha256": e.sha256, "kind": e.kind,
              "board_type": e.board_type, "url": f"{base}/sync/file?path={quote(e.path)}"} for e in chosen]
    return {"status": "success", "node_id": node.node_id, "count": len(files),
            "total_bytes": sum(f["size"] for f in files), "files": files}


async def sync_file(node, args: FileQuery, request):
    info = await node.call(node.actors.sync.file_info.remote(args.path))
    return await _send_file(request, info)


async def _send_file(request: web.Request, info: dict[str, Any]) -> web.StreamResponse:
    """Stream one file with Content-Length, ETag = its sha256 and a single Range; the open file is
    checked against the digest's size and mtime, so the bytes sent are the ones the ETag names."""
    size, etag = info["size"], f'"{info["sha256"]}"'
    if_range = request.headers.get("If-Range")
    try:
        span = parse_range(request.headers.get("Range"), size) if if_range in (None, etag) else None
    except RangeNotSatisfiable as exc:
        return web.json_response({"status": "error", "error": str(exc), "code": 416}, status=416,
                                 headers={"Content-Range": f"bytes */{size}"})
    start, end = span or (0, size)
    handle = open(os.open(info["abs_path"], os.O_RDONLY | os.O_NOFOLLOW), "rb")
    try:
        stat = os.fstat(handle.fileno())
        if (stat.st_size, stat.st_mtime_ns) != (size, info["mtime_ns"]):
            raise Conflict(f"{info['path']} changed while being served; retry", path=info["path"])
        response = web.StreamResponse(status=206 if span else 200, headers={
            "ETag": etag, "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"})
        if span:
            response.headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        response.content_length = end - start
        await response.prepare(request)
        if end > start:
            await asyncio.get_running_loop().sendfile(request.transport, handle, start, end - start)
        await response.write_eof()
        return response
    finally:
        handle.close()


# --- the cluster's data -----------------------------------------------------------------------
def _alive(node) -> list[str]:
    return [p["node_id"] for p in node.peers() if p["state"] == "alive"]


async def _manifests(node, node_ids: list[str]) -> tuple[dict[str, dict[str, FileEntry]], dict[str, str]]:
    async def one(node_id: str):
        actor = node.actors.sync if node_id == node.node_id else lookup(sync_name(node_id))
        manifest = await node.call(actor.manifest.remote(True))
        return {f["path"]: FileEntry.from_dict(f) for f in manifest["files"]}
    answers = await asyncio.gather(*(one(n) for n in node_ids), return_exceptions=True)
    manifests = {n: a for n, a in zip(node_ids, answers) if not isinstance(a, BaseException)}
    errors = {n: f"{type(root_cause(a)).__name__}: {root_cause(a)}" for n, a in zip(node_ids, answers)
              if isinstance(a, BaseException)}
    return manifests, errors


async def cluster_data_manifest(node, args: ManifestQuery, request):
    manifests, errors = await _manifests(node, _alive(node))
    merged = [row for row in merge_manifests(manifests).values()
              if args.kind in (None, row["kind"]) and args.board_type in (None, row["board_type"])]
    return {"nodes": sorted(manifests), "unreachable": errors, "file_count": len(merged),
            "differing": sum(row["differs"] for row in merged), "files": merged}


async def _start(node, request_doc: dict[str, Any], sync_id: str | None, priority: int) -> dict[str, Any]:
    """Plan from fresh manifests, record the sync, then hand each target its transfers (the
    leader's SyncActor does it: the same path a training run's start takes)."""
    started = await node.call(node.actors.sync.start_planned.remote(
        request_doc, sync_id or f"sync-{uuid.uuid4().hex[:12]}", priority))
    return _started(started["record"], started["created"])


def _started(record: dict[str, Any], created: bool) -> dict[str, Any]:
    return {"status": "success", "created": created, "sync_id": record["sync_id"],
            "files_total": record["files_total"], "bytes_total": record["bytes_total"],
            "skipped": record["skipped"], "targets": record["targets"]}


def _request_doc(patterns, since, source, targets) -> dict[str, Any]:
    return {"patterns": list(patterns), "since_timestamp": since, "source_node": source,
            "target_nodes": sorted(set(targets)) if targets is not None else None}


async def sync_start(node, args: SyncStartRequest, request):
    for pattern in args.patterns:
        check_pattern(pattern)
    doc = _request_doc(args.patterns, args.since_timestamp, args.source_node, args.target_nodes)
    return await _start(node, doc, args.sync_id, PRIORITY_DEFAULT)


async def sync_training(node, args: SyncTrainingRequest, request):
    target = training_node(node, args.node_id, "training")
    started = await node.call(node.actors.sync.sync_training.remote(
        args.board_type, target, args.sync_id or f"sync-{uuid.uuid4().hex[:12]}"))
    return {**_started(started["record"], started["created"]), "node_id": target, "board_type": args.board_type}


async def sync_model(node, args: ModelPushRequest, request):
    nodes = await node.call(node.actors.sync.push_model.remote(args.model_id))
    failed = sorted(n for n, answer in nodes.items() if "error" in answer)
    return {"status": "success" if not failed else "partial", "model_id": args.model_id, "failed": failed,
            "nodes": nodes}


async def job_update(node, args: JobUpdateRequest, request):
    if await node.call(node.actors.cluster_store.read.remote(SYNCS, args.sync_id)) is None:
        raise NotFound(f"unknown sync {args.sync_id!r}", sync_id=args.sync_id)
    doc = {**args.model_dump(), "updated_at": time.time()}
    await node.call(node.actors.election.leader_write.remote(PROGRESS, f"{args.sync_id}:{args.node_id}", doc))
    return {"status": "success", "sync_id": args.sync_id, "node_id": args.node_id}


async def sync_status(node, args: SyncStatusQuery, request):
    syncs, progress = await asyncio.gather(node.call(node.actors.cluster_store.list.remote(SYNCS)),
                                           node.call(node.actors.cluster_store.list.remote(PROGRESS)))
    if args.sync_id is not None:
        if args.sync_id not in syncs:
            raise NotFound(f"unknown sync {args.sync_id!r}", sync_id=args.sync_id)
        return {"status": "success", "sync": _sync_view(syncs[args.sync_id], progress, time.time())}
    views = sorted((_sync_view(s, progress, time.time()) for s in syncs.values()), key=lambda v: -v["created_at"])
    return {"status": "success", "count": len(views), "syncs": views}


def _sync_view(record: dict[str, Any], progress: dict[str, dict], now: float) -> dict[str, Any]:
    nodes = {}
    for target, totals in record["targets"].items():
        report = progress.get(f"{record['sync_id']}:{target}") or {}
        nodes[target] = {**totals, "files_done": report.get("files_done", 0), "bytes_done": report.get("bytes_done", 0),
                         "bytes_resumed": report.get("bytes_resumed", 0),
                         "clean_retries": report.get("clean_retries", 0),
                         "errors": report.get("errors", []), "done": report.get("done", False),
                         "updated_at": report.get("updated_at")}
    bytes_done = sum(n["bytes_done"] for n in nodes.values())
    done = all(n["done"] for n in nodes.values())
    last = max([n["updated_at"] for n in nodes.values() if n["updated_at"]] or [now])
    elapsed = max((last if done else now) - record["created_at"], 1e-9)
    rate = bytes_done / elapsed
    remaining = record["bytes_total"] - bytes_done
    return {"sync_id": record["sync_id"], "request": record["request"], "created_at": record["created_at"],
            "state": ("failed" if any(n["errors"] for n in nodes.values()) else "done") if done else "running",
            "files_total": record["files_total"], "files_done": sum(n["files_done"] for n in nodes.values()),
            "bytes_total": record["bytes_total"], "bytes_done": bytes_done, "skipped": record["skipped"],
            "rate_bytes_per_s": round(rate, 1),
            "eta_s": 0.0 if done else (round(remaining / rate, 1) if rate else None),
            "errors": [{"node_id": n, **(e if isinstance(e, dict) else {"error": e})}
                       for n, v in nodes.items() for e in v["errors"]],
            "nodes": nodes, "unreachable": record["unreachable"]}


ENDPOINTS = [
    Endpoint(("GET",), "/data_manifest", data_manifest, "This node's synced files: path, size, mtime, sha256, kind, "
             "board_type (?kind=, ?board_type=)", args=ManifestQuery),
    Endpoint(("POST",), "/refresh_manifest", refresh_manifest, "Rescan the data directory now (rehashes only "
             "changed files)", args=ManifestQuery),
    Endpoint(("GET",), "/cluster_data_manifest", cluster_data_manifest, "Every alive node's files merged: who holds "
             "which version, and where copies differ", args=ManifestQuery, leader_only=True),
    Endpoint(("POST",), "/sync/pull", sync_pull, "Files of this node matching patterns and newer than "
             "since_timestamp, with size, sha256 and URL", args=PullRequest),
    Endpoint(("GET",), "/sync/file", sync_file, "One file (?path= relative to the data dir); ETag = sha256, "
             "HTTP Range supported", args=FileQuery),
    Endpoint(("POST",), "/sync/start", sync_start, "Plan transfers from the manifests (only missing or differing "
             "copies) and start them on the targets; returns a sync id", args=SyncStartRequest, leader_only=True),
    Endpoint(("POST",), "/sync/model", sync_model, "Push a registered model's file to every alive node now, ahead "
             "of other transfers (each copy verified against the registry's sha256)", args=ModelPushRequest,
             leader_only=True),
    Endpoint(("GET",), "/sync/status", sync_status, "Syncs with files and bytes done/total, rate, ETA and errors "
             "(?sync_id=)", args=SyncStatusQuery),
    Endpoint(("POST",), "/sync/job_update", job_update, "A target node reports a sync's progress",
             args=JobUpdateRequest, leader_only=True),
    Endpoint(("POST",), "/sync/training", sync_training, "Move a board's self-play data to the training node ahead "
             "of other transfers", args=SyncTrainingRequest, leader_only=True),
]
