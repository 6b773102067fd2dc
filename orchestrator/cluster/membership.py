"""Membership: who the peers are and whether they are alive, suspect, dead or retired.

Ages are measured on this node's own clock from the moment a heartbeat *arrived*; the
sender's timestamp is recorded but never compared with ours. Every peer is a plain record that
the PeerActor persists on change, so a restarted actor resumes with the same view.

Lifecycle, by silence since the last heartbeat (or since an unretire):
    alive   < peer_timeout_s <= suspect < dead_after_s <= dead
    dead for retire_after_s or longer -> retired, which is sticky: a retired node gets no work and
    takes no part in elections until an operator unretires it.
Ray's own view counts as evidence too: a peer whose Ray node is reported dead is dead at once.

Addresses (where the gateway forwards leader-only calls, bearer token included) are not taken
from heartbeats: a Ray-backed peer's address comes from its own actor (`set_address`, fed by the
PeerActor from that actor's replies), and an HTTP peer's address is where its requests come from,
set when it is first seen and changed only by a re-register from the new address (`http_address`).
"""
from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from orchestrator.errors import BadRequest, Conflict

HOURS_S = 3600.0


class PeerState(str, enum.Enum):
    ALIVE = "alive"
    SUSPECT = "suspect"
    DEAD = "dead"
    RETIRED = "retired"


class ClusterHealth(str, enum.Enum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    CRITICAL = "critical"


@dataclass(frozen=True)
class MembershipConfig:
    peer_timeout_s: float
    dead_after_s: float
    retire_after_s: float


@dataclass
class Peer:
    node_id: str
    host: str = ""
    port: int = 0
    ray_node_id: str | None = None
    first_seen: float = 0.0
    last_heartbeat: float = 0.0  # our clock, when the latest heartbeat arrived
    sender_timestamp: float | None = None
    unretired_at: float | None = None
    retired_at: float | None = None
    ray_dead: bool = False
    resources: dict[str, Any] = field(default_factory=dict)
    jobs: list[dict[str, Any]] = field(default_factory=list)

    def to_record(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> "Peer":
        known = {name: record[name] for name in cls.__dataclass_fields__ if name in record}
        return cls(**known)


class Membership:
    """The peer table of one node. `clock` returns seconds on this node's clock."""

    def __init__(self, self_id: str, config: MembershipConfig, clock: Callable[[], float]) -> None:
        self.self_id = self_id
        self.config = config
        self._clock = clock
        self._peers: dict[str, Peer] = {}

    # --- records -------------------------------------------------------------------------
    def load(self, records: list[dict[str, Any]]) -> None:
        self._peers = {r["node_id"]: Peer.from_record(r) for r in records}

    def get(self, node_id: str) -> Peer | None:
        return self._peers.get(node_id)

    def peers(self) -> list[Peer]:
        return sorted(self._peers.values(), key=lambda p: p.node_id)

    # --- events --------------------------------------------------------------------------
    def heartbeat(self, node_id: str, *, timestamp: float | None = None,
                  resources: dict[str, Any] | None = None, jobs: list[dict[str, Any]] | None = None) -> Peer:
        """`node_id` is alive; its address is not touched (see `set_address`, `http_address`)."""
        peer = self._peer(node_id)
        peer.last_heartbeat = self._clock()
        peer.sender_timestamp = timestamp
        peer.ray_dead = False
        if resources is not None:
            peer.resources = resources
        if jobs is not None:
            peer.jobs = jobs
        return peer

    def _peer(self, node_id: str) -> Peer:
        peer = self._peers.get(node_id)
        if peer is None:
            # Silence counts from first sight, whatever the first news was (an address or a heartbeat).
            now = self._clock()
            peer = self._peers[node_id] = Peer(node_id=node_id, first_seen=now, last_heartbeat=now)
        return peer

    def set_address(self, node_id: str, host: str, port: int, ray_node_id: str | None = None) -> Peer:
        """The address as `node_id` itself reports it (its own actor): trusted, applied as is."""
        peer = self._peer(node_id)
        peer.host, peer.port = host, port
        if ray_node_id:
            peer.ray_node_id = ray_node_id
        return peer

    def http_address(self, node_id: str, *, source: str, claimed_host: str | None, port: int | None,
                     register: bool) -> Peer:
        """An HTTP heartbeat or register from `source` (the address the request came from).

        A Ray-backed peer's address is never set this way (409). The address is `source`, never a
        host the body claims: set on first sight, changed only by a register (400 when the body
        claims another host than it comes from). A plain heartbeat never moves a known address.
        """
        peer = self._peers.get(node_id)
        if peer is not None and peer.ray_node_id:
            raise Conflict(f"{node_id} is a Ray node: its address comes from its own actor", node_id=node_id)
        if register and claimed_host and claimed_host != source:
            raise BadRequest(f"host: {claimed_host!r} is not the address this request comes from ({source})",
                             field="host")
        if peer is None or register or not peer.host:
            peer = self._peer(node_id)
            peer.host = source
            if port:
                peer.port = port
        return peer

    def mark_ray_dead(self, ray_node_ids: set[str]) -> list[Peer]:
        """Peers whose Ray node Ray reports dead; returns those that changed."""
        changed = []
        for peer in self._peers.values():
            dead = peer.node_id != self.self_id and peer.ray_node_id in ray_node_ids
            if dead and not peer.ray_dead:
                peer.ray_dead = True
                changed.append(peer)
        return changed

    def tick(self) -> list[Peer]:
        """Retire peers offline past `retire_after_s`; returns the newly retired."""
        now = self._clock()
        retired = []
        for peer in self._peers.values():
            if (peer.retired_at is None and peer.node_id != self.self_id
                    and self._silence(peer, now) >= self.config.retire_after_s):
                peer.retired_at = now
                retired.append(peer)
        return retired

    def unretire(self, node_id: str) -> Peer:
        peer = self._peers[node_id]
        peer.retired_at = None
        peer.unretired_at = self._clock()
        return peer

    def purge_retired(self) -> list[str]:
        ids = [p.node_id for p in self._peers.values() if p.retired_at is not None and p.node_id != self.self_id]
        for node_id in ids:
            del self._peers[node_id]
        return sorted(ids)

    def purge_stale(self, max_age_s: float) -> list[str]:
        now = self._clock()
        ids = [p.node_id for p in self._peers.values()
               if p.node_id != self.self_id and now - p.last_heartbeat > max_age_s]
        for node_id in ids:
            del self._peers[node_id]
        return sorted(ids)

    # --- views ---------------------------------------------------------------------------
    def _silence(self, peer: Peer, now: float) -> float:
        since = max(peer.last_heartbeat, peer.unretired_at or 0.0)
        return now - since

    def state(self, peer: Peer) -> PeerState:
        if peer.retired_at is not None:
            return PeerState.RETIRED
        if peer.node_id == self.self_id:
            return PeerState.ALIVE
        silence = self._silence(peer, self._clock())
        if peer.ray_dead or silence >= self.config.dead_after_s:
            return PeerState.DEAD
        if silence >= self.config.peer_timeout_s:
            return PeerState.SUSPECT
        return PeerState.ALIVE

    def eligible(self) -> list[str]:
        """Nodes that may get work and take part in elections: everything not retired."""
        return [p.node_id for p in self.peers() if p.retired_at is None]

    def alive(self) -> list[str]:
        return [p.node_id for p in self.peers() if self.state(p) is PeerState.ALIVE]

    def view(self, peer: Peer) -> dict[str, Any]:
        now = self._clock()
        return {
            "node_id": peer.node_id,
            "host": peer.host,
            "port": peer.port,
            "state": self.state(peer).value,
            "seconds_since_heartbeat": round(now - peer.last_heartbeat, 3),
            "resources": peer.resources,
            "running_jobs": [j for j in peer.jobs if j.get("state") in ("pending", "running", "stopping")],
            "is_self": peer.node_id == self.self_id,
            "ray_node_id": peer.ray_node_id,
        }


def cluster_health(peer_states: list[str], leader_id: str | None, stuck_jobs: int) -> ClusterHealth:
    """The documented rule, over non-retired peers:

    critical  no leader is known, or fewer than a strict majority of peers are alive;
    degraded  some peer is suspect or dead, or some job is stuck;
    healthy   otherwise.
    """
    active = [s for s in peer_states if s != PeerState.RETIRED.value]
    alive = sum(1 for s in active if s == PeerState.ALIVE.value)
    if leader_id is None or alive < len(active) // 2 + 1:
        return ClusterHealth.CRITICAL
    if alive < len(active) or stuck_jobs:
        return ClusterHealth.DEGRADED
    return ClusterHealth.HEALTHY
