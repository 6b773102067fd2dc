"""Pydantic models of the HTTP API: requests are validated with them and /openapi.json is built from them.

Fields and paths follow the seed document; where its examples use another name for a field, the
model accepts both. Unknown fields are ignored, as the seed's clients send extras.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

NODE_ID = r"^[A-Za-z0-9._-]{1,64}$"
JOB_ID = r"^[A-Za-z0-9._:-]{1,128}$"


class ApiModel(BaseModel):
    model_config = ConfigDict(extra="ignore")


# --- responses -------------------------------------------------------------------------------
class ErrorResponse(ApiModel):
    status: Literal["error"] = "error"
    error: str
    code: int


class HealthResponse(ApiModel):
    status: Literal["ok"] = "ok"
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
class NodeIdRequest(ApiModel):
    node_id: str = Field(pattern=NODE_ID)


class PurgeStaleQuery(ApiModel):
    max_age_hours: float = Field(24.0, gt=0, le=24 * 365, allow_inf_nan=False)


class HeartbeatRequest(ApiModel):
    node_id: str = Field(pattern=NODE_ID)
    timestamp: float | None = Field(None, allow_inf_nan=False)
    jobs: list[dict[str, Any]] = Field(default_factory=list, max_length=10_000)
    resources: dict[str, Any] = Field(default_factory=dict)
    host: str | None = Field(None, max_length=255)
    port: int | None = Field(None, ge=1, le=65535)


class RegisterRequest(HeartbeatRequest):
    pass


class StartJobRequest(ApiModel):
    job_id: str | None = Field(None, pattern=JOB_ID)
    job_type: str = Field(min_length=1, max_length=64)
    config: dict[str, Any] = Field(default_factory=dict)
    epoch: int | None = Field(None, ge=1, description="The sending leader's epoch; a stale one is refused (409)")


class JobIdRequest(ApiModel):
    job_id: str = Field(pattern=JOB_ID)


class CleanupRequest(ApiModel):
    dry_run: bool = False
    temp_max_age_s: float | None = Field(None, ge=0, allow_inf_nan=False)
    partial_max_age_s: float | None = Field(None, ge=0, allow_inf_nan=False)
    retention_days: float | None = Field(None, gt=0, allow_inf_nan=False)


class NodesTableQuery(ApiModel):
    format: Literal["json", "text"] = "json"


# --- self-play -------------------------------------------------------------------------------
class SelfplayStartRequest(ApiModel):
    board_type: str = "square8"
    num_games: int = Field(ge=1, le=1_000_000)
    agent: str | None = None
    model_id: str | None = None
    parallel_games: int = Field(16, ge=1, le=1024)
    seed: int = Field(0, ge=0)
    max_moves: int | None = Field(None, ge=1)
    node_id: str | None = Field(None, pattern=NODE_ID, description="run there; without it the leader picks a node")
    job_id: str | None = Field(None, pattern=JOB_ID)


class ReduceSelfplayRequest(ApiModel):
    target_jobs: int | None = Field(None, ge=0, description="self-play jobs to keep running")
    factor: float | None = Field(None, ge=0, le=1, allow_inf_nan=False, description="fraction of them to keep")


class SelfplayWorkerRequest(ApiModel):
    node_id: str = Field(pattern=NODE_ID)
    capacity: int = Field(ge=0, le=1024, description="self-play jobs this node takes; 0 unregisters it")


class AnalyticsQuery(ApiModel):
    scope: Literal["cluster", "node"] = "cluster"
    raw: bool = Field(False, description="additive tallies instead of figures (what nodes send each other)")


# --- election --------------------------------------------------------------------------------
class ElectionRequest(ApiModel):
    candidate_id: str = Field(pattern=NODE_ID)
    epoch: int = Field(ge=0)


class LeaseRequestBody(ApiModel):
    leader_id: str = Field(pattern=NODE_ID)
    lease_id: str = Field(min_length=1, max_length=128)
    lease_duration: float = Field(gt=0, le=3600, allow_inf_nan=False)
    epoch: int = Field(ge=1)


class CoordinatorRequest(ApiModel):
    leader_id: str = Field(pattern=NODE_ID)
    epoch: int = Field(ge=1)
    lease_id: str | None = Field(None, max_length=128)


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
    quorum: int
