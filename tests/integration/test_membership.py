"""Membership across real Ray nodes: automatic peers, HTTP heartbeats, the life of a removed node."""
import time

from tests.conftest import node_args
from tests.harness import wait_until


def test_ray_nodes_are_peers_of_each_other(gateways):
    a = gateways.start("mem-a", gateways.ray_node_id(0), voters=["mem-a", "mem-b"])
    b = gateways.start("mem-b", gateways.ray_node_id(1), voters=["mem-a", "mem-b"])
    for node, other in ((a, "mem-b"), (b, "mem-a")):
        wait_until(lambda: node.peer_state(other) == "alive", what=f"{other} alive at {node.node_id}")
    # The address comes from mem-b's own actor (its answer to mem-a's heartbeat), a round later; its
    # resources from mem-b's own heartbeats, which may come before or after that answer.
    peer = wait_until(lambda: next((p for p in a.status()["peers"] if p["node_id"] == "mem-b"
                                    and p["port"] == b.settings.port and "ray_cpus" in p["resources"]), None),
                      what="mem-b's address and resources at mem-a")
    assert peer["host"] == "127.0.0.1" and peer["resources"]["ray_cpus"] > 0
    leader = wait_until(lambda: a.status()["leader_id"] == b.status()["leader_id"] and a.status()["leader_id"],
                        what="both nodes follow one leader")
    assert [a.health()["is_leader"], b.health()["is_leader"]].count(True) == 1 and leader in ("mem-a", "mem-b")


def test_http_heartbeat_lifecycle_and_purges(gateways):
    node = gateways.start("mem-h", gateways.ray_node_id(0))
    beat = {"node_id": "ext-1", "timestamp": time.time(), "jobs": [], "resources": {"gpus": 1}, "port": 9999}
    reply = node.post("/heartbeat", json=beat)
    assert reply.status_code == 200 and reply.json()["peer"]["state"] == "alive"
    wait_until(lambda: node.peer_state("ext-1") == "alive", what="ext-1 alive")
    seen = _states_until(node, "ext-1", "retired", timeout_s=30)
    assert seen == ["alive", "suspect", "dead", "retired"]
    node.post("/heartbeat", json=beat)
    time.sleep(0.5)
    assert node.peer_state("ext-1") == "retired", "retired is sticky: a heartbeat does not undo it"
    assert node.post("/admin/unretire", params={"node_id": "ext-1"}).json()["status"] == "success"
    wait_until(lambda: node.peer_state("ext-1") == "alive", what="unretired peer alive again")
    _states_until(node, "ext-1", "retired", timeout_s=30)
    purged = node.get("/admin/purge_retired").json()
    assert purged == {"status": "success", "purged_count": 1, "purged_nodes": ["ext-1"]}
    assert node.peer_state("ext-1") is None
    node.post("/register", json={**beat, "node_id": "ext-2"})
    assert node.post("/admin/purge_stale", params={"max_age_hours": 1}).json()["purged_count"] == 0
    time.sleep(0.6)
    purged = node.post("/admin/purge_stale", params={"max_age_hours": 0.0001}).json()
    assert purged["purged_nodes"] == ["ext-2"], "never the node itself"
    assert node.peer_state("mem-h") == "alive"
    assert node.post("/admin/unretire", json={"node_id": "ghost"}).status_code == 404


def test_removed_node_goes_suspect_dead_retired_then_unretired(gateways, ray_cluster):
    a = gateways.start("mem-x", gateways.ray_node_id(0))
    extra = ray_cluster.add_node(**node_args("127.0.0.5"))
    ray_cluster.wait_for_nodes()
    gone = gateways.start("mem-gone", extra.node_id, voters=["mem-x"])
    wait_until(lambda: a.peer_state("mem-gone") == "alive", what="new node alive")
    gateways.stop_gateway("mem-gone")
    ray_cluster.remove_node(extra, allow_graceful=False)  # a crash: Ray notices only by health checks
    seen = _states_until(a, "mem-gone", "retired", timeout_s=40)
    assert seen[0] == "alive" and seen[-2:] == ["dead", "retired"] and "suspect" in seen
    assert a.status()["cluster_health"] == "healthy", "a retired node no longer counts against health"
    assert a.post("/admin/unretire", json={"node_id": "mem-gone"}).status_code == 200
    assert a.peer_state("mem-gone") == "dead", "unretired but still silent: dead, not alive"
    gateways.nodes.pop("mem-gone")
    del gone


def test_peer_actor_restart_keeps_the_table(gateways):
    import ray

    node = gateways.start("mem-r", gateways.ray_node_id(0))
    node.post("/heartbeat", json={"node_id": "ext-r", "timestamp": time.time()})
    _states_until(node, "ext-r", "retired", timeout_s=30)
    ray.kill(node.actors.peer, no_restart=False)
    time.sleep(1.0)
    wait_until(lambda: node.peer_state("ext-r") == "retired", what="retired survives a restart")


def _states_until(node, node_id: str, final: str, timeout_s: float) -> list[str]:
    """The distinct states a peer passed through, in order, until it reached `final`."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = node.peer_state(node_id)
        if state and (not seen or seen[-1] != state):
            seen.append(state)
        if state == final:
            return seen
        time.sleep(0.05)
    raise AssertionError(f"{node_id} never became {final}; saw {seen}")
