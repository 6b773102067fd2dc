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


class SimStore:
    """The cluster store's part in elections (fencing.py): epochs only go up, a term begins only
    under the voter set the store holds, and only the newest term's holder changes that set."""

    def __init__(self, voters=None) -> None:
        self.terms: dict[int, str] = {}
        self.highest = 0
        self.voters = tuple(sorted(voters)) if voters else None
        self.version = 1 if voters else 0

    def form(self, present) -> tuple[tuple[str, ...], int]:
        """The first node to finish forming records the voters; everyone reads that record."""
        if self.voters is None:
            self.voters, self.version = tuple(sorted(present)), 1
        return self.voters, self.version

    def begin_term(self, name: str, epoch: int, version: int) -> bool:
        if epoch <= self.highest or version != self.version:
            return False
        self.terms[epoch], self.highest = name, epoch
        return True

    def change_voters(self, name: str, epoch: int, voters) -> bool:
        if self.terms.get(self.highest) != name or epoch != self.highest:
            return False
        self.voters, self.version = tuple(sorted(voters)), self.version + 1
        return True


class SimCluster:
    def __init__(self, names, config: ElectionConfig, offsets, rates, started=None):
        self.config = config
        self.names = list(names)
        self.now = 0.0
        self.clocks = {n: Clock(0.0, o, r) for n, o, r in zip(self.names, offsets, rates)}
        self.incarnations = {n: 0 for n in self.names}
        self.store = SimStore(config.voters)
        self.versions = {n: self.store.version for n in self.names}  # the voter set each node last read
        self.nodes = {n: ElectionNode(n, config, eligible=self.names, now=self.local(n), lease_id=f"{n}#0")
                      for n in (self.names if started is None else started)}
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
        return name in self.nodes and name not in self.paused and name not in self.dead

    def join(self, name: str, offset: float, rate: float, seen=None) -> None:
        """A node starts now (its process, with a fresh clock) and reads the recorded voters,
        recording those it saw (default: those started, and itself) if it is the first to form."""
        self.clocks[name] = Clock(self.now, offset, rate)
        voters, self.versions[name] = self.store.form(seen or [n for n in self.nodes] + [name])
        config = replace(self.config, voters=voters)
        self.nodes[name] = ElectionNode(name, config, eligible=self.names, now=self.local(name),
                                        lease_id=f"{name}#0")

    def learn_voters(self, name: str) -> None:
        """`name` reads the voter set the store holds now (as the actor does every second)."""
        if name in self.nodes and self.versions[name] != self.store.version:
            self.versions[name] = self.store.version
            self.apply(name, self.nodes[name].set_voters(self.store.voters, self.local(name)))

    def apply(self, name: str, ready) -> None:
        """What the election actor does with a Ready: the store registers the new term before its
        announcements go out; a refusal ends the term unacted and drops them."""
        if ready.term_epoch is not None and not self.store.begin_term(name, ready.term_epoch, self.versions[name]):
            self.apply(name, self.nodes[name].term_refused(self.local(name), self.store.highest))
            return
        self.send(name, ready.messages)

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
            self.apply(name, self.nodes[name].tick(self.local(name)))

    def deliver(self, index: int) -> bool:
        message = self.network[index]
        if not self.can_deliver(message):
            return False
        del self.network[index]
        node, now = self.nodes[message.receiver], self.local(message.receiver)
        if message.is_response:
            self.apply(message.receiver, node.on_response(message.request_id, message.payload, now))
        else:
            registered = self.store.terms.get(message.payload.get("epoch")) == message.payload.get("leader_id")
            reply = node.on_request(message.kind, message.payload, now, term_registered=registered).reply
            self.post(Message(message.receiver, message.sender, message.request_id, message.kind, reply, True,
                              self.now))
        return True

    def step(self, dt: float = STEP_S) -> None:
        """Time passes, every running node ticks, and every message in flight that is due and can
        get through does; what that causes waits for the next step."""
        self.now += dt
        for name in self.names:
            if self.active(name):
                self.learn_voters(name)
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
        self.versions[name] = self.store.version  # a restarted actor reads the voter set first
        config = replace(self.config, voters=self.store.voters)
        self.nodes[name] = ElectionNode.from_record(record, config, now=self.local(name),
                                                    eligible=self.names,
                                                    lease_id=f"{name}#{self.incarnations[name]}")
        self.paused.discard(name)

    def kill(self, name: str) -> None:
        self.stop(name)
        self.dead.add(name)

    def all_terms(self) -> list[TermRecord]:
        """History plus every live leadership up to the end it promises itself now."""
        terms = []
        for name in self.nodes:
            if name in self.dead:
                continue
            self._close(name)
            term = self.nodes[name].current_term
            if term is not None:
                clock = self.clocks[name]
                terms.append(TermRecord(name, term.epoch, clock.true(term.start), clock.true(term.end)))
        return self.history + terms

    def leaders(self) -> list[str]:
        return [n for n in self.nodes if n not in self.dead and self.nodes[n].is_leader(self.local(n))]

    def check_safety(self) -> list[str]:
        violations = find_overlaps(self.all_terms())
        assert not violations, [v.describe() for v in violations]
        leaders = self.leaders()
        assert len(leaders) <= 1, leaders
        for name in leaders:
            node = self.nodes[name]
            promised = self.clocks[name].true(node.leader_valid_until)
            backing = sorted((self.clocks[v].true(grant.expires_at)
                              for v in node.config.voters if v in self.nodes and self.nodes[v].voter
                              for grant in [self.nodes[v].voter.grant]
                              if grant is not None and grant.holds(name, node.lease_id)
                              and grant.epoch == node.epoch), reverse=True)
            quorum = node.config.quorum
            assert len(backing) >= quorum and backing[quorum - 1] >= promised - EPSILON_S, (name, promised, backing)
        return leaders


class ElectionMachine(RuleBasedStateMachine):
    @initialize(size=st.integers(3, MAX_NODES), data=st.data())
    def setup(self, size, data):
        names = [f"n{i}" for i in range(size)]
        voters = data.draw(st.one_of(st.just(names), st.lists(st.sampled_from(names), min_size=1, unique=True)),
                           label="voters")
        clock_offsets = data.draw(st.lists(offsets, min_size=size, max_size=size), label="offsets")
        clock_rates = data.draw(st.lists(rates, min_size=size, max_size=size), label="rates")
        if data.draw(st.booleans(), label="staggered"):
            # No configured voters: the nodes that start together record themselves, the rest join later.
            self.sim = SimCluster(names, make_config(voters), clock_offsets, clock_rates, started=[])
            self.sim.store = SimStore()
            for name in voters:
                self.sim.join(name, clock_offsets[names.index(name)], clock_rates[names.index(name)], seen=voters)
        else:
            self.sim = SimCluster(names, make_config(voters), clock_offsets, clock_rates)
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
        for name in sim.nodes:
            config = sim.nodes[name].config
            voters_on_side = sum(1 for v in config.voters if sim.group[v] == sim.group[name])
            if voters_on_side < config.quorum:
                self.minority_since[name] = sim.now

    @rule(voters=st.lists(st.integers(0, MAX_NODES - 1), min_size=1, max_size=MAX_NODES, unique=True))
    def change_voters(self, voters):
        """The operator changes the voter set through the leader, which steps down and then writes
        it; the other nodes learn it whenever they next tick in a working stretch, or by `learn`."""
        sim = self.sim
        holder = sim.store.terms.get(sim.store.highest)
        if holder is None or not sim.active(holder) or not sim.nodes[holder].is_leader(sim.local(holder)):
            return
        node = sim.nodes[holder]
        sim.apply(holder, node.step_down(sim.local(holder)))
        assert sim.store.change_voters(holder, node.epoch, sorted({self.name(i) for i in voters}))
        sim.learn_voters(holder)
        self.minority_since = {}  # who is in a minority depends on which set each node follows
        event("voters changed")

    @rule(index=st.integers(0, MAX_NODES - 1))
    def learn(self, index):
        self.sim.learn_voters(self.name(index))

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
        if self.name(index) in self.sim.nodes:
            self.sim.restart(self.name(index), offset, rate)

    @rule(index=st.integers(0, MAX_NODES - 1), offset=offsets, rate=rates)
    def join(self, index, offset, rate):
        """A node that was not there when the cluster formed starts now, and reads the voters."""
        if self.name(index) not in self.sim.nodes:
            self.sim.join(self.name(index), offset, rate)
            event("a node joined late")

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


def test_nodes_started_one_after_another_share_the_recorded_voters():
    """The default `voters: []`: each node that finds no record forms one from the nodes present;
    the first record wins and every later node reads it, so there is one quorum, not one per node."""
    names = ["n0", "n1", "n2", "n3", "n4"]
    config = make_config(["placeholder"])
    for seed in range(20):
        rng = random.Random(seed)
        order = rng.sample(names, len(names))
        sim = SimCluster(names, replace(config, voters=("placeholder",)), [0.0] * 5, [1.0] * 5, started=[])
        sim.store = SimStore()
        for name in order:
            sim.join(name, offset=rng.uniform(0, 1e3), rate=rng.choice([SLOW_RATE, FAST_RATE]))
            run_for(sim, rng.choice([0.0, STEP_S, TTL_S / 2, 2 * TTL_S]))
        assert {sim.nodes[n].config.voters for n in names} == {(order[0],)}
        leader, _ = run_until_leader(sim, 3 * TTL_S)
        run_for(sim, TTL_S)
        assert sim.leaders() == [leader] and all(sim.nodes[n].leader_id == leader for n in names)
        assert not find_overlaps(sim.all_terms())


def test_a_voter_change_moves_the_quorum_without_two_leaders():
    """The leader steps down and writes the new set; a node that has not read it yet may still win
    the old set's majority, but the store will not begin its term."""
    names = ["n0", "n1", "n2", "n3", "n4"]
    sim = SimCluster(names, make_config(["n0", "n1", "n2"]), [0.0, 3.0, 9.0, 1.0, 4.0], [1.0] * 5)
    leader, _ = run_until_leader(sim, 2 * TTL_S)
    assert leader == "n4"  # not a voter, but eligible: Bully lets the highest stand
    old_epoch = sim.nodes[leader].epoch
    sim.apply(leader, sim.nodes[leader].step_down(sim.local(leader)))
    assert sim.store.change_voters(leader, old_epoch, ["n2", "n3", "n4"])
    # n0 and n1 are cut off before they read it: they hold a majority of the old set between them.
    stale = {"n0", "n1"}
    sim.learn_voters = lambda name, learn=sim.learn_voters: None if name in stale else learn(name)
    sim.group = {"n0": 1, "n1": 1, "n2": 0, "n3": 0, "n4": 0}
    successor, _ = run_until_leader(sim, 3 * TTL_S)
    assert successor == "n4" and sim.nodes[successor].epoch > old_epoch
    assert sim.nodes[successor].config.voters == ("n2", "n3", "n4")
    run_for(sim, 4 * TTL_S)  # n1 wins n0's and its own grant again and again; the store refuses each term
    assert sim.nodes["n1"].highest_epoch > old_epoch + 1, "the stale side did campaign"
    assert sim.leaders() == [successor] and not find_overlaps(sim.all_terms())
    del sim.learn_voters
    sim.group = {n: 0 for n in names}
    run_for(sim, 2 * TTL_S)
    assert sim.leaders() == [successor] and all(sim.nodes[n].config.voters == ("n2", "n3", "n4") for n in names)


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
