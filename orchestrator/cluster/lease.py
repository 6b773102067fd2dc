"""Leader leases, voter side: election timings, and which leader a voter backs, at which epoch, until when.

Pure and sans-IO: every method takes `now`, the caller's monotonic clock in seconds; nothing here
reads a clock, sleeps or does I/O, so the simulation in tests/unit/test_election_sim.py runs
exactly the code that the election actor runs.

Safety rests on two voter rules. A voter backs one lease at a time (a lease is a leader id plus a
lease id; the lease id changes with every incarnation of the leader's process), and it grants a
new lease only at an epoch above every epoch it has granted or seen. Majorities intersect, so two
leases can never both hold a majority, and a new leader's epoch exceeds every earlier leader's.

What survives a failure is `Voter.to_record()`, which the caller must persist, whenever it
changes, before it sends the reply that the change produced:
- `max_epoch`: losing it would let a later leader reuse or go below an earlier leader's epoch.
- the identity of the last grant (leader, lease id, epoch, TTL), but not its expiry, because a
  monotonic reading means nothing after a restart. A restarted voter treats that grant as held
  for a full TTL from the restart (quarantine): its holder may still be acting on it.
Renewals by the same lease change nothing durable, so a steady leader costs no writes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

DEFAULT_LEASE_TTL_S = 15.0
DEFAULT_ELECTION_TIMEOUT_S = 2.0
DEFAULT_RENEW_FRACTION = 1.0 / 3.0
# Relative rate: over any interval, one node's monotonic clock advances at least (1 - drift) times
# as much as any other node's clock.
DEFAULT_MAX_CLOCK_DRIFT = 0.05
DEFAULT_SAFETY_MARGIN_S = 0.5

RECORD_FORMAT = 1
# Epochs are SQLite INTEGERs in the cluster store: a signed 64-bit range, checked wherever one enters.
MAX_EPOCH = 2**63 - 1

# Why a voter refused a lease request (the `reason` field of a refusal).
REFUSED_HELD = "held"
REFUSED_STALE_EPOCH = "stale_epoch"
REFUSED_RETIRED = "retired"
REFUSED_LEADER_NOT_ELIGIBLE = "leader_not_eligible"
REFUSED_NOT_A_VOTER = "not_a_voter"


class MalformedMessage(ValueError):
    """A message from another node that cannot be read; `field` names the offending field."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


@dataclass(frozen=True)
class ElectionConfig:
    """Every election timing, in seconds of each node's own monotonic clock."""

    voters: tuple[str, ...]
    lease_ttl_s: float = DEFAULT_LEASE_TTL_S
    # How long a node waits for ALIVE answers, and how long one round of lease requests may take.
    election_timeout_s: float = DEFAULT_ELECTION_TIMEOUT_S
    renew_fraction: float = DEFAULT_RENEW_FRACTION
    max_clock_drift: float = DEFAULT_MAX_CLOCK_DRIFT
    safety_margin_s: float = DEFAULT_SAFETY_MARGIN_S

    def __post_init__(self) -> None:
        object.__setattr__(self, "voters", tuple(self.voters))
        if not self.voters or len(set(self.voters)) != len(self.voters):
            raise ValueError("voters: needs at least one voter and no duplicates")
        if not all(isinstance(v, str) and v for v in self.voters):
            raise ValueError("voters: node ids must be non-empty strings")
        if not self.lease_ttl_s > 0 or not self.election_timeout_s > 0:
            raise ValueError("lease_ttl_s and election_timeout_s must be positive")
        if not 0 < self.renew_fraction < 1:
            raise ValueError("renew_fraction must be between 0 and 1")
        if not 0 <= self.max_clock_drift < 1:
            raise ValueError("max_clock_drift is a rate in [0, 1)")
        if self.safety_margin_s < 0:
            raise ValueError("safety_margin_s must not be negative")
        # A leader that cannot renew before its own lease runs out would lose office every term.
        if self.leader_lease_s(self.lease_ttl_s) <= self.renew_interval_s + self.election_timeout_s:
            raise ValueError("lease_ttl_s too short for renew_fraction, election_timeout_s, "
                             "max_clock_drift and safety_margin_s")

    @property
    def quorum(self) -> int:
        return len(self.voters) // 2 + 1

    @property
    def renew_interval_s(self) -> float:
        return self.lease_ttl_s * self.renew_fraction

    @property
    def defer_timeout_s(self) -> float:
        """How long a node that deferred to a higher one waits for its coordinator message."""
        return self.lease_ttl_s + 2 * self.election_timeout_s

    def leader_lease_s(self, granted_ttl_s: float) -> float:
        """How long, from sending the request, a leader may count on a grant of `granted_ttl_s`.

        The voter's timer starts when the request arrives, later than the send; the leader's clock
        may run slower than the voter's by the drift rate; the margin covers the gap between
        checking `is_leader` and the action it guards taking effect.
        """
        return granted_ttl_s * (1.0 - self.max_clock_drift) - self.safety_margin_s


@dataclass(frozen=True)
class LeaseRequest:
    leader_id: str
    lease_id: str
    lease_duration: float
    epoch: int

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> "LeaseRequest":
        duration = float_field(payload, "lease_duration")
        if not duration > 0:
            raise MalformedMessage("lease_duration", "must be positive")
        epoch = epoch_field(payload, "epoch", minimum=1)
        return cls(str_field(payload, "leader_id"), str_field(payload, "lease_id"), duration, epoch)

    def to_payload(self) -> dict[str, Any]:
        return {"leader_id": self.leader_id, "lease_id": self.lease_id,
                "lease_duration": self.lease_duration, "epoch": self.epoch}


@dataclass(frozen=True)
class Grant:
    leader_id: str
    lease_id: str
    epoch: int
    ttl_s: float
    expires_at: float  # this voter's monotonic clock; never persisted

    def holds(self, leader_id: str, lease_id: str) -> bool:
        return self.leader_id == leader_id and self.lease_id == lease_id


@dataclass
class Voter:
    """One voter's grant book. `eligible` is the set of nodes that are not retired."""

    voter_id: str
    lease_ttl_s: float
    eligible: frozenset[str]
    max_epoch: int = 0
    grant: Grant | None = None

    def __post_init__(self) -> None:
        self.eligible = frozenset(self.eligible)

    @property
    def retired(self) -> bool:
        return self.voter_id not in self.eligible

    def set_eligible(self, nodes: Iterable[str]) -> None:
        self.eligible = frozenset(nodes)

    def live_grant(self, now: float) -> Grant | None:
        return self.grant if self.grant is not None and now < self.grant.expires_at else None

    def handle_lease(self, payload: Mapping[str, Any], now: float) -> dict[str, Any]:
        """Answer a `lease` request: grant, renew, or refuse with what the requester needs to know."""
        request = LeaseRequest.from_payload(payload)
        if self.retired:
            return self._refusal(REFUSED_RETIRED, now)
        if request.leader_id not in self.eligible:
            return self._refusal(REFUSED_LEADER_NOT_ELIGIBLE, now)
        live = self.live_grant(now)
        same_lease = self.grant is not None and self.grant.holds(request.leader_id, request.lease_id)
        if live is not None and not same_lease:
            return self._refusal(REFUSED_HELD, now)
        # An epoch is granted to one lease only: equal is fine only for that lease renewing it.
        renewing = same_lease and self.grant.epoch == request.epoch
        if request.epoch < self.max_epoch or (request.epoch == self.max_epoch and not renewing):
            return self._refusal(REFUSED_STALE_EPOCH, now)
        ttl_s = min(request.lease_duration, self.lease_ttl_s)
        self.grant = Grant(request.leader_id, request.lease_id, request.epoch, ttl_s, now + ttl_s)
        self.max_epoch = request.epoch
        return {"granted": True, "voter_id": self.voter_id, "lease_ttl_seconds": ttl_s,
                "epoch": request.epoch}

    def observe_epoch(self, epoch: int) -> None:
        """A leader at `epoch` exists: never grant at or below it again (the old leader's renewals too)."""
        if epoch > self.max_epoch:
            self.max_epoch = epoch

    def grant_status(self, now: float) -> dict[str, Any]:
        """The `grant` query: whom this voter backs right now."""
        live = self.live_grant(now)
        if live is None:
            return {"voter_id": self.voter_id, "leader_id": None, "lease_id": None,
                    "epoch": self.max_epoch, "expires_in_s": 0.0, "retired": self.retired}
        return {"voter_id": self.voter_id, "leader_id": live.leader_id, "lease_id": live.lease_id,
                "epoch": live.epoch, "expires_in_s": live.expires_at - now, "retired": self.retired}

    def _refusal(self, reason: str, now: float) -> dict[str, Any]:
        live = self.live_grant(now)
        return {"granted": False, "voter_id": self.voter_id, "reason": reason,
                "holder": live.leader_id if live else None,
                "remaining_s": live.expires_at - now if live else 0.0, "epoch": self.max_epoch}

    def to_record(self) -> dict[str, Any]:
        """The durable part (no expiry in it, so renewals leave it equal and need no write)."""
        grant = None
        if self.grant is not None:
            grant = {"leader_id": self.grant.leader_id, "lease_id": self.grant.lease_id,
                     "epoch": self.grant.epoch, "ttl_s": self.grant.ttl_s}
        return {"voter_id": self.voter_id, "max_epoch": self.max_epoch, "grant": grant}

    @classmethod
    def from_record(cls, record: Mapping[str, Any], lease_ttl_s: float, *, now: float,
                    eligible: Iterable[str]) -> "Voter":
        """Restore after a restart; the last grant is held for a full TTL from `now` (quarantine)."""
        grant = None
        saved = record.get("grant")
        if saved:
            # Its holder counted from before the crash; the configured TTL may have shrunk since.
            ttl_s = max(float(saved["ttl_s"]), lease_ttl_s)
            grant = Grant(str(saved["leader_id"]), str(saved["lease_id"]), int(saved["epoch"]),
                          float(saved["ttl_s"]), now + ttl_s)
        return cls(str(record["voter_id"]), lease_ttl_s, frozenset(eligible),
                   max_epoch=int(record["max_epoch"]), grant=grant)


def str_field(payload: Mapping[str, Any], name: str) -> str:
    value = payload.get(name)
    if not isinstance(value, str) or not value:
        raise MalformedMessage(name, "expected a non-empty string")
    return value


def epoch_field(payload: Mapping[str, Any], name: str, minimum: int = 0) -> int:
    """An epoch in [minimum, MAX_EPOCH]: one out of range could never be stored, and a node that
    accepted it could never register a term again."""
    value = payload.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise MalformedMessage(name, "expected an integer")
    if not minimum <= value <= MAX_EPOCH:
        raise MalformedMessage(name, f"must be between {minimum} and {MAX_EPOCH}")
    return value


def float_field(payload: Mapping[str, Any], name: str) -> float:
    value = payload.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise MalformedMessage(name, "expected a finite number")
    return float(value)
