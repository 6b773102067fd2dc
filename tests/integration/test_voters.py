"""Voters of a cluster started with none configured (`voters: []`, the default `make run`).

The voter record lives in the session's one ClusterStore, so this is the only test of the session
that starts nodes without configured voters: the first of them records the set for the session.
"""
import ray

from tests.harness import FAST_TIMINGS, wait_until

TTL_S = FAST_TIMINGS["lease_ttl_s"]
FORMATION_S = 0.5


def _election(node):
    return node.get("/election/status").json()


def _one_leader(nodes, timeout_s):
    return wait_until(lambda: (ls := [n.node_id for n in nodes if n.health()["is_leader"]]) and len(ls) == 1 and ls[0],
                      timeout_s=timeout_s, what="exactly one leader")


def test_nodes_started_one_after_another_share_the_recorded_voters_until_an_operator_changes_them(gateways):
    first = gateways.start("vt-c", gateways.ray_node_id(0), voters=[], formation_window_s=FORMATION_S)
    wait_until(lambda: _election(first)["voters"] == ["vt-c"], what="the first node records itself")
    assert _one_leader([first], timeout_s=10 * TTL_S) == "vt-c"
    later = [gateways.start(name, gateways.ray_node_id(i), voters=[], formation_window_s=FORMATION_S)
             for i, name in ((1, "vt-b"), (2, "vt-a"))]
    nodes = [first, *later]
    for node in later:
        wait_until(lambda: _election(node)["role"] != "forming", what=f"{node.node_id} read the voters")
    assert {tuple(_election(n)["voters"]) for n in nodes} == {("vt-c",)}, "one voter set, read back by all"
    assert {_election(n)["quorum"] for n in nodes} == {1}
    wait_until(lambda: all(n.health()["leader_id"] == "vt-c" for n in nodes), timeout_s=10 * TTL_S,
               what="everyone follows vt-c")

    # Asked on a follower: forwarded to the leader, which steps down and records the change.
    wait_until(lambda: first.peer_state("vt-a") == "alive" and first.peer_state("vt-b") == "alive",
               what="the leader sees the new nodes")
    added = later[1].post("/admin/voters", json={"add": ["vt-a", "vt-b"]})
    assert added.status_code == 200, added.text
    assert added.headers["X-P2P-Leader"] == "vt-c"
    assert added.json() == {"status": "success", "voters": ["vt-a", "vt-b", "vt-c"], "version": 2, "changed": True}
    wait_until(lambda: all(_election(n)["voters"] == ["vt-a", "vt-b", "vt-c"] and _election(n)["quorum"] == 2
                           for n in nodes), what="every node reads the new set")
    leader = _one_leader(nodes, timeout_s=1.5 * TTL_S + 5.0)
    leader_node = next(n for n in nodes if n.node_id == leader)
    again = leader_node.post("/admin/voters", json={"add": ["vt-b"]})
    assert again.json()["changed"] is False and again.json()["version"] == 2, "a retry is not a second change"
    assert leader_node.health()["is_leader"], "and costs no leadership"

    assert leader_node.post("/admin/voters", json={"add": ["ghost"]}).status_code == 404
    assert leader_node.post("/admin/voters", json={"add": ["vt-a"], "extra": 1}).status_code == 400
    removed = leader_node.post("/admin/voters", json={"remove": ["vt-c"]})
    assert removed.status_code == 200 and removed.json()["voters"] == ["vt-a", "vt-b"], removed.text
    wait_until(lambda: all(_election(n)["voters"] == ["vt-a", "vt-b"] for n in nodes), what="removal read back")
    _one_leader(nodes, timeout_s=1.5 * TTL_S + 5.0)
    store = first.actors.cluster_store
    assert ray.get(store.voters.remote(), timeout=10) == {"voters": ["vt-a", "vt-b"], "version": 3}
