"""The improvement cycle and the continuous pipeline, as a pure state machine.

A run is one document: its request, its home node and its cycles. `advance(run, world, now)`
looks at what the shell observed (jobs, A/B tests, the board's ledger, model records) and
returns the run as it should now be stored plus the actions to take. The shell stores the run
*before* acting, and every action is idempotent by its id (job ids, test ids, ledger event ids
are derived from the run), so a crash between storing and acting, or a new leader repeating its
predecessor's last step, starts nothing twice. Whatever an action needs (an agent, a parent
model, the commissioning epoch) is fixed in the stored cycle when the phase begins, so a repeated
action always carries the same body.

A cycle: selfplay (a job of `games_per_cycle` games on the home node, played by the board's best
network under `selfplay.search`, or by `selfplay.bootstrap_agent` while no trained network is
best) -> training (a `training` job on the home node over its newest games, starting from the best
network's weights) -> gating (SPRT A/B test of the candidate against the best) -> promote or
discard -> after a promotion, the non-regression SPRT against the best it replaced, which rolls
back by itself when it fails. A board_type without any best gets an untrained network of the
training architecture (same seed as a fresh training run) as its first best, so the first
candidate must beat exactly the network it started from.

`improvement` runs its cycles one after another. `pipeline` overlaps them: as soon as a cycle's
self-play is done the next cycle's self-play starts (with the best of that moment), so self-play
never waits for training or gating; training starts every `games_per_cycle` new games, once the
previous cycle has been decided, so it always continues from the newest best.

Everything lives on the home node (self-play files, checkpoints), because training reads that
node's games and a network loads from that node's data directory.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

from pydantic import AliasChoices, Field, ValidationInfo, field_validator, model_validator

from orchestrator.errors import BadRequest, Conflict, NotFound
from orchestrator.learn import gating as gates
from orchestrator.learn.jobs import NODE_ID, PolicyValueJobConfig
from orchestrator.models import RequestModel
from orchestrator.play.agents import parse_agent
from orchestrator.play.games import DEFAULT_BOARD_TYPE, catalog_in
from orchestrator.play.selfplay import job_directory

RUNS_KIND = "improvement_runs"
MAX_ATTEMPTS = 3  # a phase whose job fails this many times fails its cycle and the run
UNREACHABLE = "unreachable"
TERMINAL_CYCLE = ("done", "failed", "cancelled")
PIPELINE_SET = ("board_type", "model_id", "epoch", "leader_id", "parent")
RUN_ID = r"^[A-Za-z0-9._-]{1,64}$"


# -- requests ----------------------------------------------------------------------------------

class TrainingOptions(PolicyValueJobConfig, RequestModel):
    """The training job's own config fields, less those the pipeline sets for each cycle."""

    @model_validator(mode="before")
    @classmethod
    def _not_pipeline_fields(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            for name in PIPELINE_SET:
                if name in data:
                    raise ValueError(f"{name} is set by the pipeline for each cycle")
        return data

    def job_fields(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude=set(PIPELINE_SET))


class SelfplayOptions(RequestModel):
    bootstrap_agent: str = Field("mcts_8", description="plays self-play while no trained network is best")
    search: str = Field("mcts_8", description="the search the best network drives in self-play")
    parallel_games: int = Field(64, ge=1, le=1024)
    max_moves: int | None = Field(None, ge=1, le=100_000)
    temperature_moves: int | None = Field(None, ge=0, le=100_000)
    nodes: Literal["here", "all"] = Field(
        "all", description="all: each cycle's self-play job also plays on every other alive node "
                           "(its records still land on the home node)")

    @field_validator("bootstrap_agent")
    @classmethod
    def _no_model(cls, value: str) -> str:
        spec = parse_agent(value)
        if spec.model_id is not None:
            raise ValueError("the bootstrap agent cannot name a model")
        return spec.name

    @field_validator("search")
    @classmethod
    def _a_search(cls, value: str) -> str:
        spec = parse_agent(value)
        if spec.model_id is not None or spec.kind in ("random", "heuristic"):
            raise ValueError("must be a search a network can drive, without a model")
        return spec.name


class ImprovementRequest(RequestModel):
    run_id: str | None = Field(None, pattern=RUN_ID, description="the same run_id and body again is the same run")
    board_type: str = DEFAULT_BOARD_TYPE
    cycles: int = Field(1, ge=1, le=10_000)
    games_per_cycle: int = Field(256, ge=1, le=1_000_000, validation_alias=AliasChoices(
        "games_per_cycle", "train_every_games"))
    node_id: str | None = Field(None, pattern=NODE_ID, description="home node; default: chosen by the leader")
    training: TrainingOptions = Field(default_factory=TrainingOptions)
    gating: gates.GatingConfig = Field(default_factory=gates.GatingConfig)
    selfplay: SelfplayOptions = Field(default_factory=SelfplayOptions)
    seed: int = Field(0, ge=0, le=2**31 - 1, description="self-play seeds derive from it")

    @field_validator("board_type")
    @classmethod
    def _known_game(cls, value: str, info: ValidationInfo) -> str:
        spec = catalog_in(info.context).spec(value)
        if spec.num_players != 2:
            raise ValueError("gating plays two-player A/B tests; this game has "
                             f"{spec.num_players} players")
        return value

    def stored(self) -> dict[str, Any]:
        """The request as a run keeps it (and compares it, for an idempotent retry)."""
        return {**self.model_dump(mode="json"), "training": self.training.job_fields()}


class PipelineRequest(ImprovementRequest):
    cycles: int | None = Field(None, ge=1, le=10_000, description="stop after this many cycles; null: run until stopped")


# -- what the shell observed and what it should do ------------------------------------------------

@dataclass(frozen=True)
class World:
    ledger: Mapping[str, Any]  # the run's board_type ledger (orchestrator.learn.gating)
    epoch: int  # the current leadership
    leader_id: str
    jobs: Mapping[str, Any] = field(default_factory=dict)  # job id -> job view, None (unknown) or UNREACHABLE
    tests: Mapping[str, Any] = field(default_factory=dict)  # test id -> abtest status or None
    models: Mapping[str, Any] = field(default_factory=dict)  # model id (of `model_ids`) -> registry doc or None


@dataclass(frozen=True)
class StartJob:
    job_id: str
    job_type: str
    config: dict[str, Any]
    epoch: int


@dataclass(frozen=True)
class StopJob:
    job_id: str


@dataclass(frozen=True)
class InitBaseline:
    """Write an untrained network into the home node's data directory, register it, make it best."""
    event_id: str
    model_id: str
    board_type: str
    data_dir: str
    blocks: int | None
    channels: int | None
    seed: int


@dataclass(frozen=True)
class StartTest:
    test_id: str
    spec: dict[str, Any]


@dataclass(frozen=True)
class RegisterModel:
    """Write a finished training job's verified model record to the registry (if absent)."""
    model_id: str
    doc: dict[str, Any]


@dataclass(frozen=True)
class StopTest:
    test_id: str


@dataclass(frozen=True)
class LedgerEvent:
    """Apply one ledger change (gates.promote / record_check / rollback) under `event_id`."""
    kind: str  # "promote", "check", "rollback"
    event_id: str
    model_id: str
    reason: str
    evidence: dict[str, Any]


@dataclass(frozen=True)
class Archive:
    model_id: str


Action = StartJob | StopJob | InitBaseline | RegisterModel | StartTest | StopTest | LedgerEvent | Archive


# -- runs ----------------------------------------------------------------------------------------

def new_run(run_id: str, mode: Literal["improvement", "pipeline"], request: Mapping[str, Any], node_id: str,
            now: float) -> dict[str, Any]:
    return {"run_id": run_id, "mode": mode, "request": dict(request), "node_id": node_id, "state": "running",
            "created_at": now, "finished_at": None, "error": None, "data_dir": None, "cycles": []}


def _cycle(run: Mapping[str, Any], ledger: Mapping[str, Any], now: float) -> dict[str, Any]:
    index = len(run["cycles"]) + 1
    request = run["request"]
    best = ledger["best"]
    agent = gates.model_agent(best, request["selfplay"]["search"]) if best else request["selfplay"]["bootstrap_agent"]
    return {"cycle_id": f"{run['run_id']}-c{index}", "index": index, "phase": "selfplay", "started_at": now,
            "finished_at": None, "selfplay_agent": agent, "selfplay_attempt": 1, "games": 0,
            "training_attempt": 0, "training_epoch": None, "training_leader": None, "parent": None,
            "candidate": None, "loss": None, "gating_attempt": 0, "baseline": None, "gating": None,
            "regression": None, "decision": None, "outcome": None, "elo_delta": None, "note": None}


def selfplay_job_id(cycle: Mapping[str, Any]) -> str:
    return f"{cycle['cycle_id']}-selfplay-{cycle['selfplay_attempt']}"


def training_job_id(cycle: Mapping[str, Any]) -> str:
    return f"{cycle['cycle_id']}-train-{cycle['training_attempt']}"


def candidate_id(cycle: Mapping[str, Any]) -> str:
    return f"{cycle['cycle_id']}-{cycle['training_attempt']}"


def gating_test_id(cycle: Mapping[str, Any]) -> str:
    return f"{cycle['cycle_id']}-gate-{cycle['gating_attempt']}"


def regression_test_id(cycle: Mapping[str, Any]) -> str:
    return f"{cycle['cycle_id']}-regress"


def baseline_model_id(run: Mapping[str, Any]) -> str:
    return f"{run['run_id']}-untrained"


def job_ids(run: Mapping[str, Any]) -> list[str]:
    """The jobs whose state `advance` needs (the current job of each live cycle)."""
    ids = []
    for cycle in run["cycles"]:
        if cycle["phase"] == "selfplay":
            ids.append(selfplay_job_id(cycle))
        elif cycle["phase"] == "training":
            ids.append(training_job_id(cycle))
    return ids


def test_ids(run: Mapping[str, Any]) -> list[str]:
    ids = []
    for cycle in run["cycles"]:
        if cycle["phase"] == "gating":
            ids.append(gating_test_id(cycle))
        elif cycle["phase"] == "regression":
            ids.append(regression_test_id(cycle))
    return ids


def model_ids(run: Mapping[str, Any]) -> list[str]:
    """The registry records `advance` needs: the candidates of cycles in training."""
    return [candidate_id(c) for c in run["cycles"] if c["phase"] == "training" and c["training_attempt"]]


def advance(run: Mapping[str, Any], world: World, now: float) -> tuple[dict[str, Any], list[Action]]:
    """The run as it should be stored now, and what to do (see the module docstring)."""
    run = {**run, "cycles": [dict(c) for c in run["cycles"]]}
    actions: list[Action] = []
    if run["state"] != "running":
        return run, actions
    if not run["cycles"]:
        run["cycles"].append(_cycle(run, world.ledger, now))  # its job starts in the loop below
    for position, cycle in enumerate(run["cycles"]):
        earlier_done = all(c["phase"] in TERMINAL_CYCLE for c in run["cycles"][:position])
        step = _STEPS.get(cycle["phase"])
        if step is not None:
            actions += step(run, cycle, world, now, earlier_done)
        if cycle["phase"] == "failed":
            run.update(state="failed", finished_at=now, error=f"cycle {cycle['cycle_id']}: {cycle['note']}")
            return run, actions + _stop_all(run)
    if world.ledger["best"] is None and run["data_dir"] is not None:
        training = run["request"]["training"]
        actions.append(InitBaseline(f"{run['run_id']}:initial", baseline_model_id(run), run["request"]["board_type"],
                                    run["data_dir"], training.get("blocks"), training.get("channels"),
                                    training["seed"]))
    return run, actions + _next_cycle(run, world, now)


def _next_cycle(run: dict[str, Any], world: World, now: float) -> list[Action]:
    cycles = run["cycles"]
    limit = run["request"]["cycles"]
    last = cycles[-1]
    if run["mode"] == "improvement":
        ready = last["phase"] in TERMINAL_CYCLE
    else:  # the pipeline: self-play of the next cycle starts as soon as the last one's is done
        ready = last["phase"] != "selfplay"
    if limit is not None and len(cycles) >= limit:
        if all(c["phase"] in TERMINAL_CYCLE for c in cycles):
            run.update(state="finished", finished_at=now)
        return []
    if not ready:
        return []
    cycles.append(_cycle(run, world.ledger, now))
    return _selfplay(run, cycles[-1], world, now, earlier_done=False)


def _selfplay(run, cycle, world: World, now: float, earlier_done: bool) -> list[Action]:
    request = run["request"]
    job_id = selfplay_job_id(cycle)
    job = world.jobs.get(job_id)
    options = request["selfplay"]
    config = {"board_type": request["board_type"], "agent": cycle["selfplay_agent"],
              "num_games": request["games_per_cycle"], "parallel_games": options["parallel_games"],
              "seed": (request["seed"] * 1_000_003 + cycle["index"]) % 2**63,
              **{k: options[k] for k in ("max_moves", "temperature_moves", "nodes") if options.get(k) is not None}}
    if job is None:
        return [StartJob(job_id, "selfplay", config, world.epoch)]
    if job == UNREACHABLE:
        cycle["note"] = f"home node unreachable; waiting for job {job_id}"
        return []
    cycle["games"] = int((job.get("progress") or {}).get("games_done", 0))
    if job["state"] == "completed":
        directory = (job.get("result") or {}).get("directory")
        if directory and run["data_dir"] is None:
            run["data_dir"] = str(data_dir_of(directory, request["board_type"], job_id))
        cycle.update(phase="queued", note=None)
        return _queued(run, cycle, world, now, earlier_done)
    if job["state"] in ("failed", "killed", "stopped"):
        _retry(cycle, "selfplay", now, f"self-play job {job_id} {job['state']}: {job.get('error')}")
        return _selfplay(run, cycle, world, now, earlier_done) if cycle["phase"] == "selfplay" else []
    return []


def data_dir_of(directory: str, board_type: str, job_id: str) -> Path:
    """The data directory a self-play job wrote into, from the job directory it reported."""
    path = Path(directory)
    root = path.parents[2]
    if job_directory(root, board_type, job_id) != path:
        raise ValueError(f"{directory} is not the job directory of {job_id}")
    return root


def _retry(cycle: dict[str, Any], phase: str, now: float, why: str) -> None:
    """The next attempt of the phase (a new job id), or the cycle fails after MAX_ATTEMPTS."""
    key = f"{phase}_attempt"
    if cycle[key] >= MAX_ATTEMPTS:
        cycle.update(phase="failed", finished_at=now, note=why, outcome="failed")
        return
    cycle[key] += 1
    if phase == "training":
        cycle.update(training_epoch=None)  # commissioned afresh under the leadership of the moment
    cycle["note"] = f"retrying: {why}"


def _queued(run, cycle, world: World, now: float, earlier_done: bool) -> list[Action]:
    if not earlier_done:
        return []
    if any(c["phase"] == "queued" for c in run["cycles"][cycle["index"]:]):
        # The pipeline's self-play ran ahead: one training over the newest window covers these games too.
        cycle.update(phase="done", outcome="merged", finished_at=now,
                     note="its games are in the training window of a later cycle")
        return []
    # Training continues from the best network (a fresh run's first best is the untrained network
    # that a parentless run with the same seed starts from anyway).
    cycle.update(phase="training", training_attempt=1, parent=world.ledger["best"], training_epoch=None)
    return _training(run, cycle, world, now, earlier_done)


def _training(run, cycle, world: World, now: float, earlier_done: bool) -> list[Action]:
    request = run["request"]
    job_id = training_job_id(cycle)
    job = world.jobs.get(job_id)
    if job is None and cycle["training_epoch"] not in (None, world.epoch):
        # Commissioned by a leadership that ended before its job started: a new attempt under ours.
        cycle.update(training_attempt=cycle["training_attempt"] + 1, training_epoch=None)
        job_id = training_job_id(cycle)
    if job is None and cycle["training_epoch"] is None:
        cycle.update(training_epoch=world.epoch, training_leader=world.leader_id)
    if job is None:
        config = {**request["training"], "board_type": request["board_type"], "model_id": candidate_id(cycle),
                  "epoch": cycle["training_epoch"], "leader_id": cycle["training_leader"],
                  **({"parent": cycle["parent"]} if cycle["parent"] else {})}
        return [StartJob(job_id, "training", config, cycle["training_epoch"])]
    if job == UNREACHABLE:
        cycle["note"] = f"home node unreachable; waiting for job {job_id}"
        return []
    if job["state"] == "completed":
        result = job.get("result") or {}
        produced = result.get("model") or {}
        registered = world.models.get(result.get("model_id"))
        if not result.get("registered") and result.get("checkpoint_verified") and produced \
                and (registered or {}).get("sha256") != produced.get("sha256"):
            if registered is None:
                # Finished, verified, but refused registration (its commissioning leader was
                # deposed meanwhile): recorded under the current leader instead of trained again.
                cycle["note"] = f"registering {result['model_id']}: {result.get('registration')}"
                return [RegisterModel(result["model_id"], produced)]
            _retry(cycle, "training", now, f"model id {result['model_id']} names another model")
            return _training(run, cycle, world, now, earlier_done) if cycle["phase"] == "training" else []
        if not result.get("registered") and registered is None:
            _retry(cycle, "training", now, f"model not registered: {result.get('registration')}")
            return _training(run, cycle, world, now, earlier_done) if cycle["phase"] == "training" else []
        metrics = (result.get("model") or {}).get("metrics") or {}
        cycle.update(candidate=result["model_id"], loss=metrics.get("final_loss"), note=None)
        return _enter_gating(run, cycle, world, now)
    if job["state"] in ("failed", "killed", "stopped"):
        _retry(cycle, "training", now, f"training job {job_id} {job['state']}: {job.get('error')}")
        return _training(run, cycle, world, now, earlier_done) if cycle["phase"] == "training" else []
    return []


def _enter_gating(run, cycle, world: World, now: float) -> list[Action]:
    if world.ledger["best"] is None:
        cycle.update(phase="gating_wait", note="waiting for the board's first best (the untrained baseline)")
        return []
    cycle.update(phase="gating", gating_attempt=cycle["gating_attempt"] + 1, baseline=world.ledger["best"],
                 gating=None, note=None)
    return _gating(run, cycle, world, now, True)


def _gating_wait(run, cycle, world: World, now: float, earlier_done: bool) -> list[Action]:
    return _enter_gating(run, cycle, world, now) if world.ledger["best"] is not None else []


def _spec(run, cycle, regression: bool) -> dict[str, Any]:
    config = gates.GatingConfig.model_validate(run["request"]["gating"])
    opponent = cycle["baseline"]
    test_id = regression_test_id(cycle) if regression else gating_test_id(cycle)
    return config.abtest_spec(test_id, run["request"]["board_type"], gates.model_agent(cycle["candidate"], config.search),
                              gates.model_agent(opponent, config.search), regression)


def _gating(run, cycle, world: World, now: float, earlier_done: bool) -> list[Action]:
    spec = _spec(run, cycle, regression=False)
    status = world.tests.get(spec["test_id"])
    if status is None:
        return [StartTest(spec["test_id"], spec)]
    proof = gates.evidence(spec["test_id"], spec, status)
    cycle["gating"] = proof
    if _test_failed(cycle, spec["test_id"], status, now):
        return []
    verdict = gates.promotion_verdict(status)
    if verdict.action == "wait":
        return []
    cycle.update(decision=verdict.action, elo_delta=status.get("elo"), note=verdict.reason)
    if verdict.action == "discard":
        cycle.update(phase="done", outcome="discarded", finished_at=now)
        return [Archive(cycle["candidate"])]
    event_id = f"{cycle['cycle_id']}:promote"
    if gates.has_event(world.ledger, event_id):
        cycle.update(phase="regression", regression=None)
        return _regression(run, cycle, world, now, True)
    if world.ledger["best"] != cycle["baseline"]:
        # The best changed while the test ran (a rollback, another run): test against the new best.
        return _enter_gating(run, cycle, world, now)
    return [LedgerEvent("promote", event_id, cycle["candidate"], verdict.reason, proof)]


def _test_failed(cycle: dict[str, Any], test_id: str, status: Mapping[str, Any], now: float) -> bool:
    """An A/B test that could not play its games decides nothing: the cycle fails, saying why."""
    if status.get("state") != "failed":
        return False
    errors = status.get("errors") or []
    cycle.update(phase="failed", outcome="failed", finished_at=now,
                 note=f"A/B test {test_id} failed: {errors[-1] if errors else 'no games could be played'}")
    return True


def _regression(run, cycle, world: World, now: float, earlier_done: bool) -> list[Action]:
    spec = _spec(run, cycle, regression=True)
    status = world.tests.get(spec["test_id"])
    if status is None:
        return [StartTest(spec["test_id"], spec)]
    proof = gates.evidence(spec["test_id"], spec, status)
    cycle["regression"] = proof
    if _test_failed(cycle, spec["test_id"], status, now):
        return []
    verdict = gates.regression_verdict(status)
    if verdict.action == "wait":
        return []
    if verdict.action == "keep":
        event_id = f"{cycle['cycle_id']}:non_regression"
        if gates.has_event(world.ledger, event_id):
            cycle.update(phase="done", outcome="promoted", finished_at=now, note=verdict.reason)
            return []
        return [LedgerEvent("check", event_id, cycle["candidate"], verdict.reason, proof)]
    event_id = f"{cycle['cycle_id']}:rollback"
    if gates.has_event(world.ledger, event_id):
        cycle.update(phase="done", outcome="rolled_back", finished_at=now, note=verdict.reason)
        return []
    if world.ledger["best"] != cycle["candidate"]:
        cycle.update(phase="done", outcome="superseded", finished_at=now,
                     note=f"{verdict.reason}; but the best is already {world.ledger['best']}")
        return []
    return [LedgerEvent("rollback", event_id, cycle["baseline"], verdict.reason, proof)]


PHASE_ORDER = ("selfplay", "queued", "training", "gating_wait", "gating", "regression", "done")
_STEPS = {"selfplay": _selfplay, "queued": _queued, "training": _training, "gating_wait": _gating_wait,
          "gating": _gating, "regression": _regression}


# -- reports from outside, and stopping ----------------------------------------------------------

def complete_phase(run: Mapping[str, Any], cycle_id: str, phase: str, result: Mapping[str, Any],
                   models: Mapping[str, Any], now: float) -> tuple[dict[str, Any], list[Action]]:
    """A phase worker reports that a phase is done (a phase worker's report).

    selfplay: `{"games": n}` (the games are in the home node's data directory); training:
    `{"model_id": id, "loss"?: x}` for a registered model of the run's board_type. Gating is
    decided by its SPRT on the cluster, never reported. Reporting a phase the cycle has already
    left is a no-op (a retried report); reporting one it has not reached is a conflict."""
    run = {**run, "cycles": [dict(c) for c in run["cycles"]]}
    cycle = next((c for c in run["cycles"] if c["cycle_id"] == cycle_id), None)
    if cycle is None:
        raise NotFound(f"unknown cycle {cycle_id!r}", cycle_id=cycle_id)
    if phase not in ("selfplay", "training"):
        raise BadRequest(f"phase: {phase!r} cannot be reported; only selfplay and training are (gating is "
                         "decided by its SPRT)", field="phase")
    current = cycle["phase"]
    if current in TERMINAL_CYCLE or PHASE_ORDER.index(current) > PHASE_ORDER.index(phase):
        return run, []
    if current != phase:
        raise Conflict(f"cycle {cycle_id} is in phase {current}, not {phase}", cycle_id=cycle_id, phase=current)
    if phase == "selfplay":
        games = result.get("games")
        if isinstance(games, bool) or not isinstance(games, int) or not 0 <= games <= 2**63 - 1:
            raise BadRequest("result.games: an integer count of the games played (0..2**63-1)", field="result.games")
        stop = selfplay_job_id(cycle)
        cycle.update(phase="queued", games=games, note="self-play reported complete")
        return run, [StopJob(stop)]
    model_id = result.get("model_id")
    doc = models.get(model_id) if isinstance(model_id, str) else None
    if doc is None or doc.get("board_type") != run["request"]["board_type"]:
        raise BadRequest(f"result.model_id: {model_id!r} is not a registered model of {run['request']['board_type']}",
                         field="result.model_id")
    loss = result.get("loss")
    stop = training_job_id(cycle)
    # gating_wait: the next `advance` starts the test against the best of that moment.
    cycle.update(phase="gating_wait", candidate=model_id, loss=loss if isinstance(loss, (int, float)) else None,
                 note="training reported complete")
    return run, [StopJob(stop)]


def _stop_all(run: Mapping[str, Any]) -> list[Action]:
    return [StopJob(job_id) for job_id in job_ids(run)] + [StopTest(test_id) for test_id in test_ids(run)]


def cancel(run: Mapping[str, Any], now: float, state: str = "cancelled",
           error: str | None = None) -> tuple[dict[str, Any], list[Action]]:
    """Stop a running run (its jobs and A/B tests); `state` "failed" with the `error` when an action
    was refused for good (an A/B test whose agents cannot play, say), so it does not spin."""
    if run["state"] != "running":
        return dict(run), []
    stops = _stop_all(run)
    cycles = [{**c, "phase": "cancelled", "finished_at": now} if c["phase"] not in TERMINAL_CYCLE else dict(c)
              for c in run["cycles"]]
    return {**run, "cycles": cycles, "state": state, "finished_at": now, "error": error}, stops


# -- views ------------------------------------------------------------------------------------

def cycle_view(cycle: Mapping[str, Any], now: float) -> dict[str, Any]:
    end = cycle["finished_at"] if cycle["finished_at"] is not None else now
    gate = cycle["gating"] or {}
    return {"cycle_id": cycle["cycle_id"], "index": cycle["index"], "phase": cycle["phase"],
            "outcome": cycle["outcome"], "games": cycle["games"], "loss": cycle["loss"],
            "candidate": cycle["candidate"], "baseline": cycle["baseline"], "selfplay_agent": cycle["selfplay_agent"],
            "gating_llr": gate.get("llr"), "gating_bounds": [gate.get("lower_bound"), gate.get("upper_bound")],
            "gating_games": gate.get("games"), "decision": cycle["decision"], "elo_delta": cycle["elo_delta"],
            "regression": cycle["regression"], "started_at": cycle["started_at"], "finished_at": cycle["finished_at"],
            "duration_s": end - cycle["started_at"], "note": cycle["note"]}


def run_view(run: Mapping[str, Any], now: float) -> dict[str, Any]:
    cycles = run["cycles"]
    done = sum(1 for c in cycles if c["phase"] in TERMINAL_CYCLE)
    current = next((c for c in cycles if c["phase"] not in TERMINAL_CYCLE), None)
    elapsed = (run["finished_at"] or now) - run["created_at"]
    total = run["request"]["cycles"]
    rate = done / elapsed if elapsed > 0 else 0.0
    return {"run_id": run["run_id"], "mode": run["mode"], "state": run["state"], "board_type": run["request"]["board_type"],
            "node_id": run["node_id"], "cycles_done": done, "cycles_total": total,
            "phase": current["phase"] if current else None, "current_cycle": current["cycle_id"] if current else None,
            "promotions": sum(1 for c in cycles if c["outcome"] == "promoted"),
            "rollbacks": sum(1 for c in cycles if c["outcome"] == "rolled_back"),
            "discards": sum(1 for c in cycles if c["outcome"] == "discarded"),
            "games": sum(c["games"] for c in cycles), "cycles_per_hour": rate * 3600,
            "eta_s": (total - done) / rate if total is not None and rate > 0 and run["state"] == "running" else None,
            "created_at": run["created_at"], "finished_at": run["finished_at"], "error": run["error"],
            "request": run["request"]}
