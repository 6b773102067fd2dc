"""Node settings: command-line flags beat environment variables (`P2P_*`), which beat the
`metadata: orchestrator:` section of `cluster.yaml`, which beats the defaults here.

Every timing carries its unit in its name and is configurable, so tests can run the whole
membership cycle in seconds while production keeps longer windows.
"""
from __future__ import annotations

import os
import socket
from difflib import get_close_matches
from pathlib import Path
from typing import Any, Callable, Iterable, Literal

import yaml
from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

DEFAULT_PORT = 8770
LOOPBACK_HOST = "127.0.0.1"
MAX_BODY_BYTES = 1 << 20
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"
HTTP_URL = r"^https?://[^\s]+$"


ENV_PREFIX = "P2P_"


def check_known(names: Iterable[str], known: Iterable[str], where: str, spell: Callable[[str], str] = str) -> None:
    """A setting nobody reads is refused where it was written, with the nearest real name: a
    misspelt `heartbeat_interval` would otherwise leave the default in force without a word.
    `spell` writes a setting's name as that source does (P2P_HEARTBEAT_INTERVAL_S)."""
    known = list(known)
    unknown = sorted(set(names) - set(known))
    if unknown:
        hints = [spell(name) + "".join(f" (did you mean {spell(m)}?)" for m in get_close_matches(name, known, n=1))
                 for name in unknown]
        raise ValueError(f"{where}: unknown setting{'s' if len(unknown) > 1 else ''}: {', '.join(hints)}")


def load_cluster_metadata(path: Path | None) -> dict[str, Any]:
    """The orchestrator's own section of a Ray cluster-launcher file (Ray ignores `metadata`)."""
    if path is None or not Path(path).is_file():
        return {}
    document = yaml.safe_load(Path(path).read_text()) or {}
    section = (document.get("metadata") or {}).get("orchestrator") or {}
    if not isinstance(section, dict):
        raise ValueError(f"{path}: metadata.orchestrator must be a mapping")
    return section


class _ClusterYamlSource(PydanticBaseSettingsSource):
    def __init__(self, settings_cls: type[BaseSettings], path: Path | None) -> None:
        super().__init__(settings_cls)
        self._values = load_cluster_metadata(path)
        check_known(self._values, settings_cls.model_fields, f"{path}: metadata.orchestrator")

    def get_field_value(self, field, field_name):  # pragma: no cover - __call__ is what pydantic uses
        return self._values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._values)


class Settings(BaseSettings):
    # Unknown fields are refused from every source: keyword arguments (flags) by pydantic, the
    # cluster.yaml section and P2P_* variables by check_known (pydantic-settings reads only the
    # variables it has fields for, so it never sees a misspelt one).
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    node_id: str = Field(default_factory=socket.gethostname, pattern=r"^[A-Za-z0-9._-]{1,64}$")
    port: int = Field(DEFAULT_PORT, ge=1, le=65535)
    host: str | None = None  # bind address; None = loopback without a token, all interfaces with one
    auth_token: str | None = None
    auth_token_file: Path | None = None
    insecure: bool = False  # serve beyond loopback without a token
    advertise_host: str | None = None  # how peers reach this node's gateway
    data_dir: Path = Path("data")
    cluster_config: Path | None = None
    ray_address: str | None = Field(None, validation_alias="RAY_ADDRESS")
    ray_node_ip: str = "127.0.0.2"  # loopback alias: Ray rewrites 127.0.0.1 to the external address
    ray_dashboard: bool = True
    ray_num_cpus: int | None = None
    ray_num_gpus: int | None = None

    heartbeat_interval_s: float = Field(2.0, gt=0)
    peer_timeout_s: float = Field(10.0, gt=0)  # silent this long: suspect
    dead_after_s: float = Field(30.0, gt=0)  # silent this long: dead
    retire_after_s: float = Field(3600.0, gt=0)  # offline this long: retired (sticky)
    stuck_after_s: float = Field(300.0, gt=0)  # a running job silent this long is stuck
    recent_jobs_in_status: int = Field(20, ge=0, le=10_000)  # finished jobs in heartbeats and /status
    job_history_max_age_s: float = Field(7 * 86400.0, gt=0)  # finished jobs older than this are deleted
    restart_suspend_timeout_s: float = Field(120.0, gt=0)  # a restart waits this long for jobs to reach a unit boundary
    view_refresh_s: float = Field(0.5, gt=0)  # how stale the gateway's cached view may be
    actor_call_timeout_s: float = Field(30.0, gt=0)
    # A forwarded leader-only call waits for the leader's answer this long: some do their work before
    # answering (a cluster git update visits every node), and a follower that gave up early would
    # answer 503 while the leader carried on, inviting a retry that collides with the first call.
    forward_timeout_s: float = Field(600.0, gt=0)

    temp_max_age_s: float = Field(3600.0, ge=0)  # *.tmp older than this are removed by /cleanup
    partial_max_age_s: float = Field(86400.0, ge=0)  # *.partial downloads likewise
    data_retention_days: float | None = Field(None, gt=0)  # selfplay data older than this; None keeps all

    voters: list[str] = Field(default_factory=list)  # empty: the peers present when the cluster formed
    lease_ttl_s: float = Field(15.0, gt=0)  # how long a voter's grant lasts, on the voter's clock
    election_timeout_s: float = Field(2.0, gt=0)  # wait for ALIVE answers / one round of lease replies
    max_clock_drift: float = Field(0.05, ge=0, lt=1)  # rate by which two nodes' clocks may differ
    lease_safety_margin_s: float = Field(0.5, ge=0)
    formation_window_s: float = Field(10.0, ge=0)  # how long the first node gathers peers as voters
    fault_injection: bool = False  # test hooks (ElectionActor.isolate) work only with this on
    games: dict[str, str] = Field(default_factory=dict)  # extra board_type -> OpenSpiel game string
    max_body_bytes: int = Field(MAX_BODY_BYTES, gt=0)
    # The board_type whose continuous improvement pipeline `start` launches once a leader is known
    # (idempotent: run id `autostart-<board_type>`); empty or null: none. The test suite sets it empty.
    autostart_pipeline: str | None = "square8"
    # Self-play jobs whose config leaves `served` null: search workers against this node's batched
    # inference servers ("on"), the in-process search ("off"), or served where Ray gives the node a GPU ("auto").
    selfplay_served: Literal["auto", "on", "off"] = "auto"

    # git operations (/git/*): the deployed checkout, fast-forwarded from git_remote/git_branch
    git_repo_dir: Path | None = None  # None: the checkout this code runs from
    git_remote: str = Field("origin", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    git_branch: str = Field("main", pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$")
    git_timeout_s: float = Field(30.0, gt=0)
    # The cluster update waits this long for each updated node to answer /health `ok` on the new commit
    # (a restart included) before it goes on to the next; a node that does not stops the rollout.
    git_rollout_health_timeout_s: float = Field(180.0, gt=0)
    # registries (/registry/*): a provider is configured by naming its command-line tool
    registry_yaml: Path | None = None  # None: <data_dir>/registry.yaml; read at start, written by save_yaml
    vast_cli: str | None = None  # e.g. "vastai"
    aws_cli: str | None = None  # e.g. "aws"
    aws_region: str | None = Field(None, pattern=r"^[a-z0-9-]{1,32}$")
    tailscale_cli: str | None = None  # e.g. "tailscale"
    # ... or by naming where its HTTP API key is (an env var or a file, never the key itself); then
    # the API is used instead of the CLI. The base URLs are settings so a node can go through a proxy.
    vast_api_key_env: str | None = Field(None, pattern=ENV_NAME)  # e.g. "VAST_API_KEY"
    vast_api_key_file: Path | None = None  # e.g. ~/.config/vastai/vast_api_key
    vast_api_url: str = Field("https://console.vast.ai/api/v0", pattern=HTTP_URL)
    tailscale_api_key_env: str | None = Field(None, pattern=ENV_NAME)
    tailscale_api_key_file: Path | None = None
    tailscale_tailnet: str = Field("-", min_length=1, max_length=253)  # "-": the key's own tailnet
    tailscale_api_url: str = Field("https://api.tailscale.com/api/v2", pattern=HTTP_URL)
    aws_access_key_id_env: str | None = Field(None, pattern=ENV_NAME)  # e.g. "AWS_ACCESS_KEY_ID"
    aws_secret_access_key_env: str | None = Field(None, pattern=ENV_NAME)  # e.g. "AWS_SECRET_ACCESS_KEY"
    aws_session_token_env: str | None = Field(None, pattern=ENV_NAME)  # e.g. "AWS_SESSION_TOKEN"
    aws_api_url: str | None = Field(None, pattern=HTTP_URL)  # None: https://ec2.<aws_region>.amazonaws.com
    provider_timeout_s: float = Field(30.0, gt=0)
    probe_timeout_s: float = Field(3.0, gt=0)  # each TCP connect / HTTP round trip of a connectivity probe
    sync_max_concurrent: int = Field(4, ge=1, le=64)  # file transfers at once into this node
    sync_disk_limit_percent: float = Field(95.0, gt=0, le=100)  # a transfer that would fill the disk past this: 507

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings):
        # A field read under another name (ray_address from RAY_ADDRESS) has no P2P_* variable.
        by_env = [name for name, field in settings_cls.model_fields.items() if field.validation_alias is None]
        prefixed = [key[len(ENV_PREFIX):].lower() for key in os.environ if key.upper().startswith(ENV_PREFIX)]
        check_known(prefixed, by_env, "environment", spell=lambda name: ENV_PREFIX + name.upper())
        init_values = init_settings() if callable(init_settings) else {}
        path = init_values.get("cluster_config") or env_settings().get("cluster_config")
        return (init_settings, env_settings, _ClusterYamlSource(settings_cls, path))

    @field_validator("autostart_pipeline")
    @classmethod
    def _empty_is_off(cls, value: str | None) -> str | None:
        return value or None

    @field_validator("auth_token")
    @classmethod
    def _non_empty_token(cls, value: str | None) -> str | None:
        return value or None

    @model_validator(mode="after")
    def _check_timings(self) -> "Settings":
        if not self.peer_timeout_s <= self.dead_after_s <= self.retire_after_s:
            raise ValueError("timings must satisfy peer_timeout_s <= dead_after_s <= retire_after_s")
        return self

    def token(self) -> str | None:
        if self.auth_token:
            return self.auth_token
        if self.auth_token_file:
            return Path(self.auth_token_file).read_text().strip() or None
        return None

    def bind_host(self) -> str:
        """Without a token the gateway serves loopback only, unless explicitly made insecure."""
        if self.host is None:
            return "0.0.0.0" if (self.token() or self.insecure) else LOOPBACK_HOST
        if not (self.token() or self.insecure) and not _is_loopback(self.host):
            raise ValueError(f"refusing to serve {self.host} without an auth token; set one or pass --insecure")
        return self.host

    def node_dir(self) -> Path:
        return Path(self.data_dir).expanduser().resolve()


def _is_loopback(host: str) -> bool:
    return host == "localhost" or host.startswith("127.") or host == "::1"
