"""Pydantic models of the HTTP API: requests are validated with them and /openapi.json is built from them.

Fields and paths follow the seed document; where its examples use another name for a field, the
model accepts both. Every request (`RequestModel`), a message between nodes (heartbeat, register,
election, lease, coordinator) included, refuses an unknown field with a 400 naming it, so a
misspelt or unsupported setting is never silently ignored (`x-unknown-fields: reject` in
/openapi.json). Responses (`ApiModel`) only describe what the gateway sends, for /openapi.json;
nothing validates them here.
A request that configures a job is built from that job's config (`job_request`), so each of its
fields is defined once, in the config that reads it.
"""
from __future__ import annotations

from copy import copy
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, create_model

from orchestrator.cluster.jobs import JobState
from orchestrator.learn.jobs import NNUEJobConfig, PolicyValueJobConfig
from orchestrator.play.selfplay import SelfplayConfig

NODE_ID = r"^[A-Za-z0-9._-]{1,64}$"
JOB_ID = r"^[A-Za-z0-9._:-]{1,128}$"
INT64_MAX = 2**63 - 1  # counters and epochs from outside: SQLite's INTEGER holds no more


class ApiModel(BaseModel):
    """Responses, as /openapi.json documents them; a client should ignore fields it does not know
    (they grow between versions)."""


class RequestModel(BaseModel):
    """Every request body or query, a peer's messages included: an unknown field is a 400 that names it."""
    model_config = ConfigDict(extra="forbid")


class JobRequest(RequestModel):
    """A request carrying a job config's fields; `job_fields()` is what is sent on to the config."""
    job_field_names: ClassVar[frozenset[str]] = frozenset()

    def job_fields(self) -> dict[str, Any]:
        """The config fields the client set; the config's own defaults apply to the rest."""
        return self.model_dump(include=set(self.job_field_names), exclude_unset=True)


def job_request(name: str, *configs: type[BaseModel], set_by_leader: frozenset[str] = frozenset()) -> type[JobRequest]:
    """A request base carrying every field of `configs` (but those the leader sets) with the config's
    own type, default, bounds and description. The config validates again when the job is built
    (its validators need the node's game catalogue), so the config stays the one definition."""
    fields: dict[str, Any] = {}
    for config in configs:
        for field, info in config.model_fields.items():
            if field not in set_by_leader:
                fields.setdefault(field, (info.annotation, copy(info)))
    base = create_model(name, __base__=JobRequest, **fields)
    base.job_field_names = frozenset(fields)
    return base


# --- responses -------------------------------------------------------------------------------
class ErrorResponse(ApiModel):
    status: Literal["error"] = "error"
    error: str
    code: int


class HealthResponse(ApiModel):
    status: Literal["ok", "degraded", "unavailable"] = Field(description="by `health_rule`")
    reasons: list[str] = Field(description="why the status is not ok; empty when it is")
    health_rule: str
    node_id: str
    uptime_seconds: float
    is_leader: bool
    leader_id: str | None = None
    version: str
    view_age_s: float = Field(description="How old the cached cluster view behind this answer is")


class PeerView(ApiModel):
    node_id: str
    host: str
    port: int
    state: Literal["alive", "suspect", "dead", "retired"]
    seconds_since_heartbeat: float
    resources: dict[str, Any]
    running_jobs: list[dict[str, Any]]
    is_self: bool


class JobView(ApiModel):
    job_id: str
    job_type: str
    node_id: str
    state: Literal["pending", "running", "stopping", "completed", "failed", "stopped", "killed"]
    stuck: bool
    progress: dict[str, Any]
    attempt: int
    started_at: float | None
    finished_at: float | None


class StatusResponse(ApiModel):
    node_id: str
    is_leader: bool
    leader_id: str | None
    peers: list[PeerView]
    jobs: list[JobView]
    cluster_health: Literal["healthy", "degraded", "critical"]
    cluster_health_rule: str


class RootResponse(ApiModel):
    name: str
    version: str
    node_id: str
    links: dict[str, str]


class ActionResponse(ApiModel):
    status: Literal["success"] = "success"
    message: str | None = None


class PurgeResponse(ApiModel):
    status: Literal["success"] = "success"
    purged_count: int
    purged_nodes: list[str]


class JobResponse(ApiModel):
    status: Literal["success"] = "success"
    job_id: str
    created: bool | None = None
    job: dict[str, Any]


class JobsListResponse(ApiModel):
    status: Literal["success"] = "success"
    restarted_count: int
    jobs: list[dict[str, Any]]


class CleanupResponse(ApiModel):
    status: Literal["success"] = "success"
    dry_run: bool
    files_removed: int
    bytes_freed: int
    files: list[str]


class NodesTableResponse(ApiModel):
    nodes: list[dict[str, Any]]


# --- requests --------------------------------------------------------------------------------
class NodeIdRequest(RequestModel):
    node_id: str = Field(pattern=NODE_ID)


class PurgeStaleQuery(RequestModel):
    max_age_hours: float = Field(24.0, gt=0, le=24 * 365, allow_inf_nan=False)


class HeartbeatRequest(RequestModel):
    node_id: str = Field(pattern=NODE_ID)
    timestamp: float | None = Field(None, allow_inf_nan=False)
    jobs: list[dict[str, Any]] = Field(default_factory=list, max_length=10_000)
    resources: dict[str, Any] = Field(default_factory=dict)
    host: str | None = Field(None, max_length=255, description="if given, the address this request comes from "
                             "(a /register from elsewhere is a 400); a peer's address is its requests' source")
    port: int | None = Field(None, ge=1, le=65535, description="set when the peer is first seen or re-registers")


class RegisterRequest(HeartbeatRequest):
    pass


class StartJobRequest(RequestModel):
    job_id: str | None = Field(None, pattern=JOB_ID)
    job_type: str = Field(min_length=1, max_length=64)
    config: dict[str, Any] = Field(default_factory=dict)
    epoch: int | None = Field(None, ge=1, le=INT64_MAX, description="The sending leader's epoch; a stale one is refused (409)")


class JobIdRequest(RequestModel):
    job_id: str = Field(pattern=JOB_ID)


JobStateName = Literal[tuple(state.value for state in JobState)]  # inline enum: query parameters carry no $defs


class JobsQuery(RequestModel):
    state: JobStateName | None = Field(None, description="only jobs in this state")
    limit: int = Field(100, ge=1, le=1000, description="at most this many jobs, newest first")
    after: str | None = Field(None, min_length=1, max_length=256,
                              description="cursor: the previous page's next_after (a position, not a job id)")
    node_id: str | None = Field(None, pattern=NODE_ID, description="whose jobs; default this node")


class JobsPageResponse(ApiModel):
    status: Literal["success"] = "success"
    node_id: str
    jobs: list[dict[str, Any]]
    next_after: str | None = Field(description="pass as after for the next page; null on the last page")


class CleanupRequest(RequestModel):
    dry_run: bool = False
    temp_max_age_s: float | None = Field(None, ge=0, allow_inf_nan=False)
    partial_max_age_s: float | None = Field(None, ge=0, allow_inf_nan=False)
    retention_days: float | None = Field(None, gt=0, allow_inf_nan=False)


class NodesTableQuery(RequestModel):
    format: Literal["json", "text"] = "json"


# --- self-play -------------------------------------------------------------------------------
class SelfplayStartRequest(job_request("SelfplayJobFields", SelfplayConfig)):
    """Every field of the self-play job's config, plus where to run it and the job's id."""

    node_id: str | None = Field(None, pattern=NODE_ID, description="run there; without it the leader picks a node")
    job_id: str | None = Field(None, pattern=JOB_ID)


class ReduceSelfplayRequest(RequestModel):
    target_jobs: int | None = Field(None, ge=0, le=INT64_MAX, description="self-play jobs to keep running")
    factor: float | None = Field(None, ge=0, le=1, allow_inf_nan=False, description="fraction of them to keep")


class SelfplayWorkerRequest(RequestModel):
    node_id: str = Field(pattern=NODE_ID)
    capacity: int = Field(ge=0, le=1024, description="self-play jobs this node takes; 0 unregisters it")


class AnalyticsQuery(RequestModel):
    scope: Literal["cluster", "node"] = "cluster"
    raw: bool = Field(False, description="additive tallies instead of figures (what nodes send each other)")


# --- election --------------------------------------------------------------------------------
class ElectionRequest(RequestModel):
    candidate_id: str = Field(pattern=NODE_ID)
    epoch: int = Field(ge=0, le=INT64_MAX, strict=True)


class LeaseRequestBody(RequestModel):
    leader_id: str = Field(pattern=NODE_ID)
    lease_id: str = Field(min_length=1, max_length=128)
    lease_duration: float = Field(gt=0, le=3600, allow_inf_nan=False)
    epoch: int = Field(ge=1, le=INT64_MAX, strict=True)


class CoordinatorRequest(RequestModel):
    """Accepted only from a known voter or peer, and for a new leadership only with an epoch the
    cluster store registered for that leader (409 otherwise)."""
    leader_id: str = Field(pattern=NODE_ID)
    epoch: int = Field(ge=1, le=INT64_MAX, strict=True)
    lease_id: str | None = Field(None, max_length=128)


class VotersChangeRequest(RequestModel):
    """A voter change for a cluster whose voters were recorded when it formed (leader only)."""
    add: list[Annotated[str, Field(pattern=NODE_ID)]] = Field(default_factory=list, max_length=64,
                                                              description="node ids of live Ray-backed peers")
    remove: list[Annotated[str, Field(pattern=NODE_ID)]] = Field(default_factory=list, max_length=64)


class VotersResponse(ApiModel):
    status: Literal["success"] = "success"
    voters: list[str]
    version: int
    changed: bool


class ElectionAnswer(ApiModel):
    response: Literal["ALIVE", "OK"]
    node_id: str


class LeaseGranted(ApiModel):
    granted: Literal[True]
    voter_id: str
    lease_ttl_seconds: float
    epoch: int


class GrantStatus(ApiModel):
    voter_id: str
    leader_id: str | None
    lease_id: str | None
    epoch: int
    expires_in_s: float


class ElectionStatus(ApiModel):
    node_id: str
    role: str
    is_leader: bool
    leader_id: str | None
    epoch: int
    highest_epoch: int
    voters: list[str]
    voters_version: int | None = Field(None, description="None: configured voters; else the recorded set's version")
    quorum: int


# --- training / cmaes ------------------------------------------------------------------------
RUN_ID = r"^[A-Za-z0-9._-]{1,96}$"
FiniteNumber = Annotated[float, Field(strict=True, allow_inf_nan=False)]


TRAINING_SET_BY_LEADER = frozenset({"model_id", "epoch", "leader_id"})


class TrainingStartRequest(job_request("TrainingJobFields", PolicyValueJobConfig, NNUEJobConfig,
                                       set_by_leader=TRAINING_SET_BY_LEADER)):
    """Every field of both trainers' configs; one meant for the other kind (`hidden` for a
    policy_value run) is refused by the chosen config with a 400 naming it."""

    model_kind: Literal["policy_value", "nnue"] = "policy_value"
    node_id: str | None = Field(None, pattern=NODE_ID, description="train there; without it the leader picks a node")
    run_id: str | None = Field(None, pattern=RUN_ID, description="the same run_id and body again is the same run")


class TrainingStartResponse(ApiModel):
    status: Literal["success"] = "success"
    run_id: str
    node_id: str
    job_id: str
    model_id: str
    created: bool


class TrainingRunQuery(RequestModel):
    run_id: str | None = Field(None, pattern=RUN_ID)


class TrainingUpdateRequest(RequestModel):
    run_id: str = Field(pattern=RUN_ID)
    step: int = Field(ge=0, le=INT64_MAX, strict=True)
    metrics: dict[str, FiniteNumber] = Field(min_length=1, max_length=64, description="finite numbers by name")


class TrainingMetricsQuery(RequestModel):
    run_id: str | None = Field(None, pattern=RUN_ID)
    max_points: int = Field(200, ge=1, le=10_000, description="per run, evenly spaced, first and last kept")


class ModelsQuery(RequestModel):
    board_type: str | None = None
    kind: Literal["policy_value", "nnue", "agent_params"] | None = None
    status: Literal["candidate", "best", "archived", "rolled_back"] | None = None


class CMAESStartRequest(RequestModel):
    """Ranges are checked by the CMA-ES run's config; its errors name these fields."""

    run_id: str | None = Field(None, pattern=RUN_ID)
    board_type: str = "square8"
    agent: str = Field("heuristic", description="heuristic (its weights), mcts_<sims> or gumbel_<sims> (search constants)")
    params: dict[str, list[float]] = Field(description="{name: [low, high]}")
    baseline: str = "random"
    popsize: int | None = None
    sigma0: float = Field(0.25, description="initial step, as a fraction of each parameter's range")
    games_per_eval: int = Field(20, ge=2, validation_alias=AliasChoices("games_per_eval", "games_per_candidate"),
                                description="paired games per candidate (colours swapped within a pair)")
    generations: int
    seed: int = 0
    initial: dict[str, float] | None = None
    opening_plies: int = 4
    external_workers: bool = Field(False, description="evaluations come only from POST /cmaes/evaluate")
    eval_timeout_s: float = Field(600.0, gt=0, le=7 * 86400, allow_inf_nan=False,
                                  description="an evaluation not back by then is dispatched again")


Count = Annotated[int, Field(ge=0, le=2**63 - 1, strict=True)]


class CMAESEvaluateRequest(RequestModel):
    """An external worker's evaluation, taken only by a run started with external_workers: true
    (409 otherwise): exactly the run's games_per_eval games, as wins/draws/losses that sum to it."""

    run_id: str = Field(pattern=RUN_ID)
    generation: Count
    candidate_id: str = Field(min_length=1, max_length=200)
    games: Count = Field(description="must equal the run's games_per_eval")
    wins: Count
    draws: Count
    losses: Count
    fitness: FiniteNumber | None = Field(None, description="optional; if sent, must equal (wins + draws/2) / games")


class CMAESRunQuery(RequestModel):
    run_id: str | None = Field(None, pattern=RUN_ID)


class CMAESResultRequest(RequestModel):
    run_id: str = Field(pattern=RUN_ID)
    force: bool = Field(False, description="finalise a run that is still going (it stops)")
