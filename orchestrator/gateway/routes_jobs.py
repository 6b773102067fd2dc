"""Job management (seed section "Job Management"): start, stop, kill, status, history, restart stuck, cleanup."""
from __future__ import annotations

import asyncio
import time
import uuid

from actors.naming import jobs_name, lookup, root_cause
from orchestrator.errors import NotFound
from orchestrator.gateway.endpoint import Endpoint
from orchestrator.models import (CleanupRequest, CleanupResponse, JobIdRequest, JobResponse, JobsListResponse,
                                 JobsPageResponse, JobsQuery, StartJobRequest)
from orchestrator.sync.cleanup import CleanupPolicy, cleanup


async def start_job(node, args: StartJobRequest, request):
    job_id = args.job_id or f"{args.job_type}-{uuid.uuid4().hex[:12]}"
    if args.epoch is not None:  # sent by a leader: refuse it if a newer leadership exists
        await node.call(node.actors.election.check_command_epoch.remote(args.epoch))
    reply = await node.call(node.actors.jobs.start.remote(job_id, args.job_type, args.config))
    await node.refresh()
    return {"status": "success", "job_id": job_id, **reply}


def _supervisor(node, node_id: str):
    if node_id == node.node_id:
        return node.actors.jobs
    try:
        return lookup(jobs_name(node_id))
    except ValueError:
        raise NotFound(f"node {node_id!r} has no job supervisor running", node_id=node_id) from None


async def _knows(node, node_id: str, job_id: str) -> bool:
    try:
        await node.call(_supervisor(node, node_id).get.remote(job_id))
    except Exception:  # noqa: BLE001 - a peer that does not know the job, or cannot answer, is not its owner
        return False
    return True


async def _on_owner(node, job_id: str, method: str):
    """Call `method` on the supervisor that owns the job: this node's, else the peer whose heartbeat
    carries it, else (a finished job is in heartbeats only while it is recent) the first peer that knows it."""
    try:
        return await node.call(getattr(node.actors.jobs, method).remote(job_id))
    except Exception as exc:
        if not isinstance(root_cause(exc), NotFound):
            raise
    heard = next((j["node_id"] for j in node.cluster_jobs() if j["job_id"] == job_id and j["node_id"] != node.node_id),
                 None)
    others = [heard] if heard else [p["node_id"] for p in node.peers() if not p["is_self"] and p["state"] != "retired"]
    known = await asyncio.gather(*(_knows(node, other, job_id) for other in others))
    owner = next((other for other, yes in zip(others, known) if yes), None)
    if owner is None:
        raise NotFound(f"unknown job {job_id!r}", job_id=job_id)
    return await node.call(getattr(_supervisor(node, owner), method).remote(job_id))


async def stop_job(node, args: JobIdRequest, request):
    job = await _on_owner(node, args.job_id, "stop")
    await node.refresh()
    return {"status": "success", "job_id": args.job_id, "job": job}


async def kill_job(node, args: JobIdRequest, request):
    job = await _on_owner(node, args.job_id, "kill")
    await node.refresh()
    return {"status": "success", "job_id": args.job_id, "job": job}


async def job_status(node, args: JobIdRequest, request):
    job = await _on_owner(node, args.job_id, "get")
    return {"status": "success", "job_id": args.job_id, "job": job}


async def list_jobs(node, args: JobsQuery, request):
    node_id = args.node_id or node.node_id
    page = await node.call(_supervisor(node, node_id).page.remote(args.state, args.limit, args.after))
    return {"status": "success", "node_id": node_id, **page}


async def restart_stuck(node, request):
    jobs = await node.call(node.actors.jobs.restart_stuck.remote())
    await node.refresh()
    return {"status": "success", "restarted_count": len(jobs), "jobs": jobs}


async def run_cleanup(node, args: CleanupRequest, request):
    settings = node.settings
    policy = CleanupPolicy(
        temp_max_age_s=settings.temp_max_age_s if args.temp_max_age_s is None else args.temp_max_age_s,
        partial_max_age_s=settings.partial_max_age_s if args.partial_max_age_s is None else args.partial_max_age_s,
        retention_days=args.retention_days or settings.data_retention_days,
    )
    report = await asyncio.to_thread(cleanup, settings.node_dir(), policy, time.time(), args.dry_run)
    return {"status": "success", "dry_run": report.dry_run, "files_removed": len(report.files),
            "bytes_freed": report.bytes_freed, "files": report.files}


ENDPOINTS = [
    Endpoint(("POST",), "/start_job", start_job, "Start a job on this node (idempotent by job_id)",
             args=StartJobRequest, response=JobResponse),
    Endpoint(("POST",), "/stop_job", stop_job, "Stop a job gracefully, between units of work",
             args=JobIdRequest, response=JobResponse),
    Endpoint(("POST",), "/job/kill", kill_job, "Kill a job's task (SIGKILL through Ray)",
             args=JobIdRequest, response=JobResponse),
    Endpoint(("GET",), "/job/status", job_status, "One job in full (?job_id=), running or finished, on any node",
             args=JobIdRequest, response=JobResponse),
    Endpoint(("GET",), "/jobs", list_jobs, "A node's jobs, newest first, a page at a time (?state=&limit=&after=)",
             args=JobsQuery, response=JobsPageResponse),
    Endpoint(("POST",), "/restart_stuck_jobs", restart_stuck, "Kill and relaunch every stuck job (attempt + 1)",
             response=JobsListResponse),
    Endpoint(("POST",), "/cleanup", run_cleanup, "Remove expired temp files, partial downloads and old data",
             args=CleanupRequest, response=CleanupResponse),
]
