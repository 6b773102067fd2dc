"""Who registers a trained model, and when: the decision for one training run, as a pure function.

A training job does not write the registry. It trains, saves its checkpoint atomically, reads it
back against its sha256 (`checkpoint_verified`), and ends with the model's record as its result,
which its node's JobSupervisor keeps in SQLite. The registrar then writes that record to the
registry through whichever leader is current, under that leader's epoch, and notes the outcome
on the run. So a run that finishes across a leadership change (a failover, or the same node
re-elected at a higher epoch) is still registered: fencing keeps a *deposed* leader from
writing, not finished work from being recorded.

What survives a failure: everything this decides from is durable (the run in the cluster store,
the job's result in its node's SQLite, the registry), and each step is idempotent by model id,
so a registrar that dies between writing the model and noting the run simply finds the model
registered on its next pass and notes the run then.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from orchestrator.learn.model_records import InvalidModelRecord, ModelRecord

FINISHED_STATES = ("completed", "failed", "stopped", "killed")


@dataclass(frozen=True)
class Register:
    """Write `doc` to the registry under `model_id` (through the current leader), then settle the run."""

    model_id: str
    doc: dict[str, Any]


@dataclass(frozen=True)
class Settle:
    """Note the run's final registration outcome; nothing more will happen to it."""

    registered: bool
    note: str


Step = Register | Settle | None  # None: wait (the job is still going, or cannot be asked right now)


def is_settled(run: Mapping[str, Any]) -> bool:
    return isinstance(run.get("registration"), Mapping)


def registration_step(run: Mapping[str, Any], job: Mapping[str, Any] | None,
                      registered: Mapping[str, Any] | None) -> Step:
    """The next step for `run` (a `training_runs` document), given its job as its JobSupervisor
    shows it (None when that cannot be asked now) and the registry's document under the run's
    model id (None if there is none)."""
    model_id = run["model_id"]
    if registered is not None:
        produced = ((job or {}).get("result") or {}).get("model") or {}
        if produced and produced.get("sha256") != registered.get("sha256"):
            return Settle(False, f"not registered: model id {model_id} already names another model "
                                 f"(sha256 {registered.get('sha256')})")
        return Settle(True, f"registered (model {model_id})")
    if run.get("start_error"):
        return Settle(False, f"not registered: the job never started ({run['start_error']})")
    if job is None or job.get("state") not in FINISHED_STATES:
        return None
    if job["state"] != "completed":
        return Settle(False, f"not registered: the job {job['state']}" + (f" ({job['error']})" if job.get("error")
                                                                           else ""))
    result = job.get("result") or {}
    if result.get("stopped") or not result.get("model"):
        return Settle(False, "not registered: stopped on request, nothing was saved")
    if result.get("checkpoint_verified") is not True:
        return Settle(False, "not registered: the job did not verify its checkpoint")
    try:
        record = ModelRecord.from_dict(result["model"])
    except InvalidModelRecord as bad:
        return Settle(False, f"not registered: the job's model record is invalid ({bad.message})")
    if record.model_id != model_id:
        return Settle(False, f"not registered: the job produced model {record.model_id}, the run expects {model_id}")
    if record.status != "candidate":
        return Settle(False, f"not registered: a new model starts as a candidate, not {record.status}")
    return Register(model_id, record.to_dict())


def settled_run(run: Mapping[str, Any], step: Settle, *, epoch: int, leader_id: str, now: float) -> dict[str, Any]:
    """The run document with its registration outcome noted (written under `epoch` by `leader_id`)."""
    note = step.note if not step.registered else f"registered under epoch {epoch} of {leader_id}"
    return {**run, "registration": {"registered": step.registered, "note": note, "epoch": epoch,
                                    "leader_id": leader_id, "at": now}}
