"""ModelRegistrar: registers the models that training runs produced, through the current leader.

A detached singleton pinned to the Ray head, beside the ClusterStore (the same failure domain, so
it adds none). Every `REGISTRAR_INTERVAL_S` it takes the training runs whose registration is not
settled, asks each run's JobSupervisor for its job, and follows `registration_step` (the pure
decision in `orchestrator.learn.registration`): a completed job whose checkpoint was verified has
its model record written to the registry, then the run is noted as settled. Both writes go
through `leader_write` of the node that holds the newest term in the store, so they carry the
epoch of whichever leader is current; a deposed leader's actor refuses, and while no node leads
nothing is written and the run waits for the next pass.

What survives a failure: this actor holds nothing of its own. Runs, job results and the registry
are durable where they live, and each step is idempotent by model id; a restarted registrar (Ray
restarts it) carries on from what the store says.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable

import ray

from actors.cluster_store import head_node_id
from actors.naming import CLUSTER_STORE, NAMESPACE, election_name, jobs_name, lookup, pinned, root_cause
from orchestrator.errors import Unavailable
from orchestrator.learn.registration import Register, Settle, is_settled, registration_step, settled_run
from orchestrator.learn.registry import REGISTRY_KIND

log = logging.getLogger(__name__)
REGISTRAR = "model_registrar"
RUNS_KIND = "training_runs"
REGISTRAR_INTERVAL_S = 1.0
CALL_TIMEOUT_S = 10.0


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class ModelRegistrar:
    def __init__(self, interval_s: float = REGISTRAR_INTERVAL_S, clock: Callable[[], float] = time.time) -> None:
        self.interval_s = interval_s
        self.clock = clock
        self.passes = 0
        self.last_error: str | None = None
        # An async actor's constructor runs on its event loop: the loop starts with every
        # incarnation, so a registrar that Ray restarts carries on without being asked.
        self._loop = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            try:
                await self.reconcile()
                self.last_error = None
            except Exception as exc:  # no leader, the store restarting: the next pass tries again
                self.last_error = f"{type(exc).__name__}: {root_cause(exc)}"
            self.passes += 1
            await asyncio.sleep(self.interval_s)

    async def reconcile(self) -> list[str]:
        """One pass over the unsettled runs; returns the ids of the runs settled by it."""
        store = lookup(CLUSTER_STORE)
        runs = await asyncio.wait_for(store.list.remote(RUNS_KIND), CALL_TIMEOUT_S)
        settled = []
        for run in sorted(runs.values(), key=lambda r: r["created_at"]):
            if is_settled(run):
                continue
            registered = await asyncio.wait_for(store.read.remote(REGISTRY_KIND, run["model_id"]), CALL_TIMEOUT_S)
            step = registration_step(run, await _job(run), registered)
            if step is None:
                continue
            if isinstance(step, Register):
                await _leader_write(store, REGISTRY_KIND, step.model_id, step.doc)
                step = Settle(True, "registered")
            written = await _leader_write(store, RUNS_KIND, run["run_id"], run, settle=step, now=self.clock())
            log.info("training run %s: %s", run["run_id"], written["registration"]["note"])
            settled.append(run["run_id"])
        return settled

    async def status(self) -> dict[str, Any]:
        return {"passes": self.passes, "last_error": self.last_error, "interval_s": self.interval_s}


async def _job(run: dict[str, Any]) -> dict[str, Any] | None:
    """The run's job as its node's supervisor shows it; None while that node cannot be asked, or
    does not know the job yet (the leader writes the run before it starts the job)."""
    try:
        supervisor = lookup(jobs_name(run["node_id"]))
        return await asyncio.wait_for(supervisor.get.remote(run["job_id"]), CALL_TIMEOUT_S)
    except Exception:  # the node is gone or its supervisor restarting: ask again next pass
        return None


async def _leader_write(store: Any, kind: str, key: str, doc: dict[str, Any], *, settle: Settle | None = None,
                        now: float = 0.0) -> dict[str, Any]:
    """Write through the current leader's ElectionActor, under its epoch; Unavailable while none leads."""
    epoch, leader = await asyncio.wait_for(store.highest_epoch.remote(), CALL_TIMEOUT_S)
    if leader is None:
        raise Unavailable("no leader has begun a term")
    if settle is not None:
        doc = settled_run(doc, settle, epoch=epoch, leader_id=leader, now=now)
    # A leader deposed since the read refuses (Conflict); the next pass writes through its successor.
    await asyncio.wait_for(lookup(election_name(leader)).leader_write.remote(kind, key, doc), CALL_TIMEOUT_S)
    return doc


def ensure_model_registrar() -> Any:
    """Get or create the singleton on the head."""
    return ModelRegistrar.options(name=REGISTRAR, namespace=NAMESPACE, lifetime="detached", get_if_exists=True,
                                  scheduling_strategy=pinned(head_node_id())).remote()
