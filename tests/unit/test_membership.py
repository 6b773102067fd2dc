"""The membership state machine on a hand-driven clock."""
import pytest

from orchestrator.cluster.membership import ClusterHealth, Membership, MembershipConfig, cluster_health
from orchestrator.errors import BadRequest, Conflict


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def _membership():
    clock = Clock()
    return Membership("me", MembershipConfig(peer_timeout_s=10, dead_after_s=30, retire_after_s=100), clock), clock


def test_silence_moves_a_peer_through_every_state():
    members, clock = _membership()
    members.heartbeat("me")
    peer = members.heartbeat("b")
    seen = []
    for _ in range(12):
        members.tick()
        seen.append(members.state(peer).value)
        clock.now += 10
    assert seen[:4] == ["alive", "suspect", "suspect", "dead"] and seen[-1] == "retired"
    assert members.state(members.get("me")).value == "alive", "a node never times itself out"


def test_retired_is_sticky_until_unretired_and_unretire_restarts_the_clock():
    members, clock = _membership()
    peer = members.heartbeat("b")
    clock.now += 101
    assert [p.node_id for p in members.tick()] == ["b"]
    members.heartbeat("b")
    assert members.state(peer).value == "retired"
    assert "b" not in members.eligible()
    clock.now += 1000
    members.unretire("b")
    assert members.state(peer).value == "alive" and members.tick() == []
    clock.now += 50
    assert members.state(peer).value == "dead" and members.tick() == []
    clock.now += 51
    assert members.tick() == [peer]


def test_ray_evidence_marks_dead_at_once_and_a_heartbeat_revives():
    members, _ = _membership()
    peer = members.set_address("b", "h", 1, ray_node_id="r1")
    members.heartbeat("b")
    members.set_address("me", "h0", 2, ray_node_id="r0")
    members.heartbeat("me")
    assert members.mark_ray_dead({"r1", "r0"}) == [peer]
    assert members.state(peer).value == "dead" and members.state(members.get("me")).value == "alive"
    members.heartbeat("b")
    assert members.state(peer).value == "alive"


def test_purges_never_remove_self():
    members, clock = _membership()
    members.heartbeat("me")
    members.heartbeat("b")
    clock.now += 500
    members.tick()
    assert members.purge_stale(60) == ["b"]
    members.heartbeat("c")
    clock.now += 200
    members.tick()
    assert members.purge_retired() == ["c"] and [p.node_id for p in members.peers()] == ["me"]


def test_records_round_trip():
    members, clock = _membership()
    members.set_address("b", "h", 7)
    members.heartbeat("b", resources={"cpu": 2}, jobs=[{"job_id": "j", "state": "running"}])
    clock.now += 200
    members.tick()
    again = Membership("me", members.config, clock)
    again.load([p.to_record() for p in members.peers()])
    assert again.state(again.get("b")).value == "retired" and again.get("b").port == 7


def test_cluster_health_rule():
    assert cluster_health(["alive"], "me", 0) is ClusterHealth.HEALTHY
    assert cluster_health(["alive", "alive", "suspect"], "me", 0) is ClusterHealth.DEGRADED
    assert cluster_health(["alive", "alive"], "me", 1) is ClusterHealth.DEGRADED
    assert cluster_health(["alive", "dead", "dead"], "me", 0) is ClusterHealth.CRITICAL
    assert cluster_health(["alive", "retired", "retired"], "me", 0) is ClusterHealth.HEALTHY
    assert cluster_health(["alive"], None, 0) is ClusterHealth.CRITICAL


def test_a_heartbeat_never_moves_an_address():
    members, _ = _membership()
    members.set_address("leader", "10.0.0.1", 8770, ray_node_id="r1")
    members.heartbeat("leader", resources={"cpu": 1})
    assert (members.get("leader").host, members.get("leader").port) == ("10.0.0.1", 8770)


def test_a_ray_peer_address_cannot_be_claimed_over_http():
    members, _ = _membership()
    members.set_address("leader", "10.0.0.1", 8770, ray_node_id="r1")
    for register in (False, True):
        with pytest.raises(Conflict):
            members.http_address("leader", source="10.6.6.6", claimed_host=None, port=80, register=register)
    assert (members.get("leader").host, members.get("leader").port) == ("10.0.0.1", 8770)


def test_an_http_peer_moves_only_by_registering_from_its_new_address():
    members, _ = _membership()
    peer = members.http_address("ext", source="10.0.0.9", claimed_host=None, port=9000, register=False)
    assert (peer.host, peer.port) == ("10.0.0.9", 9000), "first sight sets it"
    members.http_address("ext", source="10.6.6.6", claimed_host="10.6.6.6", port=80, register=False)
    assert (peer.host, peer.port) == ("10.0.0.9", 9000), "a heartbeat from elsewhere moves nothing"
    with pytest.raises(BadRequest) as bad:
        members.http_address("ext", source="10.6.6.6", claimed_host="10.0.0.7", port=80, register=True)
    assert bad.value.extra["field"] == "host" and (peer.host, peer.port) == ("10.0.0.9", 9000)
    members.http_address("ext", source="10.0.0.7", claimed_host=None, port=9001, register=True)
    assert (peer.host, peer.port) == ("10.0.0.7", 9001), "a re-register from the new address moves it"


def test_a_peer_first_known_by_its_address_counts_its_silence_from_then():
    members, clock = _membership()
    peer = members.set_address("b", "h", 1, ray_node_id="r1")
    assert members.tick() == [] and members.state(peer).value == "alive"
    clock.now += 101
    assert members.tick() == [peer]
