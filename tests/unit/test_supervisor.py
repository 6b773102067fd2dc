"""The supervisor core without Ray: a fake runner, a hand-moved clock and a real SQLite store."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from orchestrator.cluster.job_types import JobType
from orchestrator.cluster.jobs import JobState
from orchestrator.cluster.supervisor import TABLE, JobSupervisorCore, Launch, Outcome, SupervisorPolicy
from orchestrator.errors import BadRequest, Conflict, NotFound
from orchestrator.play.games import GAMES_CONTEXT_KEY, GameCatalog, catalog_in
from orchestrator.store import NodeStore

STUCK_S = 10.0
POLICY = SupervisorPolicy(stuck_after_s=STUCK_S, recent_jobs=3, history_max_age_s=1000.0)
GAMES = GameCatalog.from_settings({"hex7": "hex(board_size=7)"})


class BurnConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seconds: float = Field(1.0, gt=0)
    board_type: str = "tic_tac_toe"

    @field_validator("board_type")
    @classmethod
    def _known(cls, value: str, info: ValidationInfo) -> str:
        catalog_in(info.context).spec(value)
        return value


def _never_run(config: BaseModel, ctx: Any) -> dict[str, Any]:
    raise AssertionError("the core never runs a job itself")


class Catalog:
    def __init__(self) -> None:
        self.kinds = {"burn": JobType("burn", BurnConfig, _never_run, num_cpus=2.0),
                      "gpu_burn": JobType("gpu_burn", BurnConfig, _never_run, wants_gpu=True)}

    def names(self) -> list[str]:
        return sorted(self.kinds)

    def get(self, name: str) -> JobType:
        return self.kinds[name]


@dataclass
class FakeRunner:
    """Records what the core asks for; at each call, notes the job's row as the store holds it then."""
    store: NodeStore
    launches: list[Launch] = field(default_factory=list)
    cancels: list[tuple[str, int]] = field(default_factory=list)
    rows_at_launch: list[dict[str, Any]] = field(default_factory=list)
    rows_at_cancel: list[dict[str, Any]] = field(default_factory=list)
    refuse: bool = False

    def launch(self, launch: Launch) -> None:
        self.rows_at_launch.append(self.store.get(TABLE, launch.job_id))
        if self.refuse:
            raise RuntimeError("no resources")
        self.launches.append(launch)

    def cancel(self, job_id: str, attempt: int) -> None:
        self.rows_at_cancel.append(self.store.get(TABLE, job_id))
        self.cancels.append((job_id, attempt))


@pytest.fixture
def store(tmp_path):
    db = NodeStore(tmp_path / "node.db")
    yield db
    db.close()


def _core(store: NodeStore, policy: SupervisorPolicy = POLICY, gpus: float = 0.0) -> tuple[JobSupervisorCore, FakeRunner]:
    runner = FakeRunner(store)
    return JobSupervisorCore("n1", store, runner, Catalog(), policy, gpus, {GAMES_CONTEXT_KEY: GAMES}), runner


def test_start_is_idempotent_by_job_id_and_persisted_before_launch(store):
    core, runner = _core(store)
    first = core.start("j1", "burn", {"seconds": 2}, now=100.0)
    again = core.start("j1", "burn", {"seconds": 2.0, "board_type": "tic_tac_toe"}, now=101.0)
    assert first["created"] is True and again["created"] is False and again["job"]["created_at"] == 100.0
    assert [(l.job_id, l.attempt, l.num_cpus, l.num_gpus) for l in runner.launches] == [("j1", 1, 2.0, 0)]
    assert runner.rows_at_launch[0]["state"] == "pending" and runner.rows_at_launch[0]["attempt"] == 1
    with pytest.raises(Conflict):
        core.start("j1", "burn", {"seconds": 3}, now=102.0)
    assert len(runner.launches) == 1


def test_start_validates_type_and_config_against_the_game_catalogue(store):
    core, runner = _core(store)
    with pytest.raises(BadRequest) as unknown:
        core.start("j1", "nope", {}, now=1.0)
    assert unknown.value.extra["field"] == "job_type" and "burn" in unknown.value.message
    with pytest.raises(BadRequest) as bad:
        core.start("j1", "burn", {"seconds": -1}, now=1.0)
    assert bad.value.message.startswith("config.seconds: ") and bad.value.extra["field"] == "config.seconds"
    with pytest.raises(BadRequest) as extra:
        core.start("j1", "burn", {"secs": 1}, now=1.0)
    assert extra.value.message == "config.secs: unknown field"
    with pytest.raises(BadRequest) as game:
        core.start("j1", "burn", {"board_type": "hex9"}, now=1.0)
    assert game.value.extra["field"] == "config.board_type" and "hex7" in game.value.message  # names the known ones
    assert core.start("j2", "burn", {"board_type": "hex7"}, now=1.0)["created"]  # a deployment's own game
    assert [launch.job_id for launch in runner.launches] == ["j2"]


def test_gpu_is_asked_for_only_where_the_node_has_one(store):
    with_gpu, runner = _core(store, gpus=1.0)
    with_gpu.start("g", "gpu_burn", {}, now=1.0)
    with_gpu.start("c", "burn", {}, now=1.0)
    assert [launch.num_gpus for launch in runner.launches] == [1, 0]
    without, runner = _core(store, gpus=0.0)
    without.start("g2", "gpu_burn", {}, now=1.0)
    assert runner.launches[0].num_gpus == 0


def test_a_refused_launch_fails_the_attempt(store):
    core, runner = _core(store)
    runner.refuse = True
    view = core.start("j1", "burn", {}, now=1.0)["job"]
    assert view["state"] == "failed" and "no resources" in view["error"]
    assert store.get(TABLE, "j1")["state"] == "failed"


def test_recovery_after_restart_relaunches_running_and_settles_stopping(store):
    core, _ = _core(store)
    for job_id in ("run", "stop", "done", "wait"):
        core.start(job_id, "burn", {}, now=100.0)
    core.report("run", 1, {"done": 1}, 4242, now=101.0)
    core.report("stop", 1, {"done": 1}, 4243, now=101.0)
    core.stop("stop", now=102.0)
    core.report("done", 1, {}, None, now=101.0)
    core.attempt_ended("done", 1, Outcome(JobState.COMPLETED, result={"x": 1}), now=103.0)

    reborn, runner = _core(store)  # a new incarnation over the same SQLite file
    assert sorted(reborn.recover(now=200.0)) == ["run", "wait"]
    assert sorted((l.job_id, l.attempt) for l in runner.launches) == [("run", 2), ("wait", 2)]
    assert all(row["attempt"] == 2 and row["state"] == "pending" for row in runner.rows_at_launch)
    assert reborn.get("stop", 200.0)["state"] == "stopped"
    assert reborn.get("done", 200.0)["state"] == "completed" and reborn.get("done", 200.0)["result"] == {"x": 1}
    assert reborn.recover(now=201.0) == [] and len(runner.launches) == 2  # settled: nothing more to do
    # The old incarnation's task of attempt 1 is told to stop and moves nothing.
    assert reborn.report("run", 1, {"done": 99}, 4242, now=202.0) == (True, False)
    assert reborn.attempt_ended("run", 1, Outcome(JobState.COMPLETED), now=203.0) is False
    assert reborn.get("run", 203.0)["state"] == "pending" and reborn.get("run", 203.0)["progress"] == {}


def test_a_planned_restart_stops_jobs_at_a_unit_boundary_and_the_next_incarnation_resumes_them(store):
    core, runner = _core(store)
    for job_id in ("unit", "late", "asked", "done"):
        core.start(job_id, "burn", {"seconds": 2.0}, now=100.0)
        core.report(job_id, 1, {"done": 1}, None, now=101.0)
    core.stop("asked", now=102.0)  # stopped on request before the restart: it stays stopped
    core.attempt_ended("done", 1, Outcome(JobState.COMPLETED), now=102.0)

    assert sorted(core.suspend(now=103.0)) == ["late", "unit"]
    assert runner.cancels == [], "nothing is killed: each job stops at its next unit boundary"
    assert store.get(TABLE, "unit")["suspended"] is True and store.get(TABLE, "unit")["state"] == "stopping"
    assert core.report("unit", 1, {"done": 2}, None, now=104.0) == (True, True)  # told to stop at the boundary
    core.attempt_ended("unit", 1, Outcome(JobState.STOPPED, result={"games": 2}), now=105.0)
    assert core.suspending() == ["late"]  # still inside a unit when the restart goes ahead

    reborn, relaunched = _core(store)
    assert sorted(reborn.recover(now=200.0)) == ["late", "unit"]
    assert sorted((l.job_id, l.attempt, l.config["seconds"]) for l in relaunched.launches) == \
        [("late", 2, 2.0), ("unit", 2, 2.0)]
    assert all(row["state"] == "pending" and row["suspended"] is False for row in relaunched.rows_at_launch)
    ends = {row["job_id"]: [(h["from"], h["to"]) for h in row["history"] if h["attempt"] == 1][-2:]
            for row in relaunched.rows_at_launch}
    assert ends == {"unit": [("stopping", "stopped"), ("stopped", "pending")],  # at its boundary
                    "late": [("stopping", "failed"), ("failed", "pending")]}  # died inside a unit
    assert reborn.get("asked", 200.0)["state"] == "stopped" and reborn.get("done", 200.0)["state"] == "completed"
    assert reborn.suspending() == [] and reborn.recover(now=201.0) == []


def test_stuck_job_is_killed_and_relaunched_as_the_next_attempt(store):
    core, runner = _core(store)
    core.start("j1", "burn", {}, now=100.0)
    core.report("j1", 1, {"done": 1}, 7, now=101.0)
    assert core.restart_stuck(now=101.0 + STUCK_S - 1) == []
    assert core.get("j1", 101.0 + STUCK_S + 1)["stuck"] is True
    restarted = core.restart_stuck(now=101.0 + STUCK_S + 1)
    assert [(view["job_id"], view["attempt"], view["state"]) for view in restarted] == [("j1", 2, "pending")]
    assert runner.cancels == [("j1", 1)] and [(l.job_id, l.attempt) for l in runner.launches] == [("j1", 1), ("j1", 2)]
    assert runner.rows_at_cancel[0]["attempt"] == 2  # the new attempt was saved before the old one was cancelled
    # Stale-attempt reports and endings: told to stop, change nothing.
    assert core.report("j1", 1, {"done": 5}, 7, now=120.0) == (True, False)
    assert core.attempt_ended("j1", 1, Outcome(JobState.KILLED, error="killed"), now=120.0) is False
    assert core.report("j1", 2, {"done": 1}, 8, now=121.0) == (False, True)
    assert core.get("j1", 121.0)["state"] == "running" and core.get("j1", 121.0)["attempt"] == 2


def test_kill_is_saved_before_the_task_is_cancelled(store):
    core, runner = _core(store)
    core.start("j1", "burn", {}, now=1.0)
    assert core.kill("j1", now=2.0)["state"] == "killed"
    assert runner.cancels == [("j1", 1)] and runner.rows_at_cancel[0]["state"] == "killed"
    assert core.attempt_ended("j1", 1, Outcome(JobState.KILLED, error="killed"), now=3.0) is False


@pytest.mark.parametrize("ending", [JobState.COMPLETED, JobState.FAILED, JobState.STOPPED])
def test_stop_or_kill_of_a_finished_job_is_a_conflict_naming_its_state(store, ending):
    core, runner = _core(store)
    core.start("j1", "burn", {}, now=1.0)
    core.attempt_ended("j1", 1, Outcome(ending), now=2.0)
    for action in (core.stop, core.kill):
        with pytest.raises(Conflict) as refused:
            action("j1", now=3.0)
        assert refused.value.extra["state"] == ending.value and ending.value in refused.value.message
    assert runner.cancels == []
    with pytest.raises(NotFound):
        core.stop("nope", now=3.0)


def _finished_jobs(core: JobSupervisorCore, count: int, start: float = 100.0, prefix: str = "f") -> list[str]:
    ids = []
    for i in range(count):
        job_id = f"{prefix}{i:02d}"
        core.start(job_id, "burn", {}, now=start + i)
        core.kill(job_id, now=start + i + 0.5)
        ids.append(job_id)
    return ids


def test_summaries_carry_active_jobs_and_a_bounded_recent_window(store):
    core, _ = _core(store)
    finished = _finished_jobs(core, 30)
    for job_id in ("a1", "a2"):
        core.start(job_id, "burn", {}, now=50.0)  # active, and older than every finished one
    window = core.summaries(now=500.0)
    assert [j["job_id"] for j in window] == ["a1", "a2", *finished[-POLICY.recent_jobs:]]
    assert all("config" not in j and "result" not in j for j in window)


def test_pages_walk_every_job_newest_first_without_repeats(store):
    core, _ = _core(store)
    finished = _finished_jobs(core, 25)
    core.start("live", "burn", {}, now=1000.0)
    seen, after = [], None
    while True:
        page = core.page(2000.0, None, 10, after)
        seen += [view["job_id"] for view in page.jobs]
        if page.next_after is None:
            break
        after = page.next_after
    assert seen == ["live", *reversed(finished)]
    killed = core.page(2000.0, JobState.KILLED, 1000, None)
    assert len(killed.jobs) == 25 and killed.next_after is None
    assert [v["job_id"] for v in core.page(2000.0, JobState.PENDING, 10, None).jobs] == ["live"]


def test_a_cursor_survives_compaction_of_the_job_it_came_from(store):
    core, _ = _core(store)
    finished = _finished_jobs(core, 6)
    first = core.page(500.0, None, 3, None)
    core.forget([first.jobs[-1]["job_id"]])
    rest = core.page(500.0, None, 10, first.next_after)
    assert [v["job_id"] for v in rest.jobs] == list(reversed(finished[:3]))


@pytest.mark.parametrize("cursor", ["x", "not-base64!!", "W10", "WzEsMiwzXQ", "eyJhIjoxfQ", "WyJhIiwiYiJd",
                                    "W05hTiwiYSJd"])
def test_bad_cursors_and_limits_are_400s_naming_the_field(store, cursor):
    core, _ = _core(store)
    _finished_jobs(core, 2)
    with pytest.raises(BadRequest) as bad:
        core.page(500.0, None, 10, cursor)
    assert bad.value.extra["field"] == "after"
    for limit in (0, 1001):
        with pytest.raises(BadRequest) as bad_limit:
            core.page(500.0, None, limit, None)
        assert bad_limit.value.extra["field"] == "limit"


def test_compaction_deletes_old_finished_jobs_from_store_and_memory(store):
    policy = SupervisorPolicy(stuck_after_s=STUCK_S, recent_jobs=3, history_max_age_s=100.0)
    core, _ = _core(store, policy)
    old = _finished_jobs(core, 3, start=0.0)  # finished at 0.5, 1.5, 2.5
    young = _finished_jobs(core, 2, start=50.0, prefix="y")
    core.start("active", "burn", {}, now=0.0)  # as old as any, but never compacted while active
    assert core.expired(now=101.0) == old[:1]
    expired = core.expired(now=110.0)
    assert expired == old
    core.forget(expired + ["active", "unknown"])
    assert sorted(core.jobs) == sorted([*young, "active"])
    reborn, _ = _core(store, policy)
    assert sorted(reborn.jobs) == sorted([*young, "active"])
    with pytest.raises(NotFound):
        reborn.get(old[0], 110.0)
