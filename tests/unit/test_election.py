"""Voter leases and one node's election brain, message by message, on hand-driven clocks."""
from __future__ import annotations

import pytest

from orchestrator.cluster.election import (ALIVE, COORDINATOR, ELECTION, GRANT, LEASE, OK, ElectionNode,
                                           Role)
from orchestrator.cluster.lease import (REFUSED_HELD, REFUSED_LEADER_NOT_ELIGIBLE, REFUSED_RETIRED,
                                        REFUSED_STALE_EPOCH, ElectionConfig, Voter)

TTL_S = 10.0
CONFIG = ElectionConfig(voters=("a", "b", "c"), lease_ttl_s=TTL_S, election_timeout_s=1.0,
                        max_clock_drift=0.05, safety_margin_s=0.2)
NODES = frozenset({"a", "b", "c"})


def lease(leader: str, lease_id: str, epoch: int, duration: float = TTL_S) -> dict:
    return {"leader_id": leader, "lease_id": lease_id, "lease_duration": duration, "epoch": epoch}


def voter(**kwargs) -> Voter:
    return Voter("a", TTL_S, kwargs.pop("eligible", NODES), **kwargs)


# ----------------------------------------------------------------- config


def test_config_quorum_and_leader_lease():
    assert CONFIG.quorum == 2
    assert ElectionConfig(voters=("a", "b", "c", "d")).quorum == 3
    assert CONFIG.leader_lease_s(10.0) == pytest.approx(10.0 * 0.95 - 0.2)
    assert CONFIG.renew_interval_s == pytest.approx(TTL_S / 3)


@pytest.mark.parametrize("bad", [
    {"voters": ()}, {"voters": ("a", "a")}, {"lease_ttl_s": 0}, {"max_clock_drift": 1.0},
    {"renew_fraction": 1.0}, {"safety_margin_s": -1}, {"lease_ttl_s": 1.0, "election_timeout_s": 1.0},
])
def test_config_rejects_unsafe_settings(bad):
    with pytest.raises(ValueError):
        ElectionConfig(**{"voters": ("a",), **bad})


# ----------------------------------------------------------------- voter


def test_voter_grants_and_tells_the_ttl_back():
    v = voter()
    reply = v.handle_lease(lease("b", "L1", 1), now=100.0)
    assert reply == {"granted": True, "voter_id": "a", "lease_ttl_seconds": TTL_S, "epoch": 1}
    # A shorter request gets a shorter grant; a longer one is capped at the voter's own TTL.
    assert voter().handle_lease(lease("b", "L1", 1, duration=4.0), 0.0)["lease_ttl_seconds"] == 4.0
    assert voter().handle_lease(lease("b", "L1", 1, duration=99.0), 0.0)["lease_ttl_seconds"] == TTL_S


def test_voter_renews_the_same_lease_and_extends_it():
    v = voter()
    v.handle_lease(lease("b", "L1", 1), now=0.0)
    assert v.handle_lease(lease("b", "L1", 1), now=8.0)["granted"]
    assert v.live_grant(17.0) is not None  # renewed at 8: held until 18
    assert v.live_grant(18.0) is None


def test_voter_refuses_another_leader_until_expiry():
    v = voter()
    v.handle_lease(lease("b", "L1", 1), now=0.0)
    refusal = v.handle_lease(lease("c", "L2", 2), now=4.0)
    assert refusal["granted"] is False and refusal["reason"] == REFUSED_HELD
    assert refusal["holder"] == "b" and refusal["remaining_s"] == pytest.approx(6.0)
    assert refusal["epoch"] == 1
    # The same node under another lease id (a restarted process) is another holder.
    assert v.handle_lease(lease("b", "L9", 2), now=4.0)["reason"] == REFUSED_HELD
    assert v.handle_lease(lease("c", "L2", 2), now=10.0)["granted"]


def test_voter_refuses_stale_and_equal_epochs():
    v = voter()
    v.handle_lease(lease("b", "L1", 5), now=0.0)
    refusal = v.handle_lease(lease("c", "L2", 5), now=20.0)  # b's grant expired, but 5 was b's
    assert refusal["reason"] == REFUSED_STALE_EPOCH and refusal["epoch"] == 5 and refusal["holder"] is None
    assert v.handle_lease(lease("c", "L2", 4), now=20.0)["reason"] == REFUSED_STALE_EPOCH
    assert v.handle_lease(lease("c", "L2", 6), now=20.0)["granted"]
    # b's renewal at its old epoch cannot take the grant back, not even once c's runs out.
    assert v.handle_lease(lease("b", "L1", 5), now=40.0)["reason"] == REFUSED_STALE_EPOCH


def test_voter_lets_its_holder_move_to_a_higher_epoch():
    v = voter()
    v.handle_lease(lease("b", "L1", 1), now=0.0)
    assert v.handle_lease(lease("b", "L1", 3), now=1.0)["granted"]
    assert v.max_epoch == 3
    assert v.handle_lease(lease("b", "L1", 1), now=2.0)["reason"] == REFUSED_STALE_EPOCH


def test_voter_that_saw_a_higher_epoch_refuses_the_old_leaders_renewal():
    v = voter()
    v.handle_lease(lease("b", "L1", 1), now=0.0)
    v.observe_epoch(4)
    assert v.handle_lease(lease("b", "L1", 1), now=1.0)["reason"] == REFUSED_STALE_EPOCH


def test_restarted_voter_quarantines_its_last_grant_for_a_ttl():
    v = voter()
    v.handle_lease(lease("b", "L1", 3), now=500.0)
    record = v.to_record()
    assert record == {"voter_id": "a", "max_epoch": 3,
                      "grant": {"leader_id": "b", "lease_id": "L1", "epoch": 3, "ttl_s": TTL_S}}
    # The new process's monotonic clock starts anywhere; the quarantine counts from the restart.
    restarted = Voter.from_record(record, TTL_S, now=2.0, eligible=NODES)
    assert restarted.handle_lease(lease("c", "L2", 4), now=11.9)["reason"] == REFUSED_HELD
    assert restarted.handle_lease(lease("b", "L1", 3), now=5.0)["granted"]  # its holder may renew
    assert restarted.handle_lease(lease("c", "L2", 3), now=30.0)["reason"] == REFUSED_STALE_EPOCH
    assert restarted.handle_lease(lease("c", "L2", 4), now=30.0)["granted"]


def test_renewals_leave_the_record_unchanged():
    v = voter()
    v.handle_lease(lease("b", "L1", 1), now=0.0)
    before = v.to_record()
    v.handle_lease(lease("b", "L1", 1), now=3.0)
    assert v.to_record() == before


def test_retired_voter_refuses_and_retired_leader_is_refused():
    retired = voter(eligible={"b", "c"})
    assert retired.handle_lease(lease("b", "L1", 1), now=0.0)["reason"] == REFUSED_RETIRED
    v = voter(eligible={"a", "b"})
    assert v.handle_lease(lease("c", "L1", 1), now=0.0)["reason"] == REFUSED_LEADER_NOT_ELIGIBLE


def test_grant_status():
    v = voter()
    assert v.grant_status(0.0)["leader_id"] is None
    v.handle_lease(lease("b", "L1", 2), now=0.0)
    status = v.grant_status(4.0)
    assert (status["leader_id"], status["lease_id"], status["epoch"]) == ("b", "L1", 2)
    assert status["expires_in_s"] == pytest.approx(6.0)


@pytest.mark.parametrize("payload", [
    {}, lease("", "L", 1), lease("b", "L", 0), lease("b", "L", 1, duration=-1.0),
    {**lease("b", "L", 1), "epoch": "1"}, {**lease("b", "L", 1), "lease_duration": float("nan")},
])
def test_voter_rejects_malformed_requests(payload):
    with pytest.raises(ValueError):
        voter().handle_lease(payload, now=0.0)


# ----------------------------------------------------------------- node


def answer_all(nodes: dict[str, ElectionNode], out, now: float, drop: frozenset[str] = frozenset()) -> None:
    """Deliver every message (and the messages they cause) at once, except to nodes in `drop`."""
    queue = list(out)
    while queue:
        message = queue.pop(0)
        if message.destination in drop:
            continue
        reply = nodes[message.destination].on_request(message.kind, message.payload, now)
        sender = next(n for n in nodes.values() if message.request_id.startswith(n.lease_id))
        queue += sender.on_response(message.request_id, reply, now)


def test_single_voter_elects_itself():
    config = ElectionConfig(voters=("solo",), lease_ttl_s=TTL_S, election_timeout_s=1.0)
    node = ElectionNode("solo", config, eligible={"solo"}, now=0.0)
    assert node.tick(0.0) == []  # listening for a sitting leader first
    assert node.tick(config.renew_interval_s) == []  # no peers to tell
    assert node.is_leader(config.renew_interval_s)
    assert node.leader_id == "solo" and node.epoch == 1
    valid_until = node.leader_valid_until
    assert valid_until == pytest.approx(config.renew_interval_s + config.leader_lease_s(TTL_S))
    # It renews with its own voter and stays leader; the epoch stays the same.
    for step in range(1, 40):
        node.tick(config.renew_interval_s + step)
    assert node.is_leader(40.0) and node.epoch == 1 and node.drain_terms() == []


def test_node_that_stops_renewing_is_not_leader_at_its_expiry():
    config = ElectionConfig(voters=("solo",), lease_ttl_s=TTL_S, election_timeout_s=1.0)
    node = ElectionNode("solo", config, eligible={"solo"}, now=0.0)
    node.tick(4.0)
    until = node.leader_valid_until
    assert node.is_leader(until - 1e-6) and not node.is_leader(until)  # no tick needed
    node.tick(until + 5.0)
    [term] = node.drain_terms()
    assert (term.epoch, term.start, term.end) == (1, 4.0, until)
    # Lapsed leadership never resumes: the same tick stood again, at a new epoch.
    assert node.is_leader(until + 5.0) and node.epoch == 2


def test_highest_node_with_majority_becomes_leader_and_announces():
    nodes = {n: ElectionNode(n, CONFIG, eligible=NODES, now=0.0) for n in NODES}
    out = nodes["c"].tick(5.0)
    assert {m.kind for m in out} == {LEASE}  # nobody ranks above c
    assert {m.destination for m in out} == {"a", "b"}  # its own voter answered in-process
    answer_all(nodes, out, 5.0)
    assert nodes["c"].is_leader(5.0) and nodes["c"].epoch == 1
    assert nodes["a"].leader_id == "c" and nodes["b"].leader_id == "c" and nodes["a"].epoch == 1
    assert not nodes["a"].is_leader(5.0)


def test_bully_defers_to_a_higher_node_that_answers_alive():
    nodes = {n: ElectionNode(n, CONFIG, eligible=NODES, now=0.0) for n in NODES}
    out = nodes["a"].tick(5.0)
    assert sorted((m.kind, m.destination) for m in out) == [(ELECTION, "b"), (ELECTION, "c")]
    reply = nodes["c"].on_request(ELECTION, out[1].payload, 5.0)
    assert reply == {"response": ALIVE, "node_id": "c"}
    assert nodes["a"].on_response(out[1].request_id, reply, 5.0) == []
    assert nodes["a"].role is Role.DEFERRING
    assert nodes["a"].tick(5.0 + CONFIG.defer_timeout_s - 0.01) == []
    # c stands at its next tick even though it had not finished listening.
    answer_all(nodes, nodes["c"].tick(5.1), 5.1)
    assert nodes["c"].is_leader(5.1) and nodes["a"].leader_id == "c" and nodes["a"].role is Role.FOLLOWER


def test_lower_and_retired_nodes_answer_ok():
    node = ElectionNode("b", CONFIG, eligible=NODES, now=0.0)
    assert node.on_request(ELECTION, {"candidate_id": "c", "epoch": 0}, 1.0)["response"] == OK
    retired = ElectionNode("c", CONFIG, eligible={"a", "b"}, now=0.0)
    assert retired.on_request(ELECTION, {"candidate_id": "a", "epoch": 0}, 1.0)["response"] == OK
    assert retired.tick(100.0) == []


def test_candidate_stands_when_no_higher_node_answers():
    nodes = {n: ElectionNode(n, CONFIG, eligible=NODES, now=0.0) for n in NODES}
    nodes["b"].tick(5.0)  # election to c, which is down
    out = nodes["b"].tick(5.0 + CONFIG.election_timeout_s)
    assert {m.destination for m in out if m.kind == LEASE} == {"a", "c"}
    answer_all(nodes, out, 6.0, drop=frozenset({"c"}))
    assert nodes["b"].is_leader(6.0)


def test_minority_cannot_elect():
    config = ElectionConfig(voters=("a", "b", "c", "d", "e"), lease_ttl_s=TTL_S, election_timeout_s=1.0)
    everyone = frozenset(config.voters)
    nodes = {n: ElectionNode(n, config, eligible=everyone, now=0.0) for n in everyone}
    reachable = frozenset({"d", "e"})
    now = 4.0
    for _ in range(200):
        answer_all(nodes, nodes["e"].tick(now), now, drop=everyone - reachable)
        assert not nodes["e"].is_leader(now)
        now += 0.5
    assert nodes["e"].role is Role.CANDIDATE and nodes["e"].leader_id is None


def test_leader_steps_down_on_a_higher_epoch_in_a_coordinator_message():
    nodes = {n: ElectionNode(n, CONFIG, eligible=NODES, now=0.0) for n in NODES}
    answer_all(nodes, nodes["c"].tick(5.0), 5.0)
    assert nodes["c"].is_leader(5.0)
    reply = nodes["c"].on_request(COORDINATOR, {"leader_id": "b", "epoch": 7, "lease_id": "x"}, 6.0)
    assert reply["accepted"] is True
    assert not nodes["c"].is_leader(6.0) and nodes["c"].leader_id == "b" and nodes["c"].epoch == 7
    [term] = nodes["c"].drain_terms()
    assert term.end == 6.0
    # Its own voter no longer grants below the new epoch.
    assert nodes["c"].on_request(LEASE, lease("c", nodes["c"].lease_id, 1), 6.0)["granted"] is False


def test_leader_steps_down_on_a_higher_epoch_in_a_lease_refusal():
    nodes = {n: ElectionNode(n, CONFIG, eligible=NODES, now=0.0) for n in NODES}
    answer_all(nodes, nodes["c"].tick(5.0), 5.0)
    nodes["a"].voter.observe_epoch(9)
    nodes["b"].voter.observe_epoch(9)
    renewal = nodes["c"].tick(5.0 + CONFIG.renew_interval_s)
    leases = [m for m in renewal if m.kind == LEASE]
    reply = nodes["a"].on_request(LEASE, leases[0].payload, 9.0)
    assert reply["granted"] is False and reply["epoch"] == 9
    nodes["c"].on_response(leases[0].request_id, reply, 9.0)
    assert not nodes["c"].is_leader(9.0) and nodes["c"].highest_epoch == 9
    # Its next candidacy goes above what it saw.
    assert nodes["c"].epoch == 1


def test_candidate_goes_above_the_epochs_its_own_voter_granted():
    node = ElectionNode("c", CONFIG, eligible=NODES, now=0.0)
    assert node.on_request(LEASE, lease("b", "Lb", 6), 1.0)["granted"]
    assert node.highest_epoch == 6
    out = node.tick(20.0)  # b's grant has run out; c stands at once
    assert {m.payload["epoch"] for m in out if m.kind == LEASE} == {7}


def test_leader_steps_down_when_a_command_is_refused_for_a_higher_epoch():
    nodes = {n: ElectionNode(n, CONFIG, eligible=NODES, now=0.0) for n in NODES}
    answer_all(nodes, nodes["c"].tick(5.0), 5.0)
    nodes["c"].observe_epoch(1, 6.0)  # its own epoch: nothing happens
    assert nodes["c"].is_leader(6.0)
    nodes["c"].observe_epoch(2, 6.0)
    assert not nodes["c"].is_leader(6.0)


def test_refused_coordinator_message_makes_a_stale_leader_step_down():
    nodes = {n: ElectionNode(n, CONFIG, eligible=NODES, now=0.0) for n in NODES}
    answer_all(nodes, nodes["c"].tick(5.0), 5.0)
    nodes["a"].on_request(COORDINATOR, {"leader_id": "b", "epoch": 3, "lease_id": "x"}, 5.5)
    announcements = [m for m in nodes["c"].tick(5.0 + CONFIG.renew_interval_s) if m.kind == COORDINATOR]
    to_a = next(m for m in announcements if m.destination == "a")
    reply = nodes["a"].on_request(COORDINATOR, to_a.payload, 9.0)
    assert reply == {"accepted": False, "node_id": "a", "epoch": 3, "leader_id": "b"}
    nodes["c"].on_response(to_a.request_id, reply, 9.0)
    assert not nodes["c"].is_leader(9.0)


def test_leader_renews_with_the_same_epoch_and_survives_one_silent_voter():
    nodes = {n: ElectionNode(n, CONFIG, eligible=NODES, now=0.0) for n in NODES}
    answer_all(nodes, nodes["c"].tick(5.0), 5.0)
    now = 5.0
    while now < 60.0:
        now += 0.5
        answer_all(nodes, nodes["c"].tick(now), now, drop=frozenset({"b"}))
        assert nodes["c"].is_leader(now) and nodes["c"].epoch == 1


def test_retired_leader_steps_down():
    nodes = {n: ElectionNode(n, CONFIG, eligible=NODES, now=0.0) for n in NODES}
    answer_all(nodes, nodes["c"].tick(5.0), 5.0)
    nodes["c"].set_eligible({"a", "b"}, 6.0)
    assert not nodes["c"].is_leader(6.0) and nodes["c"].tick(7.0) == []
    assert nodes["c"].on_request(LEASE, lease("b", "L", 5), 7.0)["reason"] == REFUSED_RETIRED


def test_grant_query_on_voter_and_non_voter():
    node = ElectionNode("a", CONFIG, eligible=NODES, now=0.0)
    assert node.on_request(GRANT, {}, 0.0)["leader_id"] is None
    node.on_request(LEASE, lease("b", "L1", 1), 1.0)
    assert node.on_request(GRANT, {}, 2.0)["leader_id"] == "b"
    outsider = ElectionNode("z", CONFIG, eligible=NODES | {"z"}, now=0.0)
    assert outsider.voter is None and outsider.on_request(GRANT, {}, 0.0)["leader_id"] is None
    assert outsider.on_request(LEASE, lease("b", "L1", 1), 0.0)["granted"] is False


def test_record_round_trip_keeps_epochs_and_quarantines_the_voter():
    nodes = {n: ElectionNode(n, CONFIG, eligible=NODES, now=0.0) for n in NODES}
    answer_all(nodes, nodes["c"].tick(5.0), 5.0)
    record = nodes["a"].to_record()
    assert record["epoch"] == 1 and record["epoch_leader"] == "c" and record["voter"]["grant"]["leader_id"] == "c"
    restarted = ElectionNode.from_record(record, CONFIG, now=0.0, eligible=NODES)
    assert restarted.epoch == 1 and restarted.leader_id is None and restarted.role is Role.FOLLOWER
    assert restarted.lease_id != nodes["a"].lease_id
    assert restarted.on_request(LEASE, lease("b", "L2", 2), 9.0)["reason"] == REFUSED_HELD
    with pytest.raises(ValueError):
        ElectionNode.from_record({**record, "format": 99}, CONFIG, now=0.0, eligible=NODES)


def test_late_and_unknown_answers_are_ignored():
    nodes = {n: ElectionNode(n, CONFIG, eligible=NODES, now=0.0) for n in NODES}
    assert nodes["c"].on_response("nobody-1", {"granted": True}, 1.0) == []
    out = nodes["c"].tick(5.0)
    reply = nodes["a"].on_request(LEASE, out[0].payload, 5.0)
    nodes["c"].on_response(out[0].request_id, reply, 5.0)
    assert nodes["c"].is_leader(5.0)
    # The duplicate of an answer already taken changes nothing.
    assert nodes["c"].on_response(out[0].request_id, reply, 5.0) == []


def test_unknown_kind_is_rejected():
    with pytest.raises(ValueError):
        ElectionNode("a", CONFIG, eligible=NODES, now=0.0).on_request("bogus", {}, 0.0)
