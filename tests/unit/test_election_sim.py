"""The election on a simulated network with a fake true clock, against an adversary.

Each node runs the real `ElectionNode` on its own monotonic clock: an offset and a rate within the
configured drift bound (each clock within half the bound of true time, so any two clocks are
within the bound of each other). Hypothesis drives time, message delivery, loss, duplication,
delay and reordering, partitions, pauses (the clock runs, the node does nothing) and restarts
(state reloaded from `to_record()`, a new monotonic clock, a new lease id). After every step it
checks, in true time:
- no two leaderships overlap, each counted until it would lapse without renewal, and no epoch is
  shared by two nodes or goes backwards (`election_history.find_overlaps`);
- the lemma behind that: a majority of voters still hold the leader's very lease, at its epoch,
  until at least the end the leader promises itself;
- epochs never go backwards at any node, across restarts too;
- a node cut off from a majority of voters cannot lead past the leases it had at the cut.
The plain tests below pin the hazards one by one and check liveness on a working network.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, replace

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from orchestrator.cluster.election import ElectionNode
from orchestrator.cluster.election_history import TermRecord, find_overlaps
from orchestrator.cluster.lease import ElectionConfig

TTL_S = 3.0
ELECTION_TIMEOUT_S = 0.3
# Far above real clocks, so that a leader that ignored drift would overlap its successor visibly.
MAX_DRIFT = 0.2
MARGIN_S = 0.05
STEP_S = TTL_S / 60  # one hop of the healthy network in the liveness tests
MAX_NODES = 5
MAX_STRETCH_STEPS = 250
EPSILON_S = 1e-9
SLOW_RATE, FAST_RATE = 1 - MAX_DRIFT / 2, 1 + MAX_DRIFT / 2

rates = st.one_of(st.sampled_from([SLOW_RATE, FAST_RATE]), st.floats(SLOW_RATE, FAST_RATE))
offsets = st.floats(0.0, 1e5)


def make_config(voters) -> ElectionConfig:
    return ElectionConfig(voters=tuple(sorted(voters)), lease_ttl_s=TTL_S, election_timeout_s=ELECTION_TIMEOUT_S,
                          max_clock_drift=MAX_DRIFT, safety_margin_s=MARGIN_S)


@dataclass(frozen=True)
class Clock:
    """A monotonic clock that read `offset` at true time `born_at` and runs at `rate`."""

    born_at: float
    offset: float
    rate: float

    def local(self, true_s: float) -> float:
        return self.offset + self.rate * (true_s - self.born_at)

    def true(self, local_s: float) -> float:
        return self.born_at + (local_s - self.offset) / self.rate


@dataclass(frozen=True)
class Message:
    sender: str
    receiver: str
    request_id: str
    kind: str
    payload: dict
    is_response: bool
    ready_at: float  # true time from which a healthy network delivers it


class SimCluster:
    def __init__(self, names, config: ElectionConfig, offsets, rates):
        self.config = config
        self.names = list(names)
        self.now = 0.0
        self.clocks = {n: Clock(0.0, o, r) for n, o, r in zip(self.names, offsets, rates)}
        self.incarnations = {n: 0 for n in self.names}
        self.nodes = {n: ElectionNode(n, config, eligible=self.names, now=self.local(n), lease_id=f"{n}#0")
                      for n in self.names}
        self.network: list[Message] = []
        self.group = {n: 0 for n in self.names}
        self.paused: set[str] = set()
        self.dead: set[str] = set()
        self.history: list[TermRecord] = []  # finished terms, true time
        # How the network treats new messages: lossless and due at once unless a stretch says otherwise.
        self.rng: random.Random | None = None
        self.max_latency_s = 0.0
        self.loss = 0.0

    def local(self, name: str) -> float:
        return self.clocks[name].local(self.now)

    def active(self, name: str) -> bool:
        return name not in self.paused and name not in self.dead

    def can_deliver(self, message: Message) -> bool:
        return self.active(message.receiver) and self.group[message.sender] == self.group[message.receiver]

    def post(self, message: Message) -> None:
        if self.rng is not None:
            if self.rng.random() < self.loss:
                return
            message = replace(message, ready_at=self.now + self.rng.uniform(0.0, self.max_latency_s))
        self.network.append(message)

    def send(self, sender: str, outgoing) -> None:
        for o in outgoing:
            self.post(Message(sender, o.destination, o.request_id, o.kind, o.payload, False, self.now))

    def tick(self, name: str) -> None:
        if self.active(name):
            self.send(name, self.nodes[name].tick(self.local(name)))

    def deliver(self, index: int) -> bool:
        message = self.network[index]
        if not self.can_deliver(message):
            return False
        del self.network[index]
        node, now = self.nodes[message.receiver], self.local(message.receiver)
        if message.is_response:
            self.send(message.receiver, node.on_response(message.request_id, message.payload, now))
        else:
            reply = node.on_request(message.kind, message.payload, now)
            self.post(Message(message.receiver, message.sender, message.request_id, message.kind, reply, True,
                              self.now))
        return True

    def step(self, dt: float = STEP_S) -> None:
        """Time passes, every running node ticks, and every message in flight that is due and can
        get through does; what that causes waits for the next step."""
        self.now += dt
        for name in self.names:
            self.tick(name)
        due = [m for m in self.network if m.ready_at <= self.now]
        self.network = [m for m in self.network if m.ready_at > self.now]
        for message in due:
            self.network.insert(0, message)
            self.deliver(0)

    def _close(self, name: str) -> None:
        """Move `name`'s finished terms, and its current one if it is going away, into history."""
        clock, node = self.clocks[name], self.nodes[name]
        for term in node.drain_terms():
            self.history.append(TermRecord(name, term.epoch, clock.true(term.start), clock.true(term.end)))

    def stop(self, name: str) -> None:
        """The process dies now: whatever term it held ends now."""
        self._close(name)
        term = self.nodes[name].current_term
        if term is not None:
            end = min(self.local(name), term.end)
            self.history.append(TermRecord(name, term.epoch, self.clocks[name].true(term.start),
                                           self.clocks[name].true(end)))

    def restart(self, name: str, offset: float, rate: float) -> None:
        self.stop(name)
        record = self.nodes[name].to_record()
        self.incarnations[name] += 1
        self.clocks[name] = Clock(self.now, offset, rate)
        self.nodes[name] = ElectionNode.from_record(record, self.config, now=self.local(name),
                                                    eligible=self.names,
                                                    lease_id=f"{name}#{self.incarnations[name]}")
        self.paused.discard(name)

    def kill(self, name: str) -> None:
        self.stop(name)
        self.dead.add(name)

    def all_terms(self) -> list[TermRecord]:
        """History plus every live leadership up to the end it promises itself now."""
        terms = []
        for name in self.names:
            if name in self.dead:
                continue
            self._close(name)
            term = self.nodes[name].current_term
            if term is not None:
                clock = self.clocks[name]
                terms.append(TermRecord(name, term.epoch, clock.true(term.start), clock.true(term.end)))
        return self.history + terms

    def leaders(self) -> list[str]:
        return [n for n in self.names if n not in self.dead and self.nodes[n].is_leader(self.local(n))]

    def check_safety(self) -> list[str]:
        violations = find_overlaps(self.all_terms())
        assert not violations, [v.describe() for v in violations]
        leaders = self.leaders()
        assert len(leaders) <= 1, leaders
        for name in leaders:
            node = self.nodes[name]
            promised = self.clocks[name].true(node.leader_valid_until)
            backing = sorted((self.clocks[v].true(grant.expires_at)
                              for v in self.config.voters
                              for grant in [self.nodes[v].voter.grant]
                              if grant is not None and grant.holds(name, node.lease_id)
                              and grant.epoch == node.epoch), reverse=True)
            quorum = self.config.quorum
            assert len(backing) >= quorum and backing[quorum - 1] >= promised - EPSILON_S, (name, promised, backing)
        return leaders


class ElectionMachine(RuleBasedStateMachine):
    @initialize(size=st.integers(3, MAX_NODES), data=st.data())
    def setup(self, size, data):
        names = [f"n{i}" for i in range(size)]
        voters = data.draw(st.one_of(st.just(names), st.lists(st.sampled_from(names), min_size=1, unique=True)),
                           label="voters")
        self.sim = SimCluster(names, make_config(voters),
                              data.draw(st.lists(offsets, min_size=size, max_size=size), label="offsets"),
                              data.draw(st.lists(rates, min_size=size, max_size=size), label="rates"))
        self.epochs = {n: (0, 0) for n in names}
        self.minority_since: dict[str, float] = {}

    def name(self, index: int) -> str:
        return self.sim.names[index % len(self.sim.names)]

    @rule(dt=st.floats(0.0, TTL_S * 0.6))
    def advance(self, dt):
        self.sim.now += dt

    @rule(which=st.integers(0, 20), after_s=st.sampled_from([0.0, 1e-6, 1e-3]))
    def jump_to_an_expiry(self, which, after_s):
        """Time jumps to just after a grant, a leadership or a follower's trust runs out: the
        moments where a wrong bound would show."""
        sim = self.sim
        instants = []
        for name, node in sim.nodes.items():
            clock = sim.clocks[name]
            if node.voter is not None and node.voter.grant is not None:
                instants.append(clock.true(node.voter.grant.expires_at))
            if node.leader_valid_until is not None:
                instants.append(clock.true(node.leader_valid_until))
        instants = sorted(t for t in instants if t >= sim.now)
        if instants:
            sim.now = instants[which % len(instants)] + after_s

    @rule(index=st.integers(0, MAX_NODES - 1))
    def tick(self, index):
        self.sim.tick(self.name(index))

    @rule(index=st.integers(0, 1000))
    def deliver(self, index):
        if not self.sim.network:
            return
        self.sim.deliver(index % len(self.sim.network))

    @rule(index=st.integers(0, 1000))
    def drop(self, index):
        if not self.sim.network:
            return
        del self.sim.network[index % len(self.sim.network)]

    @rule(index=st.integers(0, 1000))
    def duplicate(self, index):
        if not self.sim.network:
            return
        self.sim.network.append(self.sim.network[index % len(self.sim.network)])

    @rule(duration_s=st.sampled_from([0.3, TTL_S / 2, 2 * TTL_S, 4 * TTL_S]),
          dt=st.sampled_from([0.02, STEP_S, 0.2]), seed=st.integers(0, 2**32),
          max_latency_s=st.sampled_from([0.0, STEP_S, 0.5]), loss=st.sampled_from([0.0, 0.1, 0.5]))
    def working_stretch(self, duration_s, dt, seed, max_latency_s, loss):
        """Nodes tick on their own and the network delivers, with random latency and loss."""
        sim = self.sim
        sim.rng, sim.max_latency_s, sim.loss = random.Random(seed), max_latency_s, loss
        try:
            # Capped so that one example stays cheap: shrinking a failure replays thousands.
            for _ in range(min(int(duration_s / dt), MAX_STRETCH_STEPS)):
                sim.step(dt)
        finally:
            sim.rng, sim.max_latency_s, sim.loss = None, 0.0, 0.0

    @rule(sides=st.lists(st.integers(0, 1), min_size=MAX_NODES, max_size=MAX_NODES))
    def partition(self, sides):
        self.split(sides)

    def split(self, sides):
        sim = self.sim
        sim.group = {n: side for n, side in zip(sim.names, sides)}
        self.minority_since = {}
        for name in sim.names:
            voters_on_side = sum(1 for v in sim.config.voters if sim.group[v] == sim.group[name])
            if voters_on_side < sim.config.quorum:
                self.minority_since[name] = sim.now

    @rule()
    def heal(self):
        self.sim.group = {n: 0 for n in self.sim.names}
        self.minority_since = {}

    @rule(index=st.integers(0, MAX_NODES - 1))
    def pause(self, index):
        self.sim.paused.add(self.name(index))

    @rule()
    def pause_the_leader(self):
        """The classic hazard: a leader stalls (a long GC pause) while the others move on."""
        self.sim.paused.update(self.sim.leaders())

    @rule(index=st.integers(0, MAX_NODES - 1))
    def isolate(self, index):
        self.split([int(n == self.name(index)) for n in self.sim.names])

    @rule(index=st.integers(0, MAX_NODES - 1))
    def resume(self, index):
        self.sim.paused.discard(self.name(index))

    @rule(index=st.integers(0, MAX_NODES - 1), offset=offsets, rate=rates)
    def restart(self, index, offset, rate):
        self.sim.restart(self.name(index), offset, rate)

    @invariant()
    def leaderships_never_overlap_and_every_leader_is_backed(self):
        if self.sim.check_safety():
            event("a node leads")
        if len({(t.node_id, t.epoch) for t in self.sim.all_terms()}) >= 2:
            event("leadership changed hands")

    @invariant()
    def epochs_never_go_backwards(self):
        for name, node in self.sim.nodes.items():
            previous_epoch, previous_highest = self.epochs[name]
            assert node.epoch >= previous_epoch and node.highest_epoch >= previous_highest, name
            self.epochs[name] = (node.epoch, node.highest_epoch)

    @invariant()
    def minority_cannot_extend_its_leadership(self):
        sim = self.sim
        for name, since in self.minority_since.items():
            node, clock = sim.nodes[name], sim.clocks[name]
            if not node.is_leader(sim.local(name)):
                continue
            # Any majority it counts includes a voter across the cut, granted before the cut.
            cut_at = clock.local(max(since, clock.born_at))
            assert node.leader_valid_until <= cut_at + sim.config.leader_lease_s(TTL_S) + EPSILON_S, name


ElectionMachine.TestCase.settings = settings(
    max_examples=200, stateful_step_count=50, deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
TestElection = ElectionMachine.TestCase


# ----------------------------------------------------------------- liveness


def run_until_leader(sim: SimCluster, limit_s: float, other_than: str | None = None,
                     dt: float = STEP_S) -> tuple[str, float]:
    started = sim.now
    while sim.now - started <= limit_s:
        sim.step(dt)
        leaders = sim.check_safety()
        if leaders and leaders[0] != other_than:
            return leaders[0], sim.now - started
    raise AssertionError(f"no leader within {limit_s}s")


def run_for(sim: SimCluster, duration_s: float, dt: float = STEP_S) -> None:
    for _ in range(round(duration_s / dt)):
        sim.step(dt)
        sim.check_safety()


@pytest.mark.parametrize("size,voters", [(3, 3), (5, 5), (5, 3), (4, 1)])
def test_healthy_cluster_elects_and_replaces_a_killed_leader(size, voters):
    names = [f"n{i}" for i in range(size)]
    config = make_config(names[:voters])
    clock_rates = [1 - MAX_DRIFT / 2 if i % 2 else 1 + MAX_DRIFT / 2 for i in range(size)]
    sim = SimCluster(names, config, [1000.0 * i for i in range(size)], clock_rates)

    leader, took_s = run_until_leader(sim, 2 * TTL_S)
    assert leader == names[-1]  # Bully: the highest node stands unopposed
    run_for(sim, 3 * TTL_S)  # a steady leader keeps its epoch
    assert sim.leaders() == [leader] and sim.nodes[leader].epoch == 1
    assert all(sim.nodes[n].leader_id == leader for n in names)

    if voters == 1 and leader in config.voters:
        return
    sim.kill(leader)
    successor, took_s = run_until_leader(sim, 1.5 * TTL_S + ELECTION_TIMEOUT_S)
    assert successor == names[-2] and sim.nodes[successor].epoch > 1
    run_for(sim, TTL_S)
    assert all(sim.nodes[n].leader_id == successor for n in names if n != leader)


def test_partitioned_leader_loses_office_and_majority_elects_another():
    names = ["n0", "n1", "n2", "n3", "n4"]
    sim = SimCluster(names, make_config(names), [0.0, 7.0, 300.0, 5.0, 42.0], [1.02, 0.98, 1.0, 1.025, 0.975])
    leader, _ = run_until_leader(sim, 2 * TTL_S)
    # Cut at once: the followers never heard the coordinator message and are still deferring to n4.
    sim.group = {"n0": 0, "n1": 0, "n2": 0, "n3": 1, "n4": 1}
    cut_at = sim.now
    successor, took_s = run_until_leader(sim, 1.5 * TTL_S + ELECTION_TIMEOUT_S, other_than=leader)
    assert successor in ("n0", "n1", "n2") and not sim.nodes[leader].is_leader(sim.local(leader))
    assert sim.now - cut_at >= TTL_S * (1 - MAX_DRIFT) - MARGIN_S - STEP_S  # waited out the old lease
    sim.group = {n: 0 for n in names}
    run_for(sim, 2 * TTL_S)
    # After healing, the old leader follows; nobody preempts the sitting leader.
    assert sim.leaders() == [successor] and sim.nodes[leader].leader_id == successor


def test_restarted_voter_majority_still_elects_after_quarantine():
    names = ["n0", "n1", "n2"]
    sim = SimCluster(names, make_config(names), [0.0, 0.0, 0.0], [1.0, 1.0, 1.0])
    leader, _ = run_until_leader(sim, 2 * TTL_S)
    for name in names:
        sim.restart(name, offset=5.0, rate=1.0)
    restarted_at = sim.now
    successor, took_s = run_until_leader(sim, 2 * TTL_S)
    # Every voter held the old leader's grant: nobody could lead before it was safe.
    assert sim.now - restarted_at >= TTL_S - STEP_S
    assert sim.nodes[successor].epoch > 1
    assert not find_overlaps(sim.all_terms())


# ----------------------------------------------------------------- hazards, one at a time


def test_slow_leader_clock_and_fast_voter_clocks():
    """The leader's clock runs 20% slower than its voters': its own count must still end first."""
    names = ["n0", "n1", "n2"]
    sim = SimCluster(names, make_config(names), [0.0, 50.0, 900.0], [FAST_RATE, FAST_RATE, SLOW_RATE])
    leader, _ = run_until_leader(sim, 2 * TTL_S)
    assert leader == "n2"
    run_for(sim, TTL_S)
    sim.paused.add(leader)  # it stalls right after a renewal; the others wait it out and take over
    successor, _ = run_until_leader(sim, 2 * TTL_S, other_than=leader, dt=0.01)
    assert successor == "n1"
    sim.paused.discard(leader)
    run_for(sim, TTL_S)
    assert sim.leaders() == ["n1"] and sim.nodes[leader].leader_id == "n1"


def test_late_lease_answers_do_not_stretch_the_lease():
    """A leader counts each grant from when it *sent* the request, however late the answer comes."""
    names = ["n0", "n1", "n2"]
    sim = SimCluster(names, make_config(names), [0.0, 0.0, 0.0], [1.0, 1.0, 1.0])
    sim.now = 1.0
    sim.tick("n2")
    for _ in range(2):  # the requests arrive and are granted at once
        sim.deliver(0)
    sim.now += 2.0  # the answers take two seconds to come back
    while sim.network:
        sim.deliver(0)
    assert sim.check_safety() == ["n2"]
    assert sim.nodes["n2"].leader_valid_until == pytest.approx(1.0 + sim.config.leader_lease_s(TTL_S))


def test_voters_split_evenly_elect_nobody():
    names = ["n0", "n1", "n2", "n3"]
    sim = SimCluster(names, make_config(names), [0.0, 1.0, 2.0, 3.0], [1.0, 1.0, 1.0, 1.0])
    sim.group = {"n0": 0, "n1": 0, "n2": 1, "n3": 1}
    run_for(sim, 5 * TTL_S)
    assert sim.leaders() == [] and not sim.all_terms()
    sim.group = {n: 0 for n in names}
    leader, took_s = run_until_leader(sim, 2 * TTL_S)
    assert took_s <= 1.5 * TTL_S + ELECTION_TIMEOUT_S


def test_leader_paused_past_its_lease_wakes_up_as_a_follower():
    names = ["n0", "n1", "n2"]
    sim = SimCluster(names, make_config(names), [0.0, 0.0, 0.0], [1.0, 1.0, 1.0])
    leader, _ = run_until_leader(sim, 2 * TTL_S)
    sim.paused.add(leader)
    successor, _ = run_until_leader(sim, 2 * TTL_S, other_than=leader)
    # On waking, its answers still in flight and its renewals are worth nothing.
    sim.paused.discard(leader)
    assert not sim.nodes[leader].is_leader(sim.local(leader))
    run_for(sim, TTL_S)
    assert sim.leaders() == [successor] and sim.nodes[leader].leader_id == successor
    [term] = [t for t in sim.all_terms() if t.node_id == leader]
    assert term.end <= min(t.start for t in sim.all_terms() if t.node_id == successor)
