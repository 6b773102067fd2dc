"""An improvement cycle survives the death of the leader that started it, and of the PipelineActor.

Three voters; the leader (highest id, on a Ray node of its own) starts a one-cycle run whose home
is another node. Once the cycle is past self-play, the leader's Ray node is removed and the
PipelineActor is killed (Ray restarts it); the new leader's term carries the same run to its
decision. Self-play is not replayed (one job, attempt 1, for the cycle) and the stored run is the
one that was started.
"""
from __future__ import annotations

import ray

from actors.pipeline import PIPELINE_ACTOR
from actors.naming import lookup
from tests.conftest import node_args
from tests.harness import FAST_TIMINGS, wait_until

BOARD = "openspiel:tic_tac_toe"  # its own ledger, apart from the integration test's tic_tac_toe
TTL_S = 8.0
BODY = {"run_id": "failover-run", "board_type": BOARD, "cycles": 1, "games_per_cycle": 200, "node_id": "pf-b",
        "training": {"steps": 200, "batch_size": 64, "lr": 3e-3, "blocks": 1, "channels": 16, "seed": 5},
        "gating": {"elo0": 0, "elo1": 150, "max_games": 120, "regression_elo0": -150, "regression_elo1": 0,
                   "regression_max_games": 120, "search": "mcts_4"},
        "selfplay": {"bootstrap_agent": "mcts_8", "parallel_games": 64}}


def _leader_of(nodes):
    def one():
        leaders = [n.node_id for n in nodes if n.health()["is_leader"]]
        return len(leaders) == 1 and leaders[0]
    return wait_until(one, timeout_s=10 * TTL_S + 20, what="exactly one leader")


def _status(node):
    answer = node.get("/improvement/status", params={"run_id": BODY["run_id"]})
    return answer.json() if answer.status_code == 200 else {}


def test_a_new_leader_finishes_the_cycle_the_old_one_started(gateways, ray_cluster):
    voters = ["pf-a", "pf-b", "pf-z"]
    timings = {**FAST_TIMINGS, "lease_ttl_s": TTL_S, "actor_call_timeout_s": 60.0}
    extra = ray_cluster.add_node(**node_args("127.0.0.7"))
    ray_cluster.wait_for_nodes()
    z = gateways.start("pf-z", extra.node_id, voters=voters, **timings)
    b = gateways.start("pf-b", gateways.ray_node_id(1), voters=voters, **timings)
    a = gateways.start("pf-a", gateways.ray_node_id(0), voters=voters, **timings)
    # Not a voter, lowest id: it never stands against pf-b; evaluation games on its Ray node load networks through it.
    gateways.start("pf-0", gateways.ray_node_id(2), voters=voters, **timings)
    assert _leader_of([a, b, z]) == "pf-z", "Bully: the highest id leads"

    try:
        _fail_over(gateways, ray_cluster, extra, a, b, z)
    finally:
        for node in gateways.nodes.values():
            node.post("/improvement/cancel", json={"run_id": BODY["run_id"]})


def _fail_over(gateways, ray_cluster, extra, a, b, z):
    started = z.post("/improvement/start", json=BODY)
    assert started.status_code == 200, started.text
    wait_until(lambda: (s := _status(a)) and s.get("phase") not in (None, "selfplay") and s, timeout_s=180,
               interval_s=0.5, what="the cycle past self-play")

    gateways.stop_gateway("pf-z")
    ray_cluster.remove_node(extra, allow_graceful=False)
    gateways.nodes.pop("pf-z")
    ray.kill(lookup(PIPELINE_ACTOR), no_restart=False)  # the driver dies too; Ray restarts it
    assert _leader_of([a, b]) == "pf-b"

    final = wait_until(lambda: (s := _status(a)).get("state") in ("finished", "failed") and s, timeout_s=240,
                       interval_s=1.0, what="the run finished under the new leader")
    assert final["state"] == "finished" and final["run_id"] == BODY["run_id"], final
    cycles = a.get("/improvement_cycles/status", params={"run_id": BODY["run_id"]}).json()["cycles"]
    (cycle,) = cycles
    assert cycle["outcome"] in ("promoted", "discarded", "rolled_back") and cycle["decision"] is not None, cycle
    assert cycle["games"] == BODY["games_per_cycle"]
    assert b.job(f"{cycle['cycle_id']}-selfplay-1")["state"] == "completed"
    assert b.get("/job/status", params={"job_id": f"{cycle['cycle_id']}-selfplay-2"}).status_code == 404, \
        "self-play was not played again"
    history = a.get("/rollback/status", params={"board_type": BOARD}).json()["history"][BOARD]
    assert history[0]["kind"] == "initial" and len({e["event_id"] for e in history}) == len(history)
    if cycle["outcome"] != "discarded":
        assert history[1]["kind"] == "promotion" and history[1]["evidence"]["decision"] == "H1"
