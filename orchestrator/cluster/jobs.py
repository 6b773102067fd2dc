"""The job state machine: one record per job, moved only through the transitions below.

    pending  -> running | stopping | completed | failed | stopped | killed
    running  -> stopping | completed | failed | stopped | killed
    stopping -> completed | failed | stopped | killed
    killed, failed, stopped -> pending   (restart: same job_id, attempt + 1)

A job is identified by `job_id`; starting it again with the same body is the same job, with
another body a conflict. Progress reports carry the attempt that sent them, so a report from an
attempt that was killed and replaced can never move the new attempt. Records are plain dicts
that the JobSupervisor persists on every change.
"""
from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from orchestrator.errors import Conflict


class JobState(str, enum.Enum):
    PENDING = "pending"
    RUNNING = "running"
    STOPPING = "stopping"
    COMPLETED = "completed"
    FAILED = "failed"
    STOPPED = "stopped"
    KILLED = "killed"


ACTIVE = frozenset({JobState.PENDING, JobState.RUNNING, JobState.STOPPING})
FINISHED = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.STOPPED, JobState.KILLED})
RESTARTABLE = frozenset({JobState.FAILED, JobState.STOPPED, JobState.KILLED})

_ALLOWED: dict[JobState, frozenset[JobState]] = {
    JobState.PENDING: frozenset({JobState.RUNNING, JobState.STOPPING} | FINISHED),
    JobState.RUNNING: frozenset({JobState.STOPPING} | FINISHED),
    JobState.STOPPING: FINISHED,
    JobState.COMPLETED: frozenset(),
    JobState.FAILED: frozenset({JobState.PENDING}),
    JobState.STOPPED: frozenset({JobState.PENDING}),
    JobState.KILLED: frozenset({JobState.PENDING}),
}


def body_digest(job_type: str, config: dict[str, Any]) -> str:
    """What makes two start requests 'the same body' (key order does not matter)."""
    canonical = json.dumps({"job_type": job_type, "config": config}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass
class Job:
    job_id: str
    job_type: str
    node_id: str
    config: dict[str, Any]
    digest: str
    created_at: float
    state: JobState = JobState.PENDING
    attempt: int = 1
    progress: dict[str, Any] = field(default_factory=dict)
    started_at: float | None = None
    finished_at: float | None = None
    last_progress_at: float | None = None
    stop_requested: bool = False
    suspended: bool = False  # stopped for a restart of its node: the next supervisor resumes it
    worker_pid: int | None = None
    result: dict[str, Any] | None = None
    error: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def new(cls, job_id: str, job_type: str, node_id: str, config: dict[str, Any], now: float) -> "Job":
        return cls(job_id=job_id, job_type=job_type, node_id=node_id, config=config,
                   digest=body_digest(job_type, config), created_at=now)

    # --- transitions ---------------------------------------------------------------------
    def move(self, target: JobState, now: float, *, error: str | None = None) -> None:
        if target not in _ALLOWED[self.state]:
            raise Conflict(f"job {self.job_id!r} is {self.state.value}; cannot become {target.value}")
        self.history.append({"from": self.state.value, "to": target.value, "at": now, "attempt": self.attempt})
        self.state = target
        if target is JobState.RUNNING and self.started_at is None:
            self.started_at = now
        if target in FINISHED:
            self.finished_at = now
        if error is not None:
            self.error = error

    def report(self, attempt: int, progress: dict[str, Any], now: float, worker_pid: int | None = None) -> bool:
        """Apply a progress report; returns True when the reporter should stop.

        A report from another attempt is ignored and told to stop: that attempt was replaced.
        """
        if attempt != self.attempt or self.state in FINISHED:
            return True
        if self.state is JobState.PENDING:
            self.move(JobState.RUNNING, now)
        self.progress = progress
        self.last_progress_at = now
        self.worker_pid = worker_pid or self.worker_pid
        return self.stop_requested

    def _refuse_if_finished(self, action: str) -> None:
        if self.state in FINISHED:
            raise Conflict(f"cannot {action} job {self.job_id!r}: it is already {self.state.value}",
                           job_id=self.job_id, state=self.state.value)

    def request_stop(self, now: float) -> None:
        self._refuse_if_finished("stop")
        self.stop_requested = True
        if self.state is not JobState.STOPPING:
            self.move(JobState.STOPPING, now)

    def kill(self, now: float, error: str) -> None:
        """End the current attempt as killed; Conflict (naming the state) once the job has finished."""
        self._refuse_if_finished("kill")
        self.move(JobState.KILLED, now, error=error)

    def restart(self, now: float) -> None:
        self.move(JobState.PENDING, now)
        self.attempt += 1
        self.started_at = None
        self.finished_at = None
        self.last_progress_at = None
        self.worker_pid = None
        self.stop_requested = False
        self.suspended = False
        self.result = None
        self.error = None
        self.progress = {}

    def finish(self, attempt: int, outcome: JobState, now: float, *, result: dict[str, Any] | None = None,
               error: str | None = None) -> bool:
        """Record how an attempt ended; ignored (returns False) for a replaced or finished attempt."""
        if attempt != self.attempt or self.state in FINISHED:
            return False
        self.move(outcome, now, error=error)
        self.result = result
        return True

    # --- views ---------------------------------------------------------------------------
    def is_stuck(self, now: float, stuck_after_s: float) -> bool:
        if self.state not in (JobState.RUNNING, JobState.STOPPING):
            return False
        since = self.last_progress_at or self.started_at or self.created_at
        return now - since > stuck_after_s

    def view(self, now: float, stuck_after_s: float) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "job_type": self.job_type,
            "node_id": self.node_id,
            "state": self.state.value,
            "stuck": self.is_stuck(now, stuck_after_s),
            "progress": self.progress,
            "attempt": self.attempt,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "last_progress_at": self.last_progress_at,
            "worker_pid": self.worker_pid,
            "suspended": self.suspended,
            "config": self.config,
            "result": self.result,
            "error": self.error,
        }

    def summary(self, now: float, stuck_after_s: float) -> dict[str, Any]:
        """The compact form that travels in heartbeats."""
        view = self.view(now, stuck_after_s)
        return {key: view[key] for key in ("job_id", "job_type", "node_id", "state", "stuck", "progress",
                                           "attempt", "started_at", "finished_at")}

    def to_record(self) -> dict[str, Any]:
        record = asdict(self)
        record["state"] = self.state.value
        return record

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> "Job":
        known = {name: record[name] for name in cls.__dataclass_fields__ if name in record}
        known["state"] = JobState(known["state"])
        return cls(**known)
