"""Voter leases and one node's election brain, message by message, on hand-driven clocks."""
from __future__ import annotations

import pytest

from orchestrator.cluster.election import (ALIVE, COORDINATOR, ELECTION, GRANT, LEASE, OK, REFUSED_UNKNOWN_LEADER,
                                           REFUSED_UNREGISTERED, ElectionNode, Role)
from orchestrator.cluster.lease import (MAX_EPOCH, REFUSED_HELD, REFUSED_LEADER_NOT_ELIGIBLE, REFUSED_RETIRED,
                                        REFUSED_STALE_EPOCH, ElectionConfig, MalformedMessage, Voter)

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
    """Deliver every message (and the messages they cause) at once, except to nodes in `drop`;
    the cluster store registers every term that is won."""
    queue = list(out)
    while queue:
        message = queue.pop(0)
        if message.destination in drop:
            continue
        reply = nodes[message.destination].on_request(message.kind, message.payload, now, term_registered=True).reply
        sender = next(n for n in nodes.values() if message.request_id.startswith(n.lease_id))
        queue += sender.on_response(message.request_id, reply, now).messages


def test_single_voter_elects_itself():
    config = ElectionConfig(voters=("solo",), lease_ttl_s=TTL_S, election_timeout_s=1.0)
    node = ElectionNode("solo", config, eligible={"solo"}, now=0.0)
    assert node.tick(0.0).messages == ()  # listening for a sitting leader first
    assert node.tick(config.renew_interval_s).messages == ()  # no peers to tell
    assert node.is_leader(config.renew_interval_s)
    assert node.leader_id == "solo" and node.epoch == 1
    valid_until = node.leader_valid_until
    assert valid_until == pytest.approx(config.renew_interval_s + config.leader_lease_s(TTL_S))
    # It renews with its own voter and stays leader; the epoch stays the same.
    for step in range(1, 40):
        node.tick(config.renew_interval_s + step).messages
    assert node.is_leader(40.0) and node.epoch == 1 and node.drain_terms() == []


def test_node_that_stops_renewing_is_not_leader_at_its_expiry():
    config = ElectionConfig(voters=("solo",), lease_ttl_s=TTL_S, election_timeout_s=1.0)
    node = ElectionNode("solo", config, eligible={"solo"}, now=0.0)
    node.tick(4.0).messages
    until = node.leader_valid_until
    assert node.is_leader(until - 1e-6) and not node.is_leader(until)  # no tick needed
    node.tick(until + 5.0).messages
    [term] = node.drain_terms()
    assert (term.epoch, term.start, term.end) == (1, 4.0, until)
    # Lapsed leadership never resumes: the same tick stood again, at a new epoch.
    assert node.is_leader(until + 5.0) and node.epoch == 2


def test_highest_node_with_majority_becomes_leader_and_announces():
    nodes = {n: ElectionNode(n, CONFIG, eligible=NODES, now=0.0) for n in NODES}
    out = nodes["c"].tick(5.0).messages
    assert {m.kind for m in out} == {LEASE}  # nobody ranks above c
    assert {m.destination for m in out} == {"a", "b"}  # its own voter answered in-process
    answer_all(nodes, out, 5.0)
    assert nodes["c"].is_leader(5.0) and nodes["c"].epoch == 1
    assert nodes["a"].leader_id == "c" and nodes["b"].leader_id == "c" and nodes["a"].epoch == 1
    assert not nodes["a"].is_leader(5.0)


def test_bully_defers_to_a_higher_node_that_answers_alive():
    nodes = {n: ElectionNode(n, CONFIG, eligible=NODES, now=0.0) for n in NODES}
    out = nodes["a"].tick(5.0).messages
    assert sorted((m.kind, m.destination) for m in out) == [(ELECTION, "b"), (ELECTION, "c")]
    reply = nodes["c"].on_request(ELECTION, out[1].payload, 5.0).reply
    assert reply == {"response": ALIVE, "node_id": "c"}
    assert nodes["a"].on_response(out[1].request_id, reply, 5.0).messages == ()
    assert nodes["a"].role is Role.DEFERRING
    assert nodes["a"].tick(5.0 + CONFIG.defer_timeout_s - 0.01).messages == ()
    # c stands at its next tick even though it had not finished listening.
    answer_all(nodes, nodes["c"].tick(5.1).messages, 5.1)
    assert nodes["c"].is_leader(5.1) and nodes["a"].leader_id == "c" and nodes["a"].role is Role.FOLLOWER


def test_lower_and_retired_nodes_answer_ok():
    node = ElectionNode("b", CONFIG, eligible=NODES, now=0.0)
    assert node.on_request(ELECTION, {"candidate_id": "c", "epoch": 0}, 1.0).reply["response"] == OK
    retired = ElectionNode("c", CONFIG, eligible={"a", "b"}, now=0.0)
    assert retired.on_request(ELECTION, {"candidate_id": "a", "epoch": 0}, 1.0).reply["response"] == OK
    assert retired.tick(100.0).messages == ()


def test_candidate_stands_when_no_higher_node_answers():
    nodes = {n: ElectionNode(n, CONFIG, eligible=NODES, now=0.0) for n in NODES}
    nodes["b"].tick(5.0).messages  # election to c, which is down
    out = nodes["b"].tick(5.0 + CONFIG.election_timeout_s).messages
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
        answer_all(nodes, nodes["e"].tick(now).messages, now, drop=everyone - reachable)
        assert not nodes["e"].is_leader(now)
        now += 0.5
    assert nodes["e"].role is Role.CANDIDATE and nodes["e"].leader_id is None


def test_leader_steps_down_on_a_higher_epoch_in_a_coordinator_message():
    nodes = {n: ElectionNode(n, CONFIG, eligible=NODES, now=0.0) for n in NODES}
    answer_all(nodes, nodes["c"].tick(5.0).messages, 5.0)
    assert nodes["c"].is_leader(5.0)
    reply = nodes["c"].on_request(COORDINATOR, {"leader_id": "b", "epoch": 7, "lease_id": "x"}, 6.0,
                                  term_registered=True).reply
    assert reply["accepted"] is True
    assert not nodes["c"].is_leader(6.0) and nodes["c"].leader_id == "b" and nodes["c"].epoch == 7
    [term] = nodes["c"].drain_terms()
    assert term.end == 6.0
    # Its own voter no longer grants below the new epoch.
    assert nodes["c"].on_request(LEASE, lease("c", nodes["c"].lease_id, 1), 6.0).reply["granted"] is False


def test_leader_steps_down_on_a_higher_epoch_in_a_lease_refusal():
    nodes = {n: ElectionNode(n, CONFIG, eligible=NODES, now=0.0) for n in NODES}
    answer_all(nodes, nodes["c"].tick(5.0).messages, 5.0)
    nodes["a"].voter.observe_epoch(9)
    nodes["b"].voter.observe_epoch(9)
    renewal = nodes["c"].tick(5.0 + CONFIG.renew_interval_s).messages
    leases = [m for m in renewal if m.kind == LEASE]
    reply = nodes["a"].on_request(LEASE, leases[0].payload, 9.0).reply
    assert reply["granted"] is False and reply["epoch"] == 9
    nodes["c"].on_response(leases[0].request_id, reply, 9.0).messages
    assert not nodes["c"].is_leader(9.0) and nodes["c"].highest_epoch == 9
    # Its next candidacy goes above what it saw.
    assert nodes["c"].epoch == 1


def test_candidate_goes_above_the_epochs_its_own_voter_granted():
    node = ElectionNode("c", CONFIG, eligible=NODES, now=0.0)
    assert node.on_request(LEASE, lease("b", "Lb", 6), 1.0).reply["granted"]
    assert node.highest_epoch == 6
    out = node.tick(20.0).messages  # b's grant has run out; c stands at once
    assert {m.payload["epoch"] for m in out if m.kind == LEASE} == {7}


def test_leader_steps_down_when_a_command_is_refused_for_a_higher_epoch():
    nodes = {n: ElectionNode(n, CONFIG, eligible=NODES, now=0.0) for n in NODES}
    answer_all(nodes, nodes["c"].tick(5.0).messages, 5.0)
    nodes["c"].observe_epoch(1, 6.0)  # its own epoch: nothing happens
    assert nodes["c"].is_leader(6.0)
    nodes["c"].observe_epoch(2, 6.0)
    assert not nodes["c"].is_leader(6.0)


def test_refused_coordinator_message_makes_a_stale_leader_step_down():
    nodes = {n: ElectionNode(n, CONFIG, eligible=NODES, now=0.0) for n in NODES}
    answer_all(nodes, nodes["c"].tick(5.0).messages, 5.0)
    nodes["a"].on_request(COORDINATOR, {"leader_id": "b", "epoch": 3, "lease_id": "x"}, 5.5, term_registered=True)
    announcements = [m for m in nodes["c"].tick(5.0 + CONFIG.renew_interval_s).messages if m.kind == COORDINATOR]
    to_a = next(m for m in announcements if m.destination == "a")
    reply = nodes["a"].on_request(COORDINATOR, to_a.payload, 9.0).reply
    assert reply == {"accepted": False, "node_id": "a", "epoch": 3, "leader_id": "b", "reason": "stale_epoch"}
    nodes["c"].on_response(to_a.request_id, reply, 9.0).messages
    assert not nodes["c"].is_leader(9.0)


def test_leader_renews_with_the_same_epoch_and_survives_one_silent_voter():
    nodes = {n: ElectionNode(n, CONFIG, eligible=NODES, now=0.0) for n in NODES}
    answer_all(nodes, nodes["c"].tick(5.0).messages, 5.0)
    now = 5.0
    while now < 60.0:
        now += 0.5
        answer_all(nodes, nodes["c"].tick(now).messages, now, drop=frozenset({"b"}))
        assert nodes["c"].is_leader(now) and nodes["c"].epoch == 1


def test_retired_leader_steps_down():
    nodes = {n: ElectionNode(n, CONFIG, eligible=NODES, now=0.0) for n in NODES}
    answer_all(nodes, nodes["c"].tick(5.0).messages, 5.0)
    nodes["c"].set_eligible({"a", "b"}, 6.0)
    assert not nodes["c"].is_leader(6.0) and nodes["c"].tick(7.0).messages == ()
    assert nodes["c"].on_request(LEASE, lease("b", "L", 5), 7.0).reply["reason"] == REFUSED_RETIRED


def test_grant_query_on_voter_and_non_voter():
    node = ElectionNode("a", CONFIG, eligible=NODES, now=0.0)
    assert node.on_request(GRANT, {}, 0.0).reply["leader_id"] is None
    node.on_request(LEASE, lease("b", "L1", 1), 1.0).reply
    assert node.on_request(GRANT, {}, 2.0).reply["leader_id"] == "b"
    outsider = ElectionNode("z", CONFIG, eligible=NODES | {"z"}, now=0.0)
    assert outsider.voter is None and outsider.on_request(GRANT, {}, 0.0).reply["leader_id"] is None
    assert outsider.on_request(LEASE, lease("b", "L1", 1), 0.0).reply["granted"] is False


def test_record_round_trip_keeps_epochs_and_quarantines_the_voter():
    nodes = {n: ElectionNode(n, CONFIG, eligible=NODES, now=0.0) for n in NODES}
    answer_all(nodes, nodes["c"].tick(5.0).messages, 5.0)
    record = nodes["a"].to_record()
    assert record["epoch"] == 1 and record["epoch_leader"] == "c" and record["voter"]["grant"]["leader_id"] == "c"
    restarted = ElectionNode.from_record(record, CONFIG, now=0.0, eligible=NODES)
    assert restarted.epoch == 1 and restarted.leader_id is None and restarted.role is Role.FOLLOWER
    assert restarted.lease_id != nodes["a"].lease_id
    assert restarted.on_request(LEASE, lease("b", "L2", 2), 9.0).reply["reason"] == REFUSED_HELD
    with pytest.raises(ValueError):
        ElectionNode.from_record({**record, "format": 99}, CONFIG, now=0.0, eligible=NODES)


def test_late_and_unknown_answers_are_ignored():
    nodes = {n: ElectionNode(n, CONFIG, eligible=NODES, now=0.0) for n in NODES}
    assert nodes["c"].on_response("nobody-1", {"granted": True}, 1.0).messages == ()
    out = nodes["c"].tick(5.0).messages
    reply = nodes["a"].on_request(LEASE, out[0].payload, 5.0).reply
    nodes["c"].on_response(out[0].request_id, reply, 5.0).messages
    assert nodes["c"].is_leader(5.0)
    # The duplicate of an answer already taken changes nothing.
    assert nodes["c"].on_response(out[0].request_id, reply, 5.0).messages == ()


def test_unknown_kind_is_rejected():
    with pytest.raises(MalformedMessage) as bad:
        ElectionNode("a", CONFIG, eligible=NODES, now=0.0).on_request("bogus", {}, 0.0)
    assert bad.value.field == "kind"


@pytest.mark.parametrize("kind,payload,field", [
    (COORDINATOR, {"leader_id": "c", "epoch": 2**70}, "epoch"),
    (COORDINATOR, {"leader_id": "c", "epoch": 0}, "epoch"),
    (COORDINATOR, {"epoch": 3}, "leader_id"),
    (ELECTION, {"candidate_id": "c", "epoch": MAX_EPOCH + 1}, "epoch"),
    (ELECTION, {"candidate_id": "c", "epoch": -1}, "epoch"),
    (LEASE, lease("b", "L", MAX_EPOCH + 1), "epoch"),
    (LEASE, {**lease("b", "L", 1), "lease_duration": "x"}, "lease_duration"),
])
def test_malformed_messages_name_the_field_and_change_nothing(kind, payload, field):
    node = ElectionNode("a", CONFIG, eligible=NODES, now=0.0)
    before = node.to_record()
    with pytest.raises(MalformedMessage) as bad:
        node.on_request(kind, payload, 1.0, term_registered=True)
    assert bad.value.field == field and str(bad.value).startswith(f"{field}: ")
    assert node.to_record() == before and node.highest_epoch == 0


def test_the_largest_epoch_is_accepted():
    node = ElectionNode("a", CONFIG, eligible=NODES, now=0.0)
    node.on_request(ELECTION, {"candidate_id": "c", "epoch": MAX_EPOCH}, 1.0)
    assert node.highest_epoch == MAX_EPOCH


def test_coordinator_from_an_unknown_node_is_refused_even_when_registered():
    node = ElectionNode("a", CONFIG, eligible=NODES, now=0.0)
    node.tick(0.0)  # hands out the initial record
    ready = node.on_request(COORDINATOR, {"leader_id": "zzz", "epoch": 5}, 1.0, term_registered=True)
    assert ready.reply["accepted"] is False and ready.reply["reason"] == REFUSED_UNKNOWN_LEADER
    assert node.leader_id is None and node.epoch == 0 and node.highest_epoch == 0 and ready.record is None


def test_a_new_leadership_needs_its_term_registered_and_then_sticks():
    node = ElectionNode("a", CONFIG, eligible=NODES, now=0.0)
    node.tick(0.0)
    announce = {"leader_id": "c", "epoch": 4, "lease_id": "x"}
    refused = node.on_request(COORDINATOR, announce, 1.0).reply
    assert refused["accepted"] is False and refused["reason"] == REFUSED_UNREGISTERED
    assert node.leader_id is None and node.highest_epoch == 0
    accepted = node.on_request(COORDINATOR, announce, 1.0, term_registered=True)
    assert accepted.reply["accepted"] is True and node.leader_id == "c"
    assert accepted.record is not None and accepted.record["epoch"] == 4, "the new epoch is handed out to persist"
    # Renewals of a leadership already accepted need no new proof, and change nothing durable.
    again = node.on_request(COORDINATOR, announce, 2.0)
    assert again.reply["accepted"] is True and again.record is None


def test_ready_hands_out_the_record_once_and_the_new_term_before_its_announcements():
    config = ElectionConfig(voters=("a", "b", "c"), lease_ttl_s=TTL_S, election_timeout_s=1.0)
    nodes = {n: ElectionNode(n, config, eligible=NODES, now=0.0) for n in NODES}
    first = nodes["c"].tick(5.0)
    assert first.record is not None and first.record["highest_epoch"] == 1 and first.term_epoch is None
    assert nodes["c"].tick(5.01).record is None, "unchanged state is not handed out again"
    grant = nodes["a"].on_request(LEASE, first.messages[0].payload, 5.0)
    assert grant.reply["granted"] and grant.record["voter"]["grant"]["leader_id"] == "c"
    won = nodes["c"].on_response(first.messages[0].request_id, grant.reply, 5.0)
    assert won.term_epoch == 1 and {m.kind for m in won.messages} == {COORDINATOR}
    assert won.record["epoch"] == 1 and won.record["epoch_leader"] == "c"
    renewal = nodes["c"].tick(5.0 + config.renew_interval_s)
    assert renewal.term_epoch is None and COORDINATOR in {m.kind for m in renewal.messages}


def test_a_refused_term_ends_unrecorded_and_the_next_one_goes_above_the_store():
    config = ElectionConfig(voters=("solo",), lease_ttl_s=TTL_S, election_timeout_s=1.0)
    node = ElectionNode("solo", config, eligible={"solo"}, now=0.0)
    assert node.tick(4.0).term_epoch == 1
    node.term_refused(4.1, epoch=9)
    assert not node.is_leader(4.1) and node.drain_terms() == []
    assert node.tick(4.1 + config.renew_interval_s).term_epoch == 10
    node.term_refused(5.0)  # the store could not answer
    assert not node.is_leader(5.0) and node.tick(5.0 + config.renew_interval_s).term_epoch == 11


def test_step_down_ends_the_term_and_the_next_one_goes_higher():
    config = ElectionConfig(voters=("solo",), lease_ttl_s=TTL_S, election_timeout_s=1.0)
    node = ElectionNode("solo", config, eligible={"solo"}, now=0.0)
    assert node.tick(4.0).term_epoch == 1
    node.step_down(4.5)
    assert not node.is_leader(4.5) and [t.end for t in node.drain_terms()] == [4.5]
    assert node.tick(4.5 + config.renew_interval_s).term_epoch == 2


def test_a_voter_change_ends_a_leadership_and_moves_the_quorum():
    config = ElectionConfig(voters=("solo",), lease_ttl_s=TTL_S, election_timeout_s=1.0)
    node = ElectionNode("solo", config, eligible={"solo", "b", "c"}, now=0.0)
    node.tick(4.0)
    assert node.is_leader(4.0)
    node.set_voters(["b", "c", "solo"], 5.0)
    assert not node.is_leader(5.0) and node.config.quorum == 2
    assert [t.end for t in node.drain_terms()] == [5.0]
    node.set_voters(["b", "c"], 6.0)
    assert node.voter is None
    assert node.on_request(LEASE, lease("b", "L", 9), 6.0).reply["reason"] == "not_a_voter"
    # A voter added again never grants below what this node has seen.
    node.set_voters(["b", "solo"], 7.0)
    assert node.on_request(LEASE, lease("b", "L", 1), 7.0).reply["reason"] == REFUSED_STALE_EPOCH


def test_a_node_that_has_seen_the_last_epoch_never_proposes_beyond_it():
    config = ElectionConfig(voters=("solo",), lease_ttl_s=TTL_S, election_timeout_s=1.0)
    node = ElectionNode("solo", config, eligible={"solo"}, now=0.0)
    node.observe_epoch(MAX_EPOCH, 0.0)
    for step in range(50):
        assert node.tick(float(step)).messages == ()
    assert node.role is Role.FOLLOWER and node.highest_epoch == MAX_EPOCH
