"""Messages from other nodes are untrusted: out-of-range epochs, forged announcements, redirected
addresses and fault-injection hooks must not move a node."""
import time

import pytest
import ray

from orchestrator.errors import BadRequest
from tests.harness import FAST_TIMINGS, wait_until

TTL_S = FAST_TIMINGS["lease_ttl_s"]
HUGE_EPOCH = 1180591620717411303424  # 2**70: SQLite cannot store it


def _election(node):
    return node.get("/election/status").json()


def test_forged_coordinator_messages_are_refused_and_the_node_keeps_a_leader(gateways):
    voters = ["sec-a", "sec-b"]
    a = gateways.start("sec-a", gateways.ray_node_id(0), voters=voters)
    b = gateways.start("sec-b", gateways.ray_node_id(1), voters=voters)
    wait_until(lambda: a.health()["leader_id"] == "sec-b" and b.health()["is_leader"], timeout_s=30 * TTL_S,
               what="sec-b leads and sec-a follows")
    epoch = _election(a)["epoch"]

    huge = a.post("/coordinator", json={"leader_id": "zzz", "epoch": HUGE_EPOCH})
    assert huge.status_code == 400 and "epoch" in huge.json()["error"], huge.text
    for path, body in (("/election", {"candidate_id": "zzz", "epoch": HUGE_EPOCH}),
                       ("/election/lease", {"leader_id": "sec-a", "lease_id": "x", "lease_duration": 1.0,
                                            "epoch": HUGE_EPOCH})):
        assert a.post(path, json=body).status_code == 400
    with pytest.raises(BadRequest) as typed:  # over Ray too: a typed error naming the field
        ray.get(a.actors.election.on_request.remote("coordinator", {"leader_id": "zzz", "epoch": HUGE_EPOCH}),
                timeout=30)
    assert typed.value.extra["field"] == "epoch"

    unknown = a.post("/coordinator", json={"leader_id": "zzz", "epoch": epoch + 1})
    assert unknown.status_code == 409 and unknown.json()["reason"] == "unknown_leader", unknown.text
    # The real leader's id, or the follower's, at an epoch nobody won.
    for target, claimed in ((a, "sec-b"), (b, "sec-a")):
        forged = target.post("/coordinator", json={"leader_id": claimed, "epoch": 2**63 - 1})
        assert forged.status_code == 409 and forged.json()["reason"] == "unregistered_epoch", forged.text
    # Nothing was taken in: the node keeps following the real leader at the real epoch...
    status = _election(a)
    assert status["leader_id"] == "sec-b" and status["epoch"] == epoch and status["highest_epoch"] < 2**32
    # ...and still has a leader a lease and a second later, whose terms the store registers as usual.
    time.sleep(1.5 * TTL_S + 1.0)
    assert a.health()["leader_id"] == "sec-b" and b.health()["is_leader"]
    assert ray.get(b.actors.election.leader_write.remote("probe", "sec", {"ok": 1}), timeout=30)["epoch"] == epoch


def test_a_store_failure_in_begin_term_is_a_refused_term_not_a_wedge(gateways):
    node = gateways.start("sec-w", gateways.ray_node_id(0))
    wait_until(lambda: node.health()["is_leader"], timeout_s=30 * TTL_S, what="sec-w leads")
    epoch = _election(node)["epoch"]
    # The store goes down (Ray restarts it) just as the node must begin a new term.
    ray.kill(node.actors.cluster_store, no_restart=False)
    ray.get(node.actors.election.observe_epoch.remote(epoch + 1), timeout=30)
    wait_until(lambda: node.health()["is_leader"] and _election(node)["epoch"] > epoch + 1, timeout_s=20 * TTL_S,
               what="a new term, registered once the store is back")
    registered = ray.get(node.actors.cluster_store.epoch_history.remote(), timeout=30)[-1]
    assert (registered["epoch"], registered["node_id"]) == (_election(node)["epoch"], "sec-w")


def test_heartbeats_cannot_redirect_a_ray_peer_and_forwarding_goes_to_its_own_address(gateways):
    voters = ["sec-f", "sec-g"]
    f = gateways.start("sec-f", gateways.ray_node_id(0), voters=voters)
    g = gateways.start("sec-g", gateways.ray_node_id(1), voters=voters)
    wait_until(lambda: f.health()["leader_id"] == "sec-g" and g.health()["is_leader"], timeout_s=30 * TTL_S,
               what="sec-g leads and sec-f follows")
    wait_until(lambda: next((p["port"] for p in f.status()["peers"] if p["node_id"] == "sec-g"), None)
               == g.settings.port, what="sec-f knows sec-g's address from sec-g's own actor")
    forged = {"node_id": "sec-g", "host": "127.0.0.9", "port": 1, "timestamp": time.time()}
    for path in ("/heartbeat", "/register"):
        refused = f.post(path, json=forged)
        assert refused.status_code == 409, refused.text
    ray.get(f.actors.peer.receive_heartbeat.remote(forged), timeout=30)  # over Ray: liveness only
    time.sleep(0.5)
    peer = next(p for p in f.status()["peers"] if p["node_id"] == "sec-g")
    assert (peer["host"], peer["port"]) == ("127.0.0.1", g.settings.port)
    forwarded = f.post("/admin/voters", json={"add": ["sec-f"]})  # leader-only: relayed to sec-g itself
    assert forwarded.headers.get("X-P2P-Leader") == "sec-g" and forwarded.status_code == 409, forwarded.text
    assert "configured" in forwarded.json()["error"]

    # An HTTP peer: its address is where it registers from, and a heartbeat never moves it.
    assert f.post("/register", json={"node_id": "sec-ext", "port": 9100}).json()["peer"]["host"] == "127.0.0.1"
    assert f.post("/register", json={"node_id": "sec-ext", "host": "10.0.0.1", "port": 9100}).status_code == 400
    f.post("/heartbeat", json={"node_id": "sec-ext", "host": "10.0.0.1", "port": 9200})
    assert next(p for p in f.status()["peers"] if p["node_id"] == "sec-ext")["port"] == 9100


def test_fault_injection_needs_the_test_flag(gateways):
    plain = gateways.start("sec-plain", gateways.ray_node_id(0))
    with pytest.raises(PermissionError):
        ray.get(plain.actors.election.isolate.remote(["anyone"]), timeout=30)
    assert _election(plain)["isolated_from"] == []
    hooked = gateways.start("sec-hooked", gateways.ray_node_id(1), fault_injection=True)
    assert ray.get(hooked.actors.election.isolate.remote(["anyone"]), timeout=30) == ["anyone"]
