"""Leader election on a real 3-node Ray cluster: failover, a paused leader, a cut-off node.

Every test ends by running the overlap checker over the histories all nodes recorded.
"""
import os
import signal
import time

import pytest
import ray

from orchestrator.cluster.election_history import TermRecord, find_overlaps
from tests.conftest import node_args
from tests.harness import FAST_TIMINGS, wait_until

TTL_S = FAST_TIMINGS["lease_ttl_s"]


def _leaders(nodes):
    return [n.node_id for n in nodes if n.health()["is_leader"]]


def _one_leader(nodes, timeout_s=20.0):
    return wait_until(lambda: (ls := _leaders(nodes)) and len(ls) == 1 and ls[0], timeout_s=timeout_s,
                      what="exactly one leader")


def _assert_no_overlaps(nodes):
    records = []
    for node in nodes:
        try:
            records += [TermRecord(**r) for r in ray.get(node.actors.election.history.remote(), timeout=10)]
        except ray.exceptions.RayError:
            records += _read_file(node)
    assert records, "some term was recorded"
    assert find_overlaps(records) == []


def _read_file(node):
    from orchestrator.cluster.election_history import read_terms

    path = node.settings.node_dir() / "state" / "election_history.jsonl"
    return read_terms(path) if path.exists() else []


def test_killing_the_leaders_node_elects_a_new_leader_fast(gateways, ray_cluster):
    voters = ["el-a", "el-b", "el-z"]
    extra = ray_cluster.add_node(**node_args("127.0.0.6"))
    ray_cluster.wait_for_nodes()
    z = gateways.start("el-z", extra.node_id, voters=voters)
    b = gateways.start("el-b", gateways.ray_node_id(1), voters=voters)
    assert _one_leader([z, b]) == "el-z", "Bully: the higher node takes the candidacy"
    a = gateways.start("el-a", gateways.ray_node_id(0), voters=voters)
    wait_until(lambda: a.health()["leader_id"] == "el-z", what="el-a follows el-z")
    gateways.stop_gateway("el-z")
    killed_at = time.monotonic()
    ray_cluster.remove_node(extra, allow_graceful=False)
    new_leader = _one_leader([a, b], timeout_s=10 * TTL_S)
    failover_s = time.monotonic() - killed_at
    assert new_leader == "el-b" and failover_s <= 1.5 * TTL_S + 1.0, failover_s
    wait_until(lambda: a.status()["leader_id"] == "el-b", what="el-a follows the new leader")
    gateways.nodes.pop("el-z")
    _assert_no_overlaps([a, b, z])


def test_a_paused_leader_is_fenced_and_steps_down(gateways):
    voters = ["el-p", "el-q", "el-r"]
    nodes = [gateways.start(v, gateways.ray_node_id(i), voters=voters) for i, v in enumerate(voters)]
    leader_id = _one_leader(nodes)
    old = next(n for n in nodes if n.node_id == leader_id)
    others = [n for n in nodes if n is not old]
    old_epoch = old.get("/election/status").json()["epoch"]
    pid = ray.get(old.actors.election.pid.remote())
    os.kill(pid, signal.SIGSTOP)
    try:
        new_id = _one_leader(others, timeout_s=10 * TTL_S)
        new = next(n for n in others if n.node_id == new_id)
        assert not old.health()["is_leader"], "the paused leader's gateway stops claiming leadership"
    finally:
        os.kill(pid, signal.SIGCONT)
    with pytest.raises(ray.exceptions.RayTaskError) as refused:
        ray.get(old.actors.election.leader_write.remote("probe", "k", {"v": 1}), timeout=30)
    assert refused.value.cause.code == 409
    with pytest.raises(ray.exceptions.RayTaskError):
        ray.get(old.actors.cluster_store.write.remote("probe", "k", {"v": 1}, old_epoch, old.node_id), timeout=30)
    stale = new.post("/start_job", json={"job_type": "benchmark", "epoch": old_epoch, "config": {"duration_s": 1}})
    assert stale.status_code == 409 and "stale epoch" in stale.json()["error"]
    assert new.post("/coordinator", json={"leader_id": old.node_id, "epoch": old_epoch}).status_code == 409
    wait_until(lambda: old.status()["leader_id"] == new_id and not old.health()["is_leader"], what="old leader follows")
    assert ray.get(new.actors.election.leader_write.remote("probe", "k", {"v": 2}), timeout=30)["epoch"] > old_epoch
    _assert_no_overlaps(nodes)


def test_a_cut_off_node_never_leads(gateways):
    voters = ["el-i", "el-j", "el-k"]
    nodes = [gateways.start(v, gateways.ray_node_id(i), voters=voters, fault_injection=True)
             for i, v in enumerate(voters)]
    _one_leader(nodes)
    lonely, rest = nodes[2], nodes[:2]
    ray.get(lonely.actors.election.isolate.remote([n.node_id for n in rest]))
    for node in rest:
        ray.get(node.actors.election.isolate.remote([lonely.node_id]))
    time.sleep(TTL_S)  # whatever it held has lapsed by now
    deadline = time.monotonic() + 4 * TTL_S
    while time.monotonic() < deadline:
        assert not ray.get(lonely.actors.election.status.remote())["is_leader"]
        time.sleep(0.1)
    assert len(_leaders(rest)) == 1, "the majority side still has a leader"
    for node in nodes:
        ray.get(node.actors.election.isolate.remote([]))
    _assert_no_overlaps(nodes)
