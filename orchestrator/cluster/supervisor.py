"""The supervisor core: every decision about one node's jobs, with no Ray in sight.

The JobSupervisor actor is a shell around this: it passes the time in, and everything the core
needs done outside itself goes through a `JobRunner` (launch an attempt's task, cancel it). Tests
drive the core with a fake runner and a hand-moved clock, the way Ray Serve tests its deployment
state machine through `ActorReplicaWrapper`.

What survives a failure: each job is a row in the node's SQLite store, written before the runner
is asked to act on it. A core built over that store after a crash calls `recover` once: jobs that
were pending or running are relaunched as a new attempt (their tasks died with the old owner, and a
straggler's reports carry its old attempt, so they are ignored and told to stop); jobs that were
stopping finish as stopped. A planned restart (a code update) calls `suspend` first: every job stops
gracefully at its next unit boundary, marked suspended, and `recover` resumes those as a new attempt. Finished jobs stay until they are older than the history age, then
`compact` deletes them from the store and from memory.
"""
from __future__ import annotations

import base64
import binascii
import json
import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Protocol

from pydantic import ValidationError

from orchestrator.cluster.job_types import JobType, JobTypeCatalog
from orchestrator.cluster.jobs import ACTIVE, FINISHED, Job, JobState
from orchestrator.errors import BadRequest, Conflict, NotFound, bad_request
from orchestrator.store import NodeStore

TABLE = "jobs"
MAX_PAGE = 1000


@dataclass(frozen=True)
class Launch:
    """One attempt of one job, as the runner must start it on this node."""

    job_id: str
    job_type: str
    attempt: int
    config: dict[str, Any]
    num_cpus: float
    num_gpus: float


@dataclass(frozen=True)
class Outcome:
    """How an attempt's task ended, as the runner saw it."""

    state: JobState  # completed, stopped, failed or killed
    result: dict[str, Any] | None = None
    error: str | None = None


class JobRunner(Protocol):
    """The seam to the outside world (Ray in production, a fake in unit tests)."""

    def launch(self, launch: Launch) -> None:
        """Start the attempt; its end comes back through `JobSupervisorCore.attempt_ended`."""

    def cancel(self, job_id: str, attempt: int) -> None:
        """Force-kill the attempt's task if it still runs; nothing if it already ended."""


@dataclass(frozen=True)
class SupervisorPolicy:
    stuck_after_s: float  # a running job silent this long is stuck
    recent_jobs: int  # finished jobs kept in the heartbeat / status window
    history_max_age_s: float  # finished jobs older than this are compacted away


@dataclass(frozen=True)
class Page:
    jobs: list[dict[str, Any]]
    next_after: str | None  # the cursor for the next page; None on the last one


class JobSupervisorCore:
    def __init__(self, node_id: str, store: NodeStore, runner: JobRunner, job_types: JobTypeCatalog,
                 policy: SupervisorPolicy, node_gpus: float, validation_context: Mapping[str, Any]) -> None:
        self.node_id = node_id
        self.store = store
        self.runner = runner
        self.job_types = job_types
        self.validation_context = validation_context  # what config models see (the game catalogue)
        self.policy = policy
        self.node_gpus = node_gpus
        self.jobs: dict[str, Job] = {jid: Job.from_record(r) for jid, r in store.load(TABLE).items()}
        self.recovered = False

    # --- lifecycle -------------------------------------------------------------------------
    def recover(self, now: float) -> list[str]:
        """Settle the jobs a previous incarnation left active, once per core; returns the ids relaunched."""
        if self.recovered:
            return []
        relaunched = []
        for job in list(self.jobs.values()):
            if job.suspended and job.state in (JobState.STOPPED, JobState.STOPPING):
                if job.state is JobState.STOPPING:  # its worker died inside a unit: that attempt failed
                    job.finish(job.attempt, JobState.FAILED, now, error="node restarted before a unit boundary")
                job.restart(now)
                self._launch(job, now)
                relaunched.append(job.job_id)
            elif job.state is JobState.STOPPING:
                job.finish(job.attempt, JobState.STOPPED, now, error="supervisor restarted while stopping")
                self._save(job)
            elif job.state in ACTIVE:
                job.finish(job.attempt, JobState.FAILED, now, error="supervisor restarted; relaunching")
                job.restart(now)
                self._launch(job, now)
                relaunched.append(job.job_id)
        self.recovered = True
        return relaunched

    def start(self, job_id: str, job_type: str, config: dict[str, Any], now: float) -> dict[str, Any]:
        """Start a job, or return the existing one if the body is the same (Conflict if it differs)."""
        kind = self._job_type(job_type)
        try:
            normalized = kind.config_model.model_validate(
                config, context=dict(self.validation_context)).model_dump(mode="json")
        except ValidationError as exc:
            first = bad_request(exc)  # the field inside the job's config: name it from the request's root
            raise BadRequest(f"config.{first.message}", field=f"config.{first.extra['field']}") from None
        candidate = Job.new(job_id, job_type, self.node_id, normalized, now)
        existing = self.jobs.get(job_id)
        if existing is not None:
            if existing.digest != candidate.digest:
                raise Conflict(f"job {job_id!r} exists with a different body", job_id=job_id)
            return {"created": False, "job": self._view(existing, now)}
        self.jobs[job_id] = candidate
        self._launch(candidate, now)
        return {"created": True, "job": self._view(candidate, now)}

    def report(self, job_id: str, attempt: int, progress: dict[str, Any], worker_pid: int | None,
               now: float) -> tuple[bool, bool]:
        """Apply a progress report: (stop?, accepted?). A report from a replaced or finished attempt
        is not accepted and is told to stop."""
        job = self.jobs.get(job_id)
        if job is None:
            return True, False
        accepted = attempt == job.attempt and job.state not in FINISHED
        stop = job.report(attempt, progress, now, worker_pid)
        if accepted:
            self._save(job)
        return stop, accepted

    def attempt_ended(self, job_id: str, attempt: int, outcome: Outcome, now: float) -> bool:
        """Record how an attempt's task ended; False (nothing changes) for a replaced or finished attempt."""
        job = self.jobs.get(job_id)
        if job is None or not job.finish(attempt, outcome.state, now, result=outcome.result, error=outcome.error):
            return False
        self._save(job)
        return True

    def stop(self, job_id: str, now: float) -> dict[str, Any]:
        """Ask for a graceful stop (the task sees it at its next report); Conflict once finished."""
        job = self.job(job_id)
        job.request_stop(now)
        self._save(job)
        return self._view(job, now)

    def kill(self, job_id: str, now: float) -> dict[str, Any]:
        """Record the kill, then cancel the task; Conflict once finished."""
        job = self.job(job_id)
        job.kill(now, error="killed on request")
        self._save(job)
        self.runner.cancel(job_id, job.attempt)
        return self._view(job, now)

    def suspend(self, now: float) -> list[str]:
        """Before this node restarts: every pending or running job is asked to stop at its next unit
        boundary and marked suspended, so that the next core's `recover` resumes it. A job already
        stopping on request is left to stop. Returns the ids suspended."""
        suspended = []
        for job in self.jobs.values():
            if job.state in (JobState.PENDING, JobState.RUNNING):
                job.suspended = True
                job.request_stop(now)
                self._save(job)
                suspended.append(job.job_id)
        return suspended

    def suspending(self) -> list[str]:
        """Suspended jobs whose task has not reached its unit boundary yet."""
        return [job.job_id for job in self.jobs.values() if job.suspended and job.state in ACTIVE]

    def restart_stuck(self, now: float) -> list[dict[str, Any]]:
        """Kill every stuck job's attempt and launch the next one."""
        restarted = []
        for job in list(self.jobs.values()):
            if job.is_stuck(now, self.policy.stuck_after_s):
                stale = job.attempt
                job.kill(now, error=f"stuck: no progress for {self.policy.stuck_after_s}s")
                job.restart(now)
                self._save(job)
                self.runner.cancel(job.job_id, stale)
                self._launch(job, now)
                restarted.append(self._view(job, now))
        return restarted

    def expired(self, now: float) -> list[str]:
        """Finished jobs older than the history age: what `forget` will delete."""
        horizon = now - self.policy.history_max_age_s
        return [job.job_id for job in self.jobs.values()
                if job.state in FINISHED and (job.finished_at or job.created_at) < horizon]

    def forget(self, job_ids: Iterable[str]) -> None:
        """Delete finished jobs from the store, then from memory (an active job is never forgotten)."""
        doomed = [jid for jid in job_ids if jid in self.jobs and self.jobs[jid].state in FINISHED]
        self.store.delete(TABLE, doomed)
        for job_id in doomed:
            del self.jobs[job_id]

    # --- reads -----------------------------------------------------------------------------
    def job(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise NotFound(f"unknown job {job_id!r}", job_id=job_id)
        return job

    def get(self, job_id: str, now: float) -> dict[str, Any]:
        return self._view(self.job(job_id), now)

    def summaries(self, now: float) -> list[dict[str, Any]]:
        """Every active job plus the `recent_jobs` most recently finished, oldest first: what
        heartbeats and /status carry, so their size does not grow with history."""
        active = [job for job in self.jobs.values() if job.state in ACTIVE]
        finished = sorted((job for job in self.jobs.values() if job.state in FINISHED),
                          key=lambda j: (j.finished_at or 0.0, j.job_id), reverse=True)
        window = active + finished[:self.policy.recent_jobs]
        return [job.summary(now, self.policy.stuck_after_s) for job in sorted(window, key=_order)]

    def page(self, now: float, state: JobState | None, limit: int, after: str | None) -> Page:
        """Jobs newest first, optionally of one state; `after` is the `next_after` of the previous page.

        The cursor names a position in the order (creation time, job id), not a row, so it stays
        valid when the job it came from has been compacted meanwhile.
        """
        if not 1 <= limit <= MAX_PAGE:
            raise BadRequest(f"limit: must be between 1 and {MAX_PAGE}", field="limit")
        position = None if after is None else decode_cursor(after)
        chosen = sorted((job for job in self.jobs.values()
                         if (state is None or job.state is state) and (position is None or _order(job) < position)),
                        key=_order, reverse=True)
        page = chosen[:limit]
        more = len(chosen) > limit
        return Page([self._view(job, now) for job in page], encode_cursor(page[-1]) if more else None)

    # --- internals -------------------------------------------------------------------------
    def _job_type(self, name: str) -> JobType:
        known = self.job_types.names()
        if name not in known:
            raise BadRequest(f"unknown job_type {name!r}; known: {', '.join(known)}", field="job_type", known=known)
        return self.job_types.get(name)

    def _launch(self, job: Job, now: float) -> None:
        """Persist the attempt, then hand it to the runner; a launch the runner refuses fails the attempt."""
        self._save(job)
        try:
            kind = self.job_types.get(job.job_type)
            self.runner.launch(Launch(job.job_id, job.job_type, job.attempt, job.config, kind.num_cpus,
                                      1 if kind.wants_gpu and self.node_gpus > 0 else 0))
        except Exception as exc:  # noqa: BLE001 - whatever the runner raised is the attempt's error
            job.finish(job.attempt, JobState.FAILED, now, error=f"launch failed: {type(exc).__name__}: {exc}")
            self._save(job)

    def _save(self, job: Job) -> None:
        self.store.put(TABLE, job.job_id, job.to_record())

    def _view(self, job: Job, now: float) -> dict[str, Any]:
        return job.view(now, self.policy.stuck_after_s)


def _order(job: Job) -> tuple[float, str]:
    return (job.created_at, job.job_id)


def encode_cursor(job: Job) -> str:
    raw = json.dumps([job.created_at, job.job_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    """The position a `next_after` names; BadRequest naming `after` for anything else."""
    try:
        created_at, job_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if isinstance(created_at, bool) or not isinstance(created_at, (int, float)) or not isinstance(job_id, str) \
                or not math.isfinite(created_at):
            raise ValueError(cursor)
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise BadRequest("after: not a cursor from a previous page's next_after", field="after") from None
    return float(created_at), job_id
