"""Training (seed sections "Selfplay & Training", "Metrics & Analytics") and the model registry.

A training run is a record in the cluster store (kind `training_runs`, written by the leader)
plus a `training` or `nnue_training` job on the node the leader chose. Before the job starts, the
leader copies there every self-play file of the board that node lacks (`data_sync` on the run; see
`_gather_window`); a window that does not arrive leaves the run with a `start_error`, and the same
request again retries it. The run's live state is that job, asked of its node's JobSupervisor; its loss curve is the job's metric series, kept by
the same supervisor (the job's own progress reports and `POST /training/update` both add to it).
The job does not register its model: the registrar (`actors/registrar.py`) registers a finished
run's verified model through whichever leader is current, and notes the outcome on the run.
"""
from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from actors.bootstrap import jobs_actor
from actors.naming import root_cause
from actors.sync_leader import SyncTimedOut
from orchestrator.cluster.placement import pick_training_node
from orchestrator.errors import BadRequest, Conflict, NotFound, Unavailable
from orchestrator.gateway.dispatch import start_job_on
from orchestrator.gateway.endpoint import Endpoint
from orchestrator.learn.jobs import NNUEJobConfig, PolicyValueJobConfig
from orchestrator.learn.registry import REGISTRY_KIND
from orchestrator.play.games import GAMES_CONTEXT_KEY, GameCatalog
from orchestrator.models import (ModelsQuery, TrainingMetricsQuery, TrainingRunQuery, TrainingStartRequest,
                                 TrainingStartResponse, TrainingUpdateRequest)

RUNS = "training_runs"
JOB_TYPES = {"policy_value": ("training", PolicyValueJobConfig, "pv"), "nnue": ("nnue_training", NNUEJobConfig, "nnue")}
# A training start waits this long for its window to reach the training node (under forward_timeout_s,
# which a follower forwarding the start waits for the leader's answer).
TRAINING_SYNC_TIMEOUT_S = 300.0
JOB_VIEW = ("state", "progress", "attempt", "stuck", "started_at", "finished_at", "error")


def _job_config(model_kind: str, fields: dict[str, Any], games: GameCatalog) -> dict[str, Any]:
    """Validated by the job type's own config model, so a bad field is refused (400 naming it) before
    anything starts."""
    return JOB_TYPES[model_kind][1].model_validate(fields, context={GAMES_CONTEXT_KEY: games}).model_dump(mode="json")


def training_node(node, wanted: str | None, work: str) -> str:
    """Where `work` (as the 503 names it when no node is alive) runs: `wanted`, refused unless it is
    a known alive node, else the leader's pick for training (`pick_training_node`)."""
    if wanted is None:
        target = pick_training_node(node.peers())
        if target is None:
            raise Unavailable(f"no alive node can take {work}")
        return target
    peer = node.peer(wanted)
    if peer is None:
        raise NotFound(f"unknown node {wanted!r}", node_id=wanted)
    if peer["state"] != "alive":
        raise Conflict(f"node {wanted!r} is {peer['state']} and gets no work", node_id=wanted)
    return wanted


async def _start(node, args: TrainingStartRequest, model_kind: str):
    request = {**args.model_dump(mode="json", include=set(args.job_field_names)), "model_kind": model_kind,
               "node_id": args.node_id}  # JSON, as stored: a tuple default must compare equal to its stored list
    run_id = args.run_id or f"train-{uuid.uuid4().hex[:12]}"
    job_type, _, tag = JOB_TYPES[model_kind]
    model_id = f"{run_id}-{tag}"
    epoch = node.election()["epoch"]
    config = _job_config(model_kind, {**args.job_fields(), "model_id": model_id}, node.games)
    existing = await node.call(node.actors.cluster_store.read.remote(RUNS, run_id))
    if existing is not None:
        if existing["request"] != request:
            raise Conflict(f"training run {run_id!r} exists with a different body", run_id=run_id)
        if "start_error" not in existing:  # a run whose start failed (its window did not arrive) is started again
            return _started(existing, created=False)
    target = training_node(node, args.node_id, "training")
    run = {"run_id": run_id, "job_id": run_id, "job_type": job_type, "model_kind": model_kind, "model_id": model_id,
           "node_id": target, "board_type": args.board_type, "config": config, "request": request,
           "created_at": time.time(), "epoch": epoch, "leader_id": node.node_id,
           "start_tries": (existing or {}).get("start_tries", 0) + 1, "data_sync_id": _sync_id(run_id, existing, target)}
    written = await node.call(node.actors.election.leader_write.remote(RUNS, run_id, run))  # refused unless we lead
    if written["epoch"] != epoch:  # a newer term of ours than the cached view: commission the run under it
        epoch = written["epoch"]
        run["epoch"] = epoch
        await node.call(node.actors.election.leader_write.remote(RUNS, run_id, run))
    try:
        run["data_sync"] = await _gather_window(node, run)
        await node.call(node.actors.election.leader_write.remote(RUNS, run_id, run))
        await start_job_on(node, target, run_id, job_type, run["config"], epoch)
    except Exception as exc:  # keep the run, and why it has no job, visible in /training/status
        run["start_error"] = f"{type(exc).__name__}: {root_cause(exc)}"
        run["data_sync_timed_out"] = isinstance(root_cause(exc), SyncTimedOut)
        await node.call(node.actors.election.leader_write.remote(RUNS, run_id, run))
        raise
    await node.refresh()
    return _started(run, created=True)


def _sync_id(run_id: str, previous: dict[str, Any] | None, target: str) -> str:
    """A retried start waits again for a copy that only ran out of time (its files are still on the
    way, and a second copy of them must not race the first); after one that failed, or toward
    another node, it plans a fresh one."""
    if previous is None:
        return f"{run_id}:data"
    if previous.get("data_sync_timed_out") and previous["node_id"] == target:
        return previous["data_sync_id"]
    return f"{run_id}:data-{previous.get('start_tries', 1) + 1}"


async def _gather_window(node, run: dict[str, Any]) -> dict[str, Any]:
    """The window comes from every node's self-play: the leader's SyncActor copies the board's files
    the training node lacks there first, as `POST /sync/training` does (same actor method, training
    priority), and waits. The job's own gather then finds them there, with the node each came from."""
    sync_id = run["data_sync_id"]
    try:
        answer = await asyncio.wait_for(node.actors.sync.sync_training.remote(
            run["board_type"], run["node_id"], sync_id, TRAINING_SYNC_TIMEOUT_S),
            TRAINING_SYNC_TIMEOUT_S + node.settings.actor_call_timeout_s)
    except asyncio.TimeoutError:  # the actor bounds its own wait; this is for an actor that hangs
        raise Unavailable(f"sync {sync_id}: this node's sync actor did not answer", sync_id=sync_id) from None
    target = answer["target"]
    return {"sync_id": sync_id, "files_total": target["files_total"], "files_done": target["files_done"],
            "bytes_total": target["bytes_total"], "bytes_done": target["bytes_done"]}


def _started(run: dict[str, Any], created: bool) -> dict[str, Any]:
    return {"status": "success", "created": created,
            **{key: run[key] for key in ("run_id", "node_id", "job_id", "model_id")}}


async def training_start(node, args: TrainingStartRequest, request):
    return await _start(node, args, args.model_kind)


async def nnue_start(node, args: TrainingStartRequest, request):
    if "model_kind" in args.model_fields_set and args.model_kind != "nnue":  # would be silently overridden
        raise BadRequest(f"model_kind: this endpoint trains nnue, not {args.model_kind}", field="model_kind")
    return await _start(node, args, "nnue")


def _supervisor(node, node_id: str):
    if node_id == node.node_id:
        return node.actors.jobs
    try:
        return jobs_actor(node_id)
    except ValueError:
        raise Unavailable(f"node {node_id!r} has no running actors", node_id=node_id) from None


async def _runs(node, run_id: str | None) -> list[dict[str, Any]]:
    if run_id is None:
        runs = await node.call(node.actors.cluster_store.list.remote(RUNS))
        return sorted(runs.values(), key=lambda r: r["created_at"])
    run = await node.call(node.actors.cluster_store.read.remote(RUNS, run_id))
    if run is None:
        raise NotFound(f"unknown training run {run_id!r}", run_id=run_id)
    return [run]


async def _run_view(node, run: dict[str, Any], models: dict[str, dict]) -> dict[str, Any]:
    view = {key: value for key, value in run.items() if key != "request"}
    try:
        job = await node.call(_supervisor(node, run["node_id"]).get.remote(run["job_id"]))
    except Exception as exc:  # one unreachable node must not hide every other run
        view.update(job=None, job_error=f"{type(exc).__name__}: {root_cause(exc)}")
        job = None
    else:
        view["job"] = {key: job[key] for key in JOB_VIEW}
    result = (job or {}).get("result") or {}
    model = models.get(run["model_id"])
    settled = run.get("registration") or {}
    view["registered"] = model is not None
    view["model"] = model or result.get("model")
    view["registration"] = settled.get("note") or result.get("registration") or "pending: the job has not finished"
    view["skipped_note"] = result.get("skipped_note")
    return view


async def training_status(node, args: TrainingRunQuery, request):
    runs = await _runs(node, args.run_id)
    models = await node.call(node.actors.cluster_store.list.remote(REGISTRY_KIND))
    views = await asyncio.gather(*(_run_view(node, run, models) for run in runs))
    if args.run_id is not None:
        return {"status": "success", "run": views[0]}
    return {"status": "success", "count": len(views), "runs": views}


async def training_update(node, args: TrainingUpdateRequest, request):
    run = (await _runs(node, args.run_id))[0]
    points = await node.call(_supervisor(node, run["node_id"]).append_metrics.remote(run["job_id"], args.step,
                                                                                     args.metrics))
    return {"status": "success", "run_id": args.run_id, "step": args.step, "points": points}


async def _curve(node, run: dict[str, Any], max_points: int) -> dict[str, Any]:
    curve = {"run_id": run["run_id"], "node_id": run["node_id"], "job_id": run["job_id"]}
    try:
        return {**curve, **await node.call(_supervisor(node, run["node_id"]).metrics.remote(run["job_id"], max_points))}
    except Exception as exc:  # as in status: report the one run, keep the others
        return {**curve, "error": f"{type(exc).__name__}: {root_cause(exc)}"}


async def training_metrics(node, args: TrainingMetricsQuery, request):
    runs = await _runs(node, args.run_id)
    curves = await asyncio.gather(*(_curve(node, run, args.max_points) for run in runs))
    return {"status": "success", "max_points": args.max_points, "runs": curves}


async def list_models(node, args: ModelsQuery, request):
    models = await node.call(node.actors.cluster_store.list.remote(REGISTRY_KIND))
    wanted = {key: value for key, value in args.model_dump().items() if value is not None}
    rows = [m for m in models.values() if all(m.get(key) == value for key, value in wanted.items())]
    return {"status": "success", "count": len(rows), "models": sorted(rows, key=lambda m: m["created_at"])}


ENDPOINTS = [
    Endpoint(("POST",), "/training/start", training_start, "Start a training run on the node the leader picks",
             args=TrainingStartRequest, response=TrainingStartResponse, leader_only=True),
    Endpoint(("POST",), "/training/nnue/start", nnue_start, "Start an NNUE training run (model_kind nnue)",
             args=TrainingStartRequest, response=TrainingStartResponse, leader_only=True),
    Endpoint(("GET",), "/training/status", training_status, "Training runs with their live job and model (?run_id=)",
             args=TrainingRunQuery),
    Endpoint(("POST",), "/training/update", training_update, "A trainer reports a step's metrics (loss curve point)",
             args=TrainingUpdateRequest),
    Endpoint(("GET",), "/training/metrics", training_metrics, "Loss curves per run, downsampled (?run_id=&max_points=)",
             args=TrainingMetricsQuery),
    Endpoint(("GET",), "/models", list_models, "The model registry (?board_type=, ?kind=, ?status=)", args=ModelsQuery),
]
