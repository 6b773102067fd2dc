"""One node's election brain: Bully decides who stands, voter leases decide who leads.

Sans-IO. Every input takes `now` (this node's monotonic clock, seconds) and returns a `Ready`:
what to persist, the term to register with the cluster store, the messages to send and the reply
to give, in that order (etcd raft's `Ready`: state is saved before the messages that depend on it
leave). The caller delivers each message, hands the answer back through `on_response`, passes
requests from peers to `on_request`, and calls `tick` often (a tenth of the renew interval is
plenty). A lost answer is simply never handed back: rounds end on timeouts. A message that cannot
be read raises `MalformedMessage`, which names the field.

How a node comes to lead:
1. It sees no valid leader: no coordinator message within `lease_ttl_s`, or none yet after
   listening for one renew interval since it started.
2. Bully: it sends `election` to the eligible nodes ranked above it (a higher node id string ranks
   higher). One answering ALIVE takes over; this node then waits `defer_timeout_s` for a
   coordinator message, after which it stands anyway, so a higher node that can answer but cannot
   win does not block the cluster forever.
3. It asks every eligible voter for a lease at an epoch above every epoch it has seen. With grants
   from a strict majority of the configured voters it leads, until the quorum-th latest of its
   per-voter expiries. Each expiry counts from when the request was *sent* and is shrunk by the
   drift rate and a safety margin (`ElectionConfig.leader_lease_s`), so it ends before the grant
   ends at the voter. A refusal that names a higher-ranked holder makes it defer; one that shows
   an epoch at or above its own makes it retry above that epoch; one that names a lower holder
   makes it retry when that grant runs out.
4. The caller registers the new term's epoch with the cluster store before it sends the first
   announcement (`Ready.term_epoch`); a refusal ends it unacted (`term_refused`).
5. As leader it renews every `renew_interval_s` and announces `coordinator` to every eligible peer
   at each renewal, which is also how followers know that the leader lives. A follower accepts an
   announcement only from a known voter or eligible peer, and a new leadership only when the
   caller vouches that the store registered that epoch for that leader (`term_registered`).
A leader steps down when its leases lapse, when it sees a higher epoch anywhere (a coordinator
message, a lease refusal, a refused coordinator message, `observe_epoch` for a refused command),
or when it is retired. Leadership that has lapsed never resumes: the next term has a new epoch.

What survives a failure is `to_record()`, handed out in `Ready.record` whenever it changes; the
caller persists it before it sends what the call returned, answers the request, or acts as
leader: the accepted epoch and its leader (so `epoch` never goes backwards), the highest epoch
seen (so the next proposal goes above it), and this node's voter record (see `lease.py`).
Leadership itself does not survive: a restarted node starts as a follower with a new lease id, so
its old grants block it like anyone else's. Neither does a voter change: the caller feeds the
voter set it reads from the store (`set_voters`), which ends any leadership or campaign under the
old set.
"""
from __future__ import annotations

import enum
import math
import uuid
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Mapping

from orchestrator.cluster.lease import (MAX_EPOCH, REFUSED_HELD, REFUSED_NOT_A_VOTER, REFUSED_STALE_EPOCH,
                                        ElectionConfig, LeaseRequest, MalformedMessage, Voter, epoch_field,
                                        float_field, str_field)

ELECTION = "election"
LEASE = "lease"
GRANT = "grant"
COORDINATOR = "coordinator"
MESSAGE_KINDS = (ELECTION, LEASE, GRANT, COORDINATOR)

ALIVE = "ALIVE"  # the answering node ranks higher, is eligible, and takes over the candidacy
OK = "OK"  # the answering node will not stand above the candidate

# Why a coordinator announcement was refused (the `reason` field of a refusal).
REFUSED_STALE = "stale_epoch"
REFUSED_UNKNOWN_LEADER = "unknown_leader"
REFUSED_UNREGISTERED = "unregistered_epoch"

RECORD_FORMAT = 1


class Role(str, enum.Enum):
    FOLLOWER = "follower"
    ELECTING = "electing"  # waiting for ALIVE answers from higher-ranked nodes
    DEFERRING = "deferring"  # a higher-ranked node took over; waiting for its coordinator message
    CANDIDATE = "candidate"  # asking voters for leases
    LEADER = "leader"


@dataclass(frozen=True)
class Outgoing:
    request_id: str
    destination: str
    kind: str
    payload: dict[str, Any]


@dataclass(frozen=True)
class Ready:
    """What one input produced, in the order the caller must act on it:
    1. persist `record` (None: unchanged) before anything below leaves this node;
    2. register `term_epoch` (None: no new term) with the cluster store; if the store refuses or
       cannot answer, feed that back through `term_refused` and drop `messages`, which announce
       that term;
    3. send `messages` and give `reply` (the answer to a peer's request; None for other inputs).
    """

    record: dict[str, Any] | None = None
    term_epoch: int | None = None
    messages: tuple[Outgoing, ...] = ()
    reply: dict[str, Any] | None = None


@dataclass(frozen=True)
class Term:
    """One leadership, in this node's monotonic clock: valid in [start, end)."""

    epoch: int
    start: float
    end: float


@dataclass(frozen=True)
class _Pending:
    kind: str
    destination: str
    sent_at: float
    tag: int  # the campaign's epoch for lease and coordinator requests, the round for election requests


@dataclass
class _Campaign:
    """The leases sought or held at one epoch, by this node's one lease id."""

    epoch: int
    expiries: dict[str, float] = field(default_factory=dict)  # voter -> our clock
    round_sent_at: float = -math.inf
    round_open: bool = False
    awaiting: set[str] = field(default_factory=set)
    next_round_at: float | None = None
    superseded: bool = False  # some voter will never grant this epoch
    defer_to: str | None = None
    blocked_for_s: float | None = None  # soonest that a refusing voter's grant runs out
    term_start: float | None = None

    def valid_until(self, quorum: int) -> float:
        """Until when `quorum` voters still back us: the quorum-th latest expiry."""
        ordered = sorted(self.expiries.values(), reverse=True)
        return ordered[quorum - 1] if len(ordered) >= quorum else -math.inf


class ElectionNode:
    """The election state of `node_id`; it embeds its `Voter` when it is a configured voter."""

    def __init__(self, node_id: str, config: ElectionConfig, *, eligible: Iterable[str], now: float,
                 lease_id: str | None = None, voter: Voter | None = None, epoch: int = 0,
                 epoch_leader: str | None = None, highest_epoch: int = 0) -> None:
        self.node_id = node_id
        self.config = config
        self._eligible = frozenset(eligible)
        # Unique per process incarnation: voters treat another incarnation as another holder.
        self.lease_id = lease_id or uuid.uuid4().hex
        if voter is None and node_id in config.voters:
            voter = Voter(node_id, config.lease_ttl_s, self._eligible)
        self._voter = voter
        self._epoch = epoch
        self._epoch_leader = epoch_leader
        self._highest_epoch = max(highest_epoch, epoch)
        self._role = Role.FOLLOWER
        self._leader_id: str | None = None
        self._trusted_until: float | None = None
        # A sitting leader announces every renew interval; listening that long first spares it a
        # needless challenge from a node that just (re)started.
        self._listen_until = now + config.renew_interval_s
        self._deadline = math.inf
        self._election_round = 0
        self._awaiting_election: set[str] = set()
        self._campaign: _Campaign | None = None
        self._pending: dict[str, _Pending] = {}
        self._request_counter = 0
        self._finished_terms: list[Term] = []
        self._handed_record: dict[str, Any] | None = None  # the record in the last Ready
        self._new_term: int | None = None  # won, not yet handed out for registration

    # ----------------------------------------------------------------- views

    @property
    def role(self) -> Role:
        return self._role

    @property
    def epoch(self) -> int:
        """Epoch of the leadership this node last accepted (its own or a coordinator's); never decreases."""
        return self._epoch

    @property
    def highest_epoch(self) -> int:
        return self._highest_epoch

    @property
    def leader_id(self) -> str | None:
        return self._leader_id

    @property
    def eligible(self) -> frozenset[str]:
        return self._eligible

    @property
    def voter(self) -> Voter | None:
        return self._voter

    def is_leader(self, now: float) -> bool:
        return self._role is Role.LEADER and now < self._campaign.valid_until(self.config.quorum)

    @property
    def leader_valid_until(self) -> float | None:
        """Our clock: when our own leadership ends unless renewed, or, on a follower, when it stops
        trusting the leader it last heard from. None when no leader is known."""
        if self._role is Role.LEADER:
            return self._campaign.valid_until(self.config.quorum)
        return self._trusted_until if self._leader_id is not None else None

    @property
    def current_term(self) -> Term | None:
        """The leadership in progress, ending when it would lapse without renewal."""
        if self._role is not Role.LEADER:
            return None
        return Term(self._campaign.epoch, self._campaign.term_start, self._campaign.valid_until(self.config.quorum))

    def drain_terms(self) -> list[Term]:
        """Leaderships that have ended since the last call, oldest first."""
        terms, self._finished_terms = self._finished_terms, []
        return terms

    # ----------------------------------------------------------------- persistence

    def to_record(self) -> dict[str, Any]:
        return {"format": RECORD_FORMAT, "node_id": self.node_id, "epoch": self._epoch,
                "epoch_leader": self._epoch_leader, "highest_epoch": self._highest_epoch,
                "voter": self._voter.to_record() if self._voter is not None else None}

    @classmethod
    def from_record(cls, record: Mapping[str, Any], config: ElectionConfig, *, now: float,
                    eligible: Iterable[str], lease_id: str | None = None) -> "ElectionNode":
        """A restarted node: a follower with a fresh lease id; its voter in quarantine (see lease.py)."""
        if record.get("format") != RECORD_FORMAT:
            raise ValueError(f"format: unknown election record format {record.get('format')!r}")
        eligible = frozenset(eligible)
        node_id = str(record["node_id"])
        voter = None
        if node_id in config.voters:
            if record.get("voter"):
                voter = Voter.from_record(record["voter"], config.lease_ttl_s, now=now, eligible=eligible)
            else:
                # Configured as a voter after it last ran: it never granted anything to quarantine.
                voter = Voter(node_id, config.lease_ttl_s, eligible)
        return cls(node_id, config, eligible=eligible, now=now, lease_id=lease_id, voter=voter,
                   epoch=int(record["epoch"]), epoch_leader=record.get("epoch_leader"),
                   highest_epoch=int(record["highest_epoch"]))

    # ----------------------------------------------------------------- inputs

    def set_eligible(self, nodes: Iterable[str], now: float) -> Ready:
        """The nodes that are not retired. A retired node neither stands nor votes."""
        self._expire(now)
        self._eligible = frozenset(nodes)
        if self._voter is not None:
            self._voter.set_eligible(self._eligible)
        if self.node_id not in self._eligible and self._role is not Role.FOLLOWER:
            if self._role is Role.LEADER:
                self._end_term(now)
            self._become_follower(None, None)
        return self._ready()

    def set_voters(self, voters: Iterable[str], now: float) -> Ready:
        """The cluster's voter set changed. A leadership or campaign under the old set ends here:
        the store begins a term only under the voter set it holds (see fencing.py)."""
        self._expire(now)
        if self._role is Role.LEADER:
            self._end_term(now)  # counted under the quorum it was won with
        if self._role is not Role.FOLLOWER:
            self._become_follower(None, None)
        self.config = replace(self.config, voters=tuple(sorted(voters)))
        if self.node_id not in self.config.voters:
            self._voter = None
        elif self._voter is None:
            self._voter = Voter(self.node_id, self.config.lease_ttl_s, self._eligible, max_epoch=self._highest_epoch)
        return self._ready()

    def observe_epoch(self, epoch: int, now: float) -> Ready:
        """A leader at `epoch` exists, for example because a store or worker refused our command."""
        self._expire(now)
        self._see_epoch(epoch)
        if self._voter is not None:
            self._voter.observe_epoch(epoch)
        if self._role is Role.LEADER and epoch > self._campaign.epoch:
            self._end_term(now)
            self._become_follower(None, None)
        return self._ready()

    def step_down(self, now: float) -> Ready:
        """Stop leading or campaigning now, for example because the store could not register the term.
        The next candidacy goes above every epoch seen, so the lapsed term never resumes."""
        self._expire(now)
        if self._role is Role.LEADER:
            self._end_term(now)
        if self._role is not Role.FOLLOWER:
            self._become_follower(None, None)
        return self._ready()

    def term_refused(self, now: float, epoch: int | None = None) -> Ready:
        """The store would not register the term just won (`epoch`: the highest it holds; None when
        it could not answer). That leadership never acted, so no term is recorded for it."""
        self._expire(now)
        if epoch is not None:
            self._see_epoch(epoch)
            if self._voter is not None:
                self._voter.observe_epoch(epoch)
        if self._role is Role.LEADER:
            self._become_follower(None, None)
        return self._ready()

    def tick(self, now: float) -> Ready:
        """Drive timeouts, retries and renewals."""
        return self._ready(self._tick(now))

    def _tick(self, now: float) -> list[Outgoing]:
        self._expire(now)
        if self.node_id not in self._eligible:
            return []
        if self._role is Role.FOLLOWER:
            if self._leader_id is None and now >= self._listen_until:
                return self._start_election(now)
            return []
        if self._role in (Role.ELECTING, Role.DEFERRING):
            return self._start_campaign(now) if now >= self._deadline else []
        campaign = self._campaign
        if self._role is Role.CANDIDATE:
            out: list[Outgoing] = []
            if campaign.round_open and now >= campaign.round_sent_at + self.config.election_timeout_s:
                out = self._close_round(now)
            campaign = self._campaign
            if (self._role is Role.CANDIDATE and campaign.next_round_at is not None
                    and now >= campaign.next_round_at):
                out += self._lease_round(now)
            return out
        if now >= campaign.round_sent_at + self.config.renew_interval_s:
            return self._lease_round(now)
        return []

    def on_request(self, kind: str, payload: Mapping[str, Any], now: float, *,
                   term_registered: bool = False) -> Ready:
        """Answer a peer's request (`Ready.reply`); raises MalformedMessage for an unknown kind or a
        malformed payload. `term_registered`: the caller checked that the cluster store registered
        the announced epoch for the announced leader (read for coordinator messages only)."""
        self._expire(now)
        if kind == COORDINATOR:
            return self._ready(reply=self._on_coordinator(payload, now, term_registered))
        return self._ready(reply=self._answer(kind, payload, now))

    def _answer(self, kind: str, payload: Mapping[str, Any], now: float) -> dict[str, Any]:
        if kind == ELECTION:
            return self._on_election(payload, now)
        if kind == LEASE:
            if self._voter is None:
                LeaseRequest.from_payload(payload)
                return {"granted": False, "voter_id": self.node_id, "reason": REFUSED_NOT_A_VOTER,
                        "holder": None, "remaining_s": 0.0, "epoch": self._epoch}
            reply = self._voter.handle_lease(payload, now)
            # What our voter granted, we have seen: our own next candidacy must go above it.
            self._see_epoch(self._voter.max_epoch)
            return reply
        if kind == GRANT:
            if self._voter is None:
                return {"voter_id": self.node_id, "leader_id": None, "lease_id": None, "epoch": self._epoch,
                        "expires_in_s": 0.0, "retired": self.node_id not in self._eligible}
            return self._voter.grant_status(now)
        raise MalformedMessage("kind", f"unknown election message {kind!r}")

    def on_response(self, request_id: str, payload: Mapping[str, Any], now: float) -> Ready:
        """The answer to one of our requests; unknown, late or duplicated answers are ignored."""
        self._expire(now)
        pending = self._pending.pop(request_id, None)
        if pending is None:
            return self._ready()
        if pending.kind == ELECTION:
            return self._ready(self._on_election_answer(pending, payload, now))
        if pending.kind == LEASE:
            return self._ready(self._on_lease_answer(pending.destination, pending.sent_at, pending.tag, payload, now))
        if pending.kind == COORDINATOR and payload.get("accepted") is False:
            return self.observe_epoch(epoch_field(payload, "epoch"), now)
        return self._ready()

    # ----------------------------------------------------------------- bully

    def _start_election(self, now: float) -> list[Outgoing]:
        higher = sorted(n for n in self._eligible if n > self.node_id)
        if not higher:
            return self._start_campaign(now)
        self._role = Role.ELECTING
        self._deadline = now + self.config.election_timeout_s
        self._election_round += 1
        self._awaiting_election = set(higher)
        payload = {"candidate_id": self.node_id, "epoch": self._epoch}
        return [self._request(ELECTION, node, payload, now, self._election_round) for node in higher]

    def _on_election(self, payload: Mapping[str, Any], now: float) -> dict[str, Any]:
        candidate = str_field(payload, "candidate_id")
        self._see_epoch(epoch_field(payload, "epoch"))
        if self.node_id not in self._eligible or self.node_id <= candidate:
            return {"response": OK, "node_id": self.node_id}
        # Someone is looking for a leader: if we know none, stand at the next tick.
        self._listen_until = min(self._listen_until, now)
        return {"response": ALIVE, "node_id": self.node_id}

    def _on_election_answer(self, pending: _Pending, payload: Mapping[str, Any], now: float) -> list[Outgoing]:
        if self._role is not Role.ELECTING or pending.tag != self._election_round:
            return []
        if payload.get("response") == ALIVE:
            self._defer(now)
            return []
        self._awaiting_election.discard(pending.destination)
        return [] if self._awaiting_election else self._start_campaign(now)

    def _defer(self, now: float) -> None:
        self._campaign = None
        self._role = Role.DEFERRING
        self._deadline = now + self.config.defer_timeout_s

    # ----------------------------------------------------------------- leases

    def _start_campaign(self, now: float) -> list[Outgoing]:
        if max(self._highest_epoch, self._epoch) >= MAX_EPOCH:
            # Every epoch is spent: standing could only propose one that no store can hold.
            self._become_follower(None, None)
            self._listen_until = now + self.config.lease_ttl_s
            return []
        self._highest_epoch = max(self._highest_epoch, self._epoch) + 1
        self._campaign = _Campaign(self._highest_epoch)
        self._role = Role.CANDIDATE
        self._deadline = math.inf
        return self._lease_round(now)

    def _lease_round(self, now: float) -> list[Outgoing]:
        campaign = self._campaign
        was_leader = self._role is Role.LEADER
        campaign.round_sent_at = now
        campaign.round_open = not was_leader
        campaign.next_round_at = None
        campaign.superseded = False
        campaign.defer_to = None
        campaign.blocked_for_s = None
        voters = [v for v in self.config.voters if v in self._eligible]
        campaign.awaiting = set(voters)
        payload = LeaseRequest(self.node_id, self.lease_id, self.config.lease_ttl_s, campaign.epoch).to_payload()
        out = [self._request(LEASE, v, payload, now, campaign.epoch) for v in voters if v != self.node_id]
        if self.node_id in campaign.awaiting:
            # Our own voter answers in-process; it is persisted with the rest of our record.
            out += self._on_lease_answer(self.node_id, now, campaign.epoch,
                                         self._voter.handle_lease(payload, now), now)
        elif not campaign.awaiting and not was_leader:
            out += self._close_round(now)
        if was_leader and self._role is Role.LEADER:
            out += self._announce(now)
        return out

    def _on_lease_answer(self, voter: str, sent_at: float, epoch: int, payload: Mapping[str, Any],
                         now: float) -> list[Outgoing]:
        answer_epoch = epoch_field(payload, "epoch")
        self._see_epoch(answer_epoch)
        campaign = self._campaign
        if self._role is Role.LEADER and answer_epoch > campaign.epoch:
            self._end_term(now)
            self._become_follower(None, None)
            return []
        if campaign is None or epoch != campaign.epoch or self._role not in (Role.CANDIDATE, Role.LEADER):
            return []
        if payload.get("granted") is True:
            if answer_epoch == campaign.epoch:
                expiry = sent_at + self.config.leader_lease_s(float_field(payload, "lease_ttl_seconds"))
                campaign.expiries[voter] = max(campaign.expiries.get(voter, -math.inf), expiry)
        else:
            reason = payload.get("reason")
            if answer_epoch > campaign.epoch or (answer_epoch == campaign.epoch
                                                 and reason in (REFUSED_HELD, REFUSED_STALE_EPOCH)):
                campaign.superseded = True
            holder = payload.get("holder")
            if isinstance(holder, str) and holder != self.node_id and holder in self._eligible \
                    and holder > self.node_id:
                campaign.defer_to = holder
            elif holder is not None:
                remaining_s = max(0.0, float_field(payload, "remaining_s"))
                if campaign.blocked_for_s is None or remaining_s < campaign.blocked_for_s:
                    campaign.blocked_for_s = remaining_s
        campaign.awaiting.discard(voter)
        return self._evaluate(now)

    def _evaluate(self, now: float) -> list[Outgoing]:
        campaign = self._campaign
        if self._role is not Role.CANDIDATE:
            return []
        if campaign.valid_until(self.config.quorum) > now:
            self._role = Role.LEADER
            campaign.round_open = False
            campaign.term_start = now
            self._epoch = campaign.epoch
            self._epoch_leader = self.node_id
            self._leader_id = self.node_id
            self._trusted_until = None
            self._new_term = campaign.epoch
            return self._announce(now)
        if campaign.round_open and not campaign.awaiting:
            return self._close_round(now)
        return []

    def _close_round(self, now: float) -> list[Outgoing]:
        """A round ended without a majority: defer, go above a higher epoch, or retry."""
        campaign = self._campaign
        campaign.round_open = False
        if campaign.defer_to is not None:
            self._defer(now)
            return []
        if campaign.superseded:
            return self._start_campaign(now)
        campaign.next_round_at = now + (campaign.blocked_for_s if campaign.blocked_for_s is not None else 0.0)
        return []

    def _announce(self, now: float) -> list[Outgoing]:
        payload = {"leader_id": self.node_id, "epoch": self._campaign.epoch, "lease_id": self.lease_id}
        return [self._request(COORDINATOR, node, payload, now, self._campaign.epoch)
                for node in sorted(self._eligible) if node != self.node_id]

    def _on_coordinator(self, payload: Mapping[str, Any], now: float, term_registered: bool) -> dict[str, Any]:
        leader = str_field(payload, "leader_id")
        epoch = epoch_field(payload, "epoch", minimum=1)
        ours = self._role is Role.LEADER and self._campaign.epoch == epoch
        stale = (epoch < self._epoch
                 or (epoch == self._epoch and self._epoch_leader not in (None, leader))
                 or (leader == self.node_id and not ours))
        already_followed = epoch == self._epoch and self._epoch_leader == leader
        if stale:
            reason = REFUSED_STALE
        elif leader not in self._eligible and leader not in self.config.voters:
            reason = REFUSED_UNKNOWN_LEADER
        elif not (ours or already_followed or term_registered):
            reason = REFUSED_UNREGISTERED
        else:
            reason = None
        if reason is not None:
            return {"accepted": False, "node_id": self.node_id, "epoch": self._epoch,
                    "leader_id": self._epoch_leader, "reason": reason}
        self._see_epoch(epoch)
        if self._voter is not None:
            self._voter.observe_epoch(epoch)
        if not ours:
            if self._role is Role.LEADER:
                self._end_term(now)
            self._epoch = epoch
            self._epoch_leader = leader
            self._become_follower(leader, now + self.config.lease_ttl_s)
        return {"accepted": True, "node_id": self.node_id, "epoch": epoch, "leader_id": leader}

    # ----------------------------------------------------------------- bookkeeping

    def _expire(self, now: float) -> None:
        if self._role is Role.LEADER and now >= self._campaign.valid_until(self.config.quorum):
            self._end_term(self._campaign.valid_until(self.config.quorum))
            self._become_follower(None, None)
        if self._trusted_until is not None and now >= self._trusted_until:
            self._become_follower(None, None)
        # A grant counted from a request older than a TTL has run out anyway.
        horizon = now - self.config.lease_ttl_s
        for request_id in [r for r, p in self._pending.items() if p.sent_at < horizon]:
            del self._pending[request_id]

    def _end_term(self, end: float) -> None:
        campaign = self._campaign
        end = min(end, campaign.valid_until(self.config.quorum))
        self._finished_terms.append(Term(campaign.epoch, campaign.term_start, end))

    def _become_follower(self, leader_id: str | None, trusted_until: float | None) -> None:
        self._role = Role.FOLLOWER
        self._campaign = None
        self._deadline = math.inf
        self._leader_id = leader_id
        self._trusted_until = trusted_until

    def _see_epoch(self, epoch: int) -> None:
        self._highest_epoch = max(self._highest_epoch, epoch)

    def _ready(self, messages: Iterable[Outgoing] = (), reply: dict[str, Any] | None = None) -> Ready:
        record = self.to_record()
        if record == self._handed_record:
            record = None
        else:
            self._handed_record = record
        term_epoch, self._new_term = self._new_term, None
        return Ready(record=record, term_epoch=term_epoch, messages=tuple(messages), reply=reply)

    def _request(self, kind: str, destination: str, payload: dict[str, Any], now: float, tag: int) -> Outgoing:
        self._request_counter += 1
        request_id = f"{self.lease_id}-{self._request_counter}"
        self._pending[request_id] = _Pending(kind, destination, now, tag)
        return Outgoing(request_id, destination, kind, dict(payload))
