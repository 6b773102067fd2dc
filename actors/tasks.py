"""The Ray tasks that do the work of jobs. Each runs one attempt of one job on its node."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import ray

from actors.catalog import JOB_TYPES
from actors.naming import CLUSTER_STORE, jobs_name, lookup, root_cause
from actors.sync import GATHERING_JOB_TYPES, SyncActorGone, fetch_model_file, gather_selfplay, node_here
from orchestrator.learn.registry import REGISTRY_KIND, resolve_model
from orchestrator.play.games import GAMES_CONTEXT_KEY, GameCatalog

REPORT_TIMEOUT_S = 30.0


class RayJobContext:
    """The JobContext a job sees: progress goes to its node's JobSupervisor, which answers 'stop?'."""

    def __init__(self, job_id: str, node_id: str, attempt: int, data_dir: str, games: GameCatalog,
                 selfplay_served: str = "auto") -> None:
        self.job_id = job_id
        self.node_id = node_id
        self.attempt = attempt
        self.data_dir = Path(data_dir)
        self.games = games
        self.selfplay_served = selfplay_served  # the node's setting, for self-play configs that leave `served` null
        self.device = "cuda" if ray.get_gpu_ids() else "cpu"
        self.stop_seen = False
        self.data_origins: dict[str, str] = {}  # files copied here from other nodes -> their node (see gather)
        self._supervisor = lookup(jobs_name(node_id))

    def report(self, progress: dict[str, Any]) -> bool:
        try:
            stop = ray.get(self._supervisor.report.remote(self.job_id, self.attempt, progress, os.getpid()), timeout=REPORT_TIMEOUT_S)
        except (ray.exceptions.GetTimeoutError, ray.exceptions.RayActorError):
            # The supervisor is restarting; keep working, the next report will get through.
            return self.stop_seen
        self.stop_seen = self.stop_seen or bool(stop)
        return self.stop_seen

    def load_model(self, model_id: str) -> Any:
        """A registered model, resolved from its registry record (files verified by sha256); a model
        file this node lacks is first fetched from a node that holds it."""
        fetch_model_file(self.node_id, model_id)
        return load_registered(model_id, self.data_dir, self.device)

    def register_model(self, doc: dict[str, Any], epoch: int, writer: str) -> dict[str, Any]:
        """Write a model record under the commissioning leader's epoch; Conflict once it is stale."""
        store = lookup(CLUSTER_STORE)
        try:
            return ray.get(store.write.remote(REGISTRY_KIND, doc["model_id"], doc, epoch, writer), timeout=REPORT_TIMEOUT_S)
        except ray.exceptions.RayTaskError as exc:
            raise root_cause(exc) from None


def load_registered(model_id: str, data_dir: str | Path | None, device: str = "cpu") -> Any:
    """What `AgentContext.load_model` returns for a model in the registry (see orchestrator.learn.registry)."""
    store = lookup(CLUSTER_STORE)
    doc = ray.get(store.read.remote(REGISTRY_KIND, model_id), timeout=REPORT_TIMEOUT_S)
    if doc is None:
        raise ValueError(f"model {model_id!r} is not in the model registry")
    return resolve_model(doc, data_dir, device)


def load_model_here(model_id: str, device: str = "cpu") -> Any:
    """For a task Ray may place on any node (evaluation games): a model file is fetched into the data
    directory of the orchestrator node on this Ray node, then loaded from there (verified). Without
    such a node, only models that need no file (agent_params) load."""
    for refresh in (False, True):  # a cached node may have gone away since: look again once
        here = node_here(refresh)
        if here is None:
            break
        try:
            fetch_model_file(here["node_id"], model_id)
        except (ray.exceptions.RayActorError, SyncActorGone):  # that node went away since it was cached
            continue
        return load_registered(model_id, here["data_dir"], device)
    return load_registered(model_id, None, device)


@ray.remote(max_retries=0)
def run_job(job_type: str, config: dict[str, Any], job_id: str, node_id: str, attempt: int, data_dir: str,
            games: GameCatalog, selfplay_served: str) -> dict[str, Any]:
    kind = JOB_TYPES.get(job_type)
    ctx = RayJobContext(job_id, node_id, attempt, data_dir, games, selfplay_served)
    # The first report marks the job running the moment its task starts, so a task that then
    # goes silent shows as stuck; a stop that arrived while it was queued ends it here.
    if ctx.report({"phase": "started"}):
        return {"result": None, "stopped": True}
    gathered = None
    if job_type in GATHERING_JOB_TYPES:  # the window comes from every node's self-play, copied here first
        ctx.report({"phase": "gathering"})
        gathered = gather_selfplay(node_id, job_id, attempt, config["board_type"])
        ctx.data_origins = gathered.pop("sources")  # the node of each file goes into the model's lineage, once
    result = kind.run(kind.config_model.model_validate(config, context={GAMES_CONTEXT_KEY: games}), ctx)
    if gathered is not None and isinstance(result, dict):
        result = {**result, "gathered": gathered}  # what the copy did: files, bytes, errors, unreachable nodes
    return {"result": result, "stopped": ctx.stop_seen}
