"""Known hosts per provider (static YAML, the Ray cluster, Vast.ai, AWS, Tailscale) and their parsers.

Each provider's output is parsed by its own function, written against that tool's documented
format: `vastai show instances --raw` (a JSON list of instances; the HTTP API wraps the same list
in `{"instances": [...]}`), `aws ec2 describe-instances --output json` (`Reservations[].Instances[]`),
`tailscale status --json` (`Self` plus the `Peer` map); orchestrator.ops.provider_api reaches the
same providers through their HTTP APIs. The CLIs run from argument lists (never a
shell) with a timeout; nothing from a request reaches their arguments.

What survives a failure: the registry YAML (written atomically by `save_yaml`, read at start)
holds the static hosts and every provider's hosts as of the last save. Refreshes since then are a
cache of the providers themselves, fetched again by the next update.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import yaml

from orchestrator.errors import Unavailable

PROVIDERS = ("static", "ray_cluster", "vast", "aws", "tailscale")
LIVE = "ray_cluster"  # read from the cluster at each status, never saved
REFRESHABLE = ("vast", "aws", "tailscale")
YAML_VERSION = 1


@dataclass(frozen=True)
class Host:
    provider: str
    host_id: str
    name: str
    address: str | None  # where its ports are reachable: public IP, Tailscale IP, private IP
    state: str  # the provider's own word: running, stopped, online, offline, alive, dead...
    ports: dict[str, int] = field(default_factory=dict)  # service -> port at `address` (gateway, ssh)
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"provider": self.provider, "host_id": self.host_id, "name": self.name, "address": self.address,
                "state": self.state, "ports": dict(self.ports), "details": dict(self.details)}

    @classmethod
    def from_dict(cls, provider: str, doc: dict[str, Any]) -> "Host":
        if not isinstance(doc, dict) or not doc.get("host_id"):
            raise ValueError(f"{provider}: every host needs a host_id")
        ports = doc.get("ports") or {}
        if not isinstance(ports, dict) or not all(isinstance(p, int) and 0 < p < 65536 for p in ports.values()):
            raise ValueError(f"{provider}: host {doc['host_id']}: ports must map names to 1..65535")
        return cls(provider=provider, host_id=str(doc["host_id"]), name=str(doc.get("name") or doc["host_id"]),
                   address=doc.get("address"), state=str(doc.get("state") or "configured"),
                   ports={str(k): int(v) for k, v in ports.items()}, details=dict(doc.get("details") or {}))


@dataclass(frozen=True)
class ProviderState:
    hosts: tuple[Host, ...] = ()
    refreshed_at: float | None = None
    error: str | None = None
    error_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"hosts": [h.to_dict() for h in self.hosts], "host_count": len(self.hosts),
                "refreshed_at": self.refreshed_at, "last_error": self.error, "last_error_at": self.error_at}


# --- parsers ---------------------------------------------------------------------------------
def _port(value: Any) -> int | None:
    try:
        port = int(value)
    except (TypeError, ValueError):
        return None
    return port if 0 < port < 65536 else None


def _json(text: str, provider: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{provider}: output is not JSON: {exc}") from None


def parse_vast(text: str, gateway_port: int) -> list[Host]:
    doc = _json(text, "vast")
    instances = doc.get("instances") if isinstance(doc, dict) else doc
    if not isinstance(instances, list):
        raise ValueError("vast: expected a list of instances")
    hosts = []
    for item in instances:
        if not isinstance(item, dict) or item.get("id") is None:
            raise ValueError("vast: every instance needs an id")
        mapped = item.get("ports") or {}
        ports = {}
        for service, inner in (("gateway", gateway_port), ("ssh", 22)):
            bindings = mapped.get(f"{inner}/tcp") if isinstance(mapped, dict) else None
            if bindings and isinstance(bindings, list) and (port := _port(bindings[0].get("HostPort"))):
                ports[service] = port
        hosts.append(Host(
            provider="vast", host_id=f"vast-{item['id']}", name=str(item.get("label") or f"vast-{item['id']}"),
            address=item.get("public_ipaddr") or None, state=str(item.get("actual_status") or "unknown"), ports=ports,
            details={k: item[k] for k in ("gpu_name", "num_gpus", "ssh_host", "ssh_port", "geolocation", "dph_total",
                                          "machine_id", "intended_status") if item.get(k) is not None}))
    return hosts


def parse_aws(text: str, gateway_port: int) -> list[Host]:
    return aws_hosts(_json(text, "aws"), gateway_port)


def aws_hosts(doc: Any, gateway_port: int) -> list[Host]:
    """Hosts from the CLI's JSON, or from the EC2 API's XML read into the same shape."""
    reservations = doc.get("Reservations") if isinstance(doc, dict) else None
    if not isinstance(reservations, list):
        raise ValueError("aws: expected Reservations[]")
    hosts = []
    for reservation in reservations:
        for item in reservation.get("Instances") or []:
            if not isinstance(item, dict) or not item.get("InstanceId"):
                raise ValueError("aws: every instance needs an InstanceId")
            tags = {t.get("Key"): t.get("Value") for t in item.get("Tags") or [] if isinstance(t, dict)}
            address = item.get("PublicIpAddress") or item.get("PrivateIpAddress")
            hosts.append(Host(
                provider="aws", host_id=item["InstanceId"], name=str(tags.get("Name") or item["InstanceId"]),
                address=address, state=str((item.get("State") or {}).get("Name") or "unknown"),
                ports={"gateway": gateway_port, "ssh": 22} if address else {},
                details={"instance_type": item.get("InstanceType"),
                         "availability_zone": (item.get("Placement") or {}).get("AvailabilityZone"),
                         "private_ip": item.get("PrivateIpAddress"), "public_ip": item.get("PublicIpAddress")}))
    return hosts


def parse_tailscale(text: str, gateway_port: int) -> list[Host]:
    doc = _json(text, "tailscale")
    if not isinstance(doc, dict) or not isinstance(doc.get("Peer") or {}, dict):
        raise ValueError("tailscale: expected an object with Self and Peer")
    nodes = ([doc["Self"]] if isinstance(doc.get("Self"), dict) else []) + list((doc.get("Peer") or {}).values())
    hosts = []
    for item in nodes:
        if not isinstance(item, dict) or not (item.get("ID") or item.get("PublicKey")):
            raise ValueError("tailscale: every node needs an ID")
        ips = [ip for ip in item.get("TailscaleIPs") or [] if isinstance(ip, str)]
        address = next((ip for ip in ips if ":" not in ip), ips[0] if ips else None)
        hosts.append(Host(
            provider="tailscale", host_id=str(item.get("ID") or item["PublicKey"]),
            name=str(item.get("HostName") or item.get("DNSName") or item.get("ID")), address=address,
            state="online" if item.get("Online") else "offline", ports={"gateway": gateway_port} if address else {},
            details={"dns_name": item.get("DNSName"), "os": item.get("OS"), "last_seen": item.get("LastSeen"),
                     "tailscale_ips": ips, "is_self": item is doc.get("Self")}))
    return hosts


def parse_ray(nodes: list[dict[str, Any]]) -> list[Host]:
    """`ray.nodes()` entries: NodeID, Alive, NodeManagerAddress, NodeManagerHostname, Resources."""
    return [Host(provider=LIVE, host_id=n["NodeID"], name=n.get("NodeManagerHostname") or n["NodeID"][:12],
                 address=n.get("NodeManagerAddress"), state="alive" if n.get("Alive") else "dead",
                 details={"resources": n.get("Resources") or {}}) for n in nodes]


# --- provider commands -----------------------------------------------------------------------
@dataclass(frozen=True)
class ProviderCommand:
    title: str
    setting: str  # the Settings field that names the executable
    args: tuple[str, ...]
    parse: Callable[[str, int], list[Host]]
    api_settings: str  # what configures its HTTP API instead (orchestrator.ops.provider_api)


COMMANDS = {
    "vast": ProviderCommand("Vast.ai", "vast_cli", ("show", "instances", "--raw"), parse_vast,
                            "vast_api_key_env or vast_api_key_file"),
    "aws": ProviderCommand("AWS", "aws_cli", ("ec2", "describe-instances", "--output", "json"), parse_aws,
                           "aws_access_key_id_env, aws_secret_access_key_env and aws_region"),
    "tailscale": ProviderCommand("Tailscale", "tailscale_cli", ("status", "--json"), parse_tailscale,
                                 "tailscale_api_key_env or tailscale_api_key_file"),
}


def provider_argv(provider: str, executable: str | None, extra: tuple[str, ...] = ()) -> list[str]:
    """The argument list for `provider`, or 503 saying which setting is missing."""
    command = COMMANDS[provider]
    if not executable:
        raise Unavailable(f"{command.title} is not configured: set {command.setting} "
                          f"(P2P_{command.setting.upper()}) to its command-line tool, or {command.api_settings} "
                          f"for its HTTP API", provider=provider, missing=command.setting)
    resolved = shutil.which(executable)
    if resolved is None:
        raise Unavailable(f"{command.title}: {executable!r} is not an executable on this node", provider=provider,
                          missing=command.setting)
    return [resolved, *command.args, *extra]


def run_provider(provider: str, argv: list[str], timeout_s: float, gateway_port: int) -> list[Host]:
    """Run the provider's CLI and parse its output; a failure is a 503 with the tool's message."""
    title = COMMANDS[provider].title
    try:
        done = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise Unavailable(f"{title}: the CLI did not answer within {timeout_s}s", provider=provider) from None
    if done.returncode != 0:
        message = (done.stderr or done.stdout).strip().splitlines()
        raise Unavailable(f"{title}: the CLI exited with {done.returncode}: {message[-1][:300] if message else ''}",
                          provider=provider)
    try:
        return COMMANDS[provider].parse(done.stdout, gateway_port)
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise Unavailable(f"{title}: unexpected output: {exc}", provider=provider) from None


# --- the registry ----------------------------------------------------------------------------
class Registry:
    """Hosts per provider with the last refresh and last error; the Ray provider is read live."""

    def __init__(self, providers: dict[str, ProviderState] | None = None) -> None:
        self._providers = {name: ProviderState() for name in PROVIDERS if name != LIVE}
        self._providers.update(providers or {})

    def hosts(self, provider: str) -> tuple[Host, ...]:
        return self._providers[provider].hosts

    def record(self, provider: str, hosts: list[Host], now: float) -> ProviderState:
        self._providers[provider] = replace(self._providers[provider], hosts=tuple(hosts), refreshed_at=now)
        return self._providers[provider]

    def record_error(self, provider: str, error: str, now: float) -> None:
        self._providers[provider] = replace(self._providers[provider], error=error, error_at=now)

    def refresh(self, provider: str, fetch: Callable[[], list[Host]],
                clock: Callable[[], float] = time.time) -> ProviderState:
        """The provider's hosts become what `fetch` returns; when it fails, the failure is recorded
        as the provider's last error and re-raised, and the hosts it had stay as they were."""
        try:
            hosts = fetch()
        except Exception as exc:
            self.record_error(provider, getattr(exc, "message", str(exc)), clock())
            raise
        return self.record(provider, hosts, clock())

    def status(self, ray_hosts: list[Host], now: float) -> dict[str, Any]:
        providers = {name: state.to_dict() for name, state in self._providers.items()}
        providers[LIVE] = ProviderState(tuple(ray_hosts), refreshed_at=now).to_dict()
        return {name: providers[name] for name in PROVIDERS}

    def to_yaml(self, now: float) -> str:
        doc = {"version": YAML_VERSION, "saved_at": now,
               "providers": {name: {"refreshed_at": s.refreshed_at, "hosts": [h.to_dict() for h in s.hosts]}
                             for name, s in self._providers.items()}}
        return yaml.safe_dump(doc, sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str) -> "Registry":
        """The saved registry; a hand-written file may list only `providers: static: hosts:`."""
        doc = yaml.safe_load(text) or {}
        if not isinstance(doc, dict) or not isinstance(doc.get("providers") or {}, dict):
            raise ValueError("registry YAML: expected a mapping with `providers`")
        providers = {}
        for name, section in (doc.get("providers") or {}).items():
            if name not in PROVIDERS or name == LIVE:
                raise ValueError(f"registry YAML: unknown provider {name!r}")
            section = section or {}
            hosts = tuple(Host.from_dict(name, h) for h in section.get("hosts") or [])
            providers[name] = ProviderState(hosts=hosts, refreshed_at=section.get("refreshed_at"))
        return cls(providers)
