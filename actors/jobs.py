"""JobSupervisor: the jobs of one node — start, stop, kill, stuck detection, restart.

What survives a failure: every job is a row in the node's SQLite database, rewritten on each
change. If this actor dies, Ray restarts it on the same node; it reloads every job, and jobs
that were pending or running are relaunched as a new attempt (the tasks of the old attempt died
with their owner, and any straggler is told to stop by the attempt check). Jobs that were
stopping finish as stopped. Nothing is forgotten.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import ray

from actors.naming import pinned
from actors.tasks import run_job
from orchestrator.cluster.job_types import get_job_type, known_job_types
from orchestrator.cluster.jobs import ACTIVE, FINISHED, Job, JobState
from orchestrator.config import Settings
from orchestrator.errors import BadRequest, Conflict, NotFound
from orchestrator.play.games import GAMES_CONTEXT_KEY, GameCatalog
from orchestrator.learn.series import add_point, columns, downsample
from orchestrator.store import NodeStore, node_db_path

log = logging.getLogger(__name__)
TABLE = "jobs"
SERIES_KEY = "metrics:"  # a job's metric series, in the node's kv table


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class JobSupervisor:
    def __init__(self, node_id: str, ray_node_id: str, settings: Settings) -> None:
        self.node_id = node_id
        self.ray_node_id = ray_node_id
        self.settings = settings
        self.store = NodeStore(node_db_path(settings.node_dir()))
        self.jobs: dict[str, Job] = {jid: Job.from_record(r) for jid, r in self.store.load(TABLE).items()}
        self.refs: dict[str, ray.ObjectRef] = {}
        self.node_gpus = _node_gpus(ray_node_id)
        self.games = GameCatalog.from_settings(settings.games)
        self._recovered = False

    # --- helpers -------------------------------------------------------------------------
    def _save(self, job: Job) -> None:
        self.store.put(TABLE, job.job_id, job.to_record())

    def _job(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise NotFound(f"unknown job {job_id!r}", job_id=job_id)
        return job

    def _recover(self) -> None:
        """After a restart: relaunch what was running, settle what was stopping (once per incarnation)."""
        if self._recovered:
            return
        self._recovered = True
        now = time.time()
        for job in self.jobs.values():
            if job.state is JobState.STOPPING:
                job.finish(job.attempt, JobState.STOPPED, now, error="supervisor restarted while stopping")
                self._save(job)
            elif job.state in ACTIVE:
                job.finish(job.attempt, JobState.FAILED, now, error="supervisor restarted; relaunching")
                job.restart(now)
                self._launch(job)

    def _launch(self, job: Job) -> None:
        kind = get_job_type(job.job_type)
        num_gpus = 1 if kind.wants_gpu and self.node_gpus > 0 else 0
        ref = run_job.options(
            name=f"{job.job_type}:{job.job_id}#{job.attempt}",
            num_cpus=kind.num_cpus,
            num_gpus=num_gpus,
            scheduling_strategy=pinned(self.ray_node_id),
        ).remote(job.job_type, job.config, job.job_id, self.node_id, job.attempt, str(self.settings.node_dir()),
                 self.games)
        self.refs[job.job_id] = ref
        self._save(job)
        asyncio.get_running_loop().create_task(self._watch(job.job_id, job.attempt, ref))

    async def _watch(self, job_id: str, attempt: int, ref: ray.ObjectRef) -> None:
        try:
            outcome = await ref
        except ray.exceptions.TaskCancelledError:
            outcome, state, error = None, JobState.KILLED, "killed"
        except ray.exceptions.RayTaskError as exc:
            outcome, state, error = None, JobState.FAILED, f"{type(exc.cause).__name__}: {exc.cause}"
        except ray.exceptions.RayError as exc:  # worker or node died under the task
            outcome, state, error = None, JobState.FAILED, f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
        else:
            state = JobState.STOPPED if outcome["stopped"] else JobState.COMPLETED
            error = None
        job = self.jobs.get(job_id)
        if job is not None and job.finish(attempt, state, time.time(), result=outcome and outcome["result"], error=error):
            self.refs.pop(job_id, None)
            self._save(job)

    def _kill_task(self, job_id: str) -> None:
        ref = self.refs.pop(job_id, None)
        if ref is not None:
            ray.cancel(ref, force=True)  # SIGKILL of the worker process running the task

    # --- API -----------------------------------------------------------------------------
    async def start(self, job_id: str, job_type: str, config: dict[str, Any]) -> dict[str, Any]:
        self._recover()
        if job_type not in known_job_types():
            raise BadRequest(f"unknown job_type {job_type!r}; known: {', '.join(known_job_types())}",
                             field="job_type", known=known_job_types())
        kind = get_job_type(job_type)
        try:
            normalized = kind.config_model.model_validate(
                config, context={GAMES_CONTEXT_KEY: self.games}).model_dump(mode="json")
        except ValueError as exc:
            raise BadRequest(_first_error(exc), field="config") from None
        now = time.time()
        existing = self.jobs.get(job_id)
        candidate = Job.new(job_id, job_type, self.node_id, normalized, now)
        if existing is not None:
            if existing.digest != candidate.digest:
                raise Conflict(f"job {job_id!r} exists with a different body", job_id=job_id)
            return {"created": False, "job": self._view(existing, now)}
        self.jobs[job_id] = candidate
        self._launch(candidate)
        return {"created": True, "job": self._view(candidate, now)}

    async def report(self, job_id: str, attempt: int, progress: dict[str, Any], worker_pid: int | None = None) -> bool:
        self._recover()
        job = self.jobs.get(job_id)
        if job is None:
            return True
        current = attempt == job.attempt and job.state not in FINISHED
        stop = job.report(attempt, progress, time.time(), worker_pid)
        self._save(job)
        if current and isinstance(progress.get("step"), int) and isinstance(progress.get("metrics"), dict):
            self._append_point(job_id, progress["step"], progress["metrics"])  # a trainer's loss curve
        return stop

    def _append_point(self, job_id: str, step: int, metrics: dict[str, float]) -> int:
        doc = self.store.get("kv", SERIES_KEY + job_id) or {"points": []}
        points = add_point(doc["points"], step, metrics)
        self.store.put("kv", SERIES_KEY + job_id, {"points": points})
        return len(points)

    async def append_metrics(self, job_id: str, step: int, metrics: dict[str, float]) -> int:
        """Add a point to a job's metric series (the same step again merges); returns the series length."""
        self._recover()
        self._job(job_id)
        return self._append_point(job_id, step, metrics)

    async def metrics(self, job_id: str, max_points: int) -> dict[str, Any]:
        """A job's metric series, downsampled to `max_points`, as steps plus one column per metric."""
        self._recover()
        self._job(job_id)
        points = (self.store.get("kv", SERIES_KEY + job_id) or {"points": []})["points"]
        return {"total_points": len(points), **columns(downsample(points, max_points))}

    async def stop(self, job_id: str) -> dict[str, Any]:
        self._recover()
        job = self._job(job_id)
        job.request_stop(time.time())
        self._save(job)
        return self._view(job, time.time())

    async def kill(self, job_id: str) -> dict[str, Any]:
        self._recover()
        job = self._job(job_id)
        if job.state in FINISHED:
            raise Conflict(f"job {job_id!r} already finished ({job.state.value})", job_id=job_id)
        self._kill_task(job_id)
        job.finish(job.attempt, JobState.KILLED, time.time(), error="killed on request")
        self._save(job)
        return self._view(job, time.time())

    async def restart_stuck(self) -> list[dict[str, Any]]:
        self._recover()
        now = time.time()
        restarted = []
        for job in self.jobs.values():
            if job.is_stuck(now, self.settings.stuck_after_s):
                self._kill_task(job.job_id)
                job.finish(job.attempt, JobState.KILLED, now, error=f"stuck: no progress for {self.settings.stuck_after_s}s")
                job.restart(now)
                self._launch(job)
                restarted.append(self._view(job, now))
        return restarted

    async def get(self, job_id: str) -> dict[str, Any]:
        self._recover()
        return self._view(self._job(job_id), time.time())

    async def list_jobs(self) -> list[dict[str, Any]]:
        self._recover()
        now = time.time()
        return [self._view(job, now) for job in sorted(self.jobs.values(), key=lambda j: j.created_at)]

    async def summaries(self) -> list[dict[str, Any]]:
        self._recover()
        now = time.time()
        return [job.summary(now, self.settings.stuck_after_s) for job in self.jobs.values()]

    def _view(self, job: Job, now: float) -> dict[str, Any]:
        return job.view(now, self.settings.stuck_after_s)


def _node_gpus(ray_node_id: str) -> float:
    for node in ray.nodes():
        if node["NodeID"] == ray_node_id:
            return float(node["Resources"].get("GPU", 0))
    return 0.0


def _first_error(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        return f"config.{where}: {first['msg']}" if where else f"config: {first['msg']}"
    return f"config: {exc}"
