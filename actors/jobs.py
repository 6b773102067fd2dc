"""JobSupervisor: the actor shell around the supervisor core for one node's jobs.

Decisions (idempotent start, recovery, stuck restarts, attempt numbering, history compaction)
live in `orchestrator.cluster.supervisor`; this shell passes the time in and runs what the core
asks for through `RayJobRunner`, the one place the supervisor touches Ray tasks.

What survives a failure: every job is a row in the node's SQLite database, written before its task
is launched or cancelled. If this actor dies, Ray restarts it on the same node; the new incarnation
reloads every job and, behind one recovery gate that every call awaits, relaunches the jobs that
were pending or running (or suspended for a planned restart) as a new attempt and settles the ones
that were stopping. Nothing is
forgotten until it is older than the configured history age.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable

import ray

from actors.catalog import JOB_TYPES
from actors.naming import pinned, root_cause
from actors.tasks import run_job
from orchestrator.cluster.jobs import JobState
from orchestrator.cluster.supervisor import JobSupervisorCore, Launch, Outcome, SupervisorPolicy
from orchestrator.config import Settings
from orchestrator.learn.series import add_point, columns, downsample
from orchestrator.play.games import GAMES_CONTEXT_KEY, GameCatalog
from orchestrator.store import NodeStore, node_db_path

log = logging.getLogger(__name__)
SERIES_KEY = "metrics:"  # a job's metric series, in the node's kv table
MAX_COMPACT_INTERVAL_S = 60.0
SUSPEND_POLL_S = 0.1  # how often a suspend looks whether every job has reached its boundary


class RayJobRunner:
    """Launches attempts as Ray tasks pinned to this node and reports how each one ended."""

    def __init__(self, node_id: str, ray_node_id: str, data_dir: str, games: GameCatalog,
                 on_end: Callable[[str, int, Outcome], None], selfplay_served: str) -> None:
        self.node_id = node_id
        self.ray_node_id = ray_node_id
        self.data_dir = data_dir
        self.games = games
        self.selfplay_served = selfplay_served
        self.on_end = on_end
        self.refs: dict[tuple[str, int], ray.ObjectRef] = {}

    def launch(self, launch: Launch) -> None:
        ref = run_job.options(
            name=f"{launch.job_type}:{launch.job_id}#{launch.attempt}",
            num_cpus=launch.num_cpus,
            num_gpus=launch.num_gpus,
            scheduling_strategy=pinned(self.ray_node_id),
        ).remote(launch.job_type, launch.config, launch.job_id, self.node_id, launch.attempt, self.data_dir, self.games,
                 self.selfplay_served)
        key = (launch.job_id, launch.attempt)
        self.refs[key] = ref
        asyncio.get_running_loop().create_task(self._watch(key, ref))

    def cancel(self, job_id: str, attempt: int) -> None:
        ref = self.refs.pop((job_id, attempt), None)
        if ref is not None:
            ray.cancel(ref, force=True)  # SIGKILL of the worker process running the task

    async def _watch(self, key: tuple[str, int], ref: ray.ObjectRef) -> None:
        try:
            value = await ref
        except ray.exceptions.TaskCancelledError:
            outcome = Outcome(JobState.KILLED, error="killed")
        except ray.exceptions.RayTaskError as exc:
            cause = root_cause(exc)
            outcome = Outcome(JobState.FAILED, error=f"{type(cause).__name__}: {cause}")
        except ray.exceptions.RayError as exc:  # worker or node died under the task
            outcome = Outcome(JobState.FAILED, error=f"{type(exc).__name__}: {str(exc).splitlines()[0]}")
        else:
            outcome = Outcome(JobState.STOPPED if value["stopped"] else JobState.COMPLETED, result=value["result"])
        self.refs.pop(key, None)
        self.on_end(key[0], key[1], outcome)


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class JobSupervisor:
    def __init__(self, node_id: str, ray_node_id: str, settings: Settings,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.clock = clock
        self.store = NodeStore(node_db_path(settings.node_dir()))
        games = GameCatalog.from_settings(settings.games)
        self.runner = RayJobRunner(node_id, ray_node_id, str(settings.node_dir()), games, self._attempt_ended,
                                   settings.selfplay_served)
        policy = SupervisorPolicy(stuck_after_s=settings.stuck_after_s, recent_jobs=settings.recent_jobs_in_status,
                                  history_max_age_s=settings.job_history_max_age_s)
        self.core = JobSupervisorCore(node_id, self.store, self.runner, JOB_TYPES, policy, _node_gpus(ray_node_id),
                                      {GAMES_CONTEXT_KEY: games})
        self._recovery: asyncio.Task | None = None

    # --- the recovery gate -----------------------------------------------------------------
    async def _ready(self) -> None:
        """Every call waits here until this incarnation has settled what the previous one left."""
        if self._recovery is None or (self._recovery.done() and self._recovery.exception() is not None):
            self._recovery = asyncio.get_running_loop().create_task(self._recover())
        await asyncio.shield(self._recovery)

    async def _recover(self) -> None:
        relaunched = self.core.recover(self.clock())
        if relaunched:
            log.info("relaunched %d job(s) after a restart: %s", len(relaunched), ", ".join(relaunched))
        asyncio.get_running_loop().create_task(self._compact_forever())

    async def _compact_forever(self) -> None:
        interval_s = min(self.settings.job_history_max_age_s / 4, MAX_COMPACT_INTERVAL_S)
        while True:
            try:
                self._compact()
            except Exception:  # a busy database this round is retried the next
                log.exception("job history compaction failed")
            await asyncio.sleep(interval_s)

    def _compact(self) -> None:
        expired = self.core.expired(self.clock())
        # Series first: a crash in between leaves a job without its curve, never a curve without a job.
        self.store.delete("kv", [SERIES_KEY + job_id for job_id in expired])
        self.core.forget(expired)

    def _attempt_ended(self, job_id: str, attempt: int, outcome: Outcome) -> None:
        self.core.attempt_ended(job_id, attempt, outcome, self.clock())

    # --- API -------------------------------------------------------------------------------
    async def ready(self) -> bool:
        await self._ready()
        return True

    async def start(self, job_id: str, job_type: str, config: dict[str, Any]) -> dict[str, Any]:
        await self._ready()
        return self.core.start(job_id, job_type, config, self.clock())

    async def report(self, job_id: str, attempt: int, progress: dict[str, Any], worker_pid: int | None = None) -> bool:
        await self._ready()
        stop, accepted = self.core.report(job_id, attempt, progress, worker_pid, self.clock())
        if accepted and isinstance(progress.get("step"), int) and isinstance(progress.get("metrics"), dict):
            self._append_point(job_id, progress["step"], progress["metrics"])  # a trainer's loss curve
        return stop

    def _append_point(self, job_id: str, step: int, metrics: dict[str, float]) -> int:
        doc = self.store.get("kv", SERIES_KEY + job_id) or {"points": []}
        points = add_point(doc["points"], step, metrics)
        self.store.put("kv", SERIES_KEY + job_id, {"points": points})
        return len(points)

    async def append_metrics(self, job_id: str, step: int, metrics: dict[str, float]) -> int:
        """Add a point to a job's metric series (the same step again merges); returns the series length."""
        await self._ready()
        self.core.job(job_id)
        return self._append_point(job_id, step, metrics)

    async def metrics(self, job_id: str, max_points: int) -> dict[str, Any]:
        """A job's metric series, downsampled to `max_points`, as steps plus one column per metric."""
        await self._ready()
        self.core.job(job_id)
        points = (self.store.get("kv", SERIES_KEY + job_id) or {"points": []})["points"]
        return {"total_points": len(points), **columns(downsample(points, max_points))}

    async def stop(self, job_id: str) -> dict[str, Any]:
        await self._ready()
        return self.core.stop(job_id, self.clock())

    async def kill(self, job_id: str) -> dict[str, Any]:
        await self._ready()
        return self.core.kill(job_id, self.clock())

    async def suspend(self, timeout_s: float) -> dict[str, Any]:
        """Before this node restarts: stop every job at its next unit boundary and wait for that, up to
        `timeout_s` (a job still inside a unit then dies with its worker). The next incarnation of this
        actor resumes them all as a new attempt."""
        await self._ready()
        suspended = self.core.suspend(self.clock())
        deadline = time.monotonic() + timeout_s
        while self.core.suspending() and time.monotonic() < deadline:
            await asyncio.sleep(SUSPEND_POLL_S)
        return {"suspended": suspended, "not_at_boundary": self.core.suspending()}

    async def restart_stuck(self) -> list[dict[str, Any]]:
        await self._ready()
        return self.core.restart_stuck(self.clock())

    async def get(self, job_id: str) -> dict[str, Any]:
        await self._ready()
        return self.core.get(job_id, self.clock())

    async def summaries(self) -> list[dict[str, Any]]:
        """Active jobs plus a bounded window of recent ones: what heartbeats and /status carry."""
        await self._ready()
        return self.core.summaries(self.clock())

    async def page(self, state: str | None, limit: int, after: str | None) -> dict[str, Any]:
        """This node's jobs newest first, `limit` at a time; pass `next_after` back as `after`."""
        await self._ready()
        page = self.core.page(self.clock(), None if state is None else JobState(state), limit, after)
        return {"jobs": page.jobs, "next_after": page.next_after}


def _node_gpus(ray_node_id: str) -> float:
    for node in ray.nodes():
        if node["NodeID"] == ray_node_id:
            return float(node["Resources"].get("GPU", 0))
    return 0.0
