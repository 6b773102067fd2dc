"""Evaluation on the real cluster: a match_id reported many times at once is stored and counted once
(a different result under it is a 409), and games between network agents go to a node with a GPU
as larger batches holding a share of that GPU (a single game played now too), while games without a
network never ask for one."""
from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import ray

from actors.naming import CLUSTER_STORE, election_name, lookup, pinned
from actors.pipeline import write_untrained
from orchestrator.learn.registry import REGISTRY_KIND
from orchestrator.play.eval_placement import CPU_BATCH_GAMES, GPU_BATCH_GAMES
from orchestrator.play.games import BUILTIN
from tests.conftest import node_args
from tests.harness import wait_until

BOARD = "tic_tac_toe"
CONCURRENT_REPORTS = 20


def test_concurrent_reports_of_one_match_store_it_once(gateways):
    node = gateways.start("once-a", gateways.ray_node_id(0))
    wait_until(lambda: node.health()["leader_id"] == "once-a", timeout_s=30, what="once-a leads")
    suffix = uuid.uuid4().hex[:6]
    agent_a, agent_b = f"heuristic@once{suffix}", "random"  # agents no other test rates: their counts are ours
    report = {"match_id": f"once-{suffix}", "agent_a": agent_a, "agent_b": agent_b, "board_type": BOARD, "result": 1}

    def post(_):
        return node.post("/tournament/match", json=report)

    # Twenty calls at once: they overlap in the gateway and in the actor's 16 threads.
    with ThreadPoolExecutor(CONCURRENT_REPORTS) as pool:
        answers = list(pool.map(post, range(CONCURRENT_REPORTS)))
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers if a.status_code != 200]
    assert sum(a.json()["created"] for a in answers) == 1, "exactly one report stores the match"
    assert len({str(a.json()["game"]) for a in answers}) == 1, "every answer shows the one stored game"

    stored = ray.get(lookup(CLUSTER_STORE).list.remote("eval_games"), timeout=30)
    assert [gid for gid, doc in stored.items() if agent_a in (doc["agent_a"], doc["agent_b"])] == [report["match_id"]]
    rows = {r["agent"]: r for r in node.get("/elo/table", params={"board_type": BOARD}).json()["rows"]}
    assert (rows[agent_a]["games"], rows[agent_a]["wins"], rows[agent_a]["losses"]) == (1, 1, 0)

    differing = node.post("/tournament/match", json={**report, "result": 0})
    assert differing.status_code == 409 and report["match_id"] in differing.text, differing.text
    again = node.get("/elo/table", params={"board_type": BOARD}).json()["rows"]
    assert next(r for r in again if r["agent"] == agent_a)["games"] == 1


def _finished(node, tid):
    def done():
        t = node.get("/tournament/status", params={"tournament_id": tid}).json()["tournament"]
        return t["state"] != "running" and t
    t = wait_until(done, timeout_s=180, interval_s=0.5, what=f"tournament {tid} finished")
    assert t["state"] == "finished" and t["done"] == t["total"], t
    return {row["node"]: row for row in t["nodes"]}


def test_network_games_hold_a_gpu_share_on_a_gpu_node_and_other_games_never_do(gateways, ray_cluster):
    # A GPU node as Ray sees one: the GPU is a declared resource; torch finds no CUDA and plays on the CPU.
    gpu_node = ray_cluster.add_node(**node_args("127.0.0.8", num_gpus=1))
    ray_cluster.wait_for_nodes()
    suffix = uuid.uuid4().hex[:6]
    names = [f"gpu{suffix}-{k}" for k in "abcg"]
    tids = [f"gpu-net-{suffix}", f"gpu-roll-{suffix}"]
    leader = None
    try:
        # An orchestrator node on every Ray node: a network batch loads its model through the one where it runs.
        ray_ids = [gateways.ray_node_id(0), gateways.ray_node_id(1), gateways.ray_node_id(2), gpu_node.node_id]
        nodes = [gateways.start(n, r, voters=names, lease_ttl_s=8.0) for n, r in zip(names, ray_ids)]
        leader_id = wait_until(lambda: (ids := {n.health()["leader_id"] for n in nodes}) and len(ids) == 1 and ids.pop(),
                               timeout_s=60, what="one leader")
        leader = next(n for n in nodes if n.node_id == leader_id)
        model_id = f"gpu-{suffix}-net"
        doc = ray.get(write_untrained.options(scheduling_strategy=pinned(gpu_node.node_id)).remote(
            BOARD, BUILTIN, str(nodes[3].settings.node_dir()), model_id, 1, 8, 0), timeout=120)
        ray.get(lookup(election_name(leader_id)).leader_write.remote(REGISTRY_KIND, model_id, doc), timeout=30)

        net_games = 2 * GPU_BATCH_GAMES + 4 * CPU_BATCH_GAMES  # one round over the four nodes leaves a full GPU batch
        for tid, agents, games in ((tids[0], [f"model:{model_id}+mcts_4", "random"], net_games),
                                   (tids[1], ["mcts_4", "random"], 4 * CPU_BATCH_GAMES)):
            body = {"tournament_id": tid, "agents": agents, "games_per_match": games, "board_type": BOARD}
            started = leader.post_to_leader("/tournament/start", json=body)
            assert started.status_code == 200, started.text

        net = _finished(leader, tids[0])
        on_gpu = net[gpu_node.node_id]
        assert on_gpu["done"] > 0 and on_gpu["gpu_games"] == on_gpu["done"], net
        assert on_gpu["dispatched"] > on_gpu["batches"] * CPU_BATCH_GAMES, "the GPU node gets larger batches"
        assert all(row["gpu_games"] == 0 and row["dispatched"] <= row["batches"] * CPU_BATCH_GAMES
                   for node, row in net.items() if node != gpu_node.node_id), net
        rollouts = _finished(leader, tids[1])
        assert all(row["gpu_games"] == 0 and row["dispatched"] <= row["batches"] * CPU_BATCH_GAMES
                   for row in rollouts.values()), rollouts

        # one game now: a network's goes to the GPU node with a share of its GPU, a rollout game never asks
        for agent, on_gpu in ((f"model:{model_id}+mcts_4", True), ("mcts_4", False)):
            answer = leader.post("/tournament/play_elo_match", json={"agent_a": agent, "agent_b": "random",
                                                                     "board_type": BOARD, "seed": 5}, timeout=120)
            assert answer.status_code == 200, answer.text
            game = answer.json()["game"]
            assert bool(game["gpu_ids"]) is on_gpu and (game["node_id"] == gpu_node.node_id or not on_gpu), game
    finally:
        if leader is not None:
            for tid in tids:  # never leave a run of this test playing on a node that is about to go
                leader.post("/tournament/cancel", json={"tournament_id": tid})
        for name in names:
            if name in gateways.nodes:
                gateways.stop(name)
        ray_cluster.remove_node(gpu_node)
