"""Spread self-play on the real Ray cluster: one job's games played on every alive orchestrator node.

Three orchestrator nodes, one per Ray node of the session cluster; the job's coordinator runs here
in the driver (on the head's Ray node, as the home node's job task would) through the job type's
own `run_selfplay_job`, plays its share in process and hands the rest to in-process search workers
on the two other nodes. The records must be those of the same job played on one node.
"""
from __future__ import annotations

import uuid

import pytest
import ray

from actors import selfplay_workers
from actors.naming import election_name, lookup, pinned
from actors.pipeline import write_untrained
from actors.selfplay_workers import ServedGames, node_free_cpus, run_selfplay_job
from orchestrator.learn.registry import REGISTRY_KIND
from orchestrator.play.games import BUILTIN
from orchestrator.play.selfplay import SelfplayConfig, run_selfplay
from tests.harness import wait_until
from tests.integration.test_served_selfplay import assert_every_game_once, records
from tests.unit.test_selfplay import Context

pytestmark = pytest.mark.usefixtures("ray_cluster")
LEASE_TTL_S = 8.0  # long enough that a busy 2-core box keeps one leader through the test


@pytest.fixture
def cluster(gateways):
    """(home node, {Ray node id: node}) for three nodes that see each other alive, with every CPU free."""
    prefix = f"spread-{uuid.uuid4().hex[:6]}"
    voters = [f"{prefix}-{i}" for i in range(3)]
    nodes = [gateways.start(voters[i], gateways.ray_node_id(i), voters=voters, lease_ttl_s=LEASE_TTL_S)
             for i in range(3)]
    home = nodes[0]

    def all_alive() -> bool:
        return all(home.peer_state(node.node_id) == "alive" for node in nodes)

    wait_until(all_alive, timeout_s=60, what="the three nodes alive in the home node's view")
    for i in range(3):  # a previous test's workers may still be ending
        ray_node = gateways.ray_node_id(i)
        wait_until(lambda: node_free_cpus(ray_node) >= 2, timeout_s=30, what=f"2 CPUs free on Ray node {i}")
    return gateways, home, {gateways.ray_node_id(i): nodes[i] for i in range(3)}


def config(**overrides) -> SelfplayConfig:
    values = {"board_type": "tic_tac_toe", "agent": "mcts_4", "num_games": 24, "parallel_games": 2,
              "games_per_file": 1, "seed": 11, "nodes": "all"}
    return SelfplayConfig(**{**values, **overrides})


def spread_run(cfg: SelfplayConfig, ctx: Context, on_report) -> dict:
    """run_selfplay with spread games; `on_report(games)` runs once, at the first progress report."""
    made: list[ServedGames] = []
    report = ctx.report

    def reporting(progress):
        if len(ctx.reports) == 0:
            on_report(made[0])
        return report(progress)

    def started(c: SelfplayConfig, x: Context) -> ServedGames:
        made.append(ServedGames(c, x, None))
        return made[0]

    ctx.report = reporting  # type: ignore[method-assign]
    return run_selfplay(cfg, ctx, started)


def test_a_spread_job_plays_on_every_node_and_records_what_a_one_node_job_records(cluster, tmp_path):
    _, home, by_ray_node = cluster
    job_id = "spread-same"
    here_cfg, all_cfg = config(nodes="here"), config()
    here_ctx = Context(tmp_path / "here", job_id=job_id, node_id=home.node_id)
    all_ctx = Context(tmp_path / "all", job_id=job_id, node_id=home.node_id)
    here = run_selfplay_job(here_cfg, here_ctx)
    spread = run_selfplay_job(all_cfg, all_ctx)
    assert here["complete"] and spread["complete"] and spread["games_done"] == 24
    assert spread["workers"] == 2 and not spread["served"], \
        "in process here; one worker on each other node: one per free CPU, one CPU of two left for other work"
    assert_every_game_once(records(all_ctx, all_cfg), 24)
    same = ("game_id", "game_index", "seed", "job_id", "node_id", "attempt", "agents", "board_type")
    one_node = sorted(tuple(str(r[k]) for k in same) for r in records(here_ctx, here_cfg))
    assert sorted(tuple(str(r[k]) for k in same) for r in records(all_ctx, all_cfg)) == one_node
    played = spread["nodes"]
    assert set(played) == {node.node_id for node in by_ray_node.values()}
    assert sum(played.values()) == 24
    assert sum(1 for n in played.values() if n > 0) >= 2, f"games played on more than one node: {played}"
    assert all_ctx.reports[-1]["nodes"] == played, "progress reports the games per node"


def test_workers_killed_mid_job_are_replaced_and_every_game_is_recorded_once(cluster, tmp_path):
    gateways, home, by_ray_node = cluster
    cfg, ctx = config(), Context(tmp_path, job_id="spread-kill", node_id=home.node_id)
    r1, r2 = (ray_node for ray_node, node in by_ray_node.items() if node is not home)
    seen: dict = {}

    def kill(games: ServedGames) -> None:
        # Node r1 loses its workers only; node r2's orchestrator goes away before its workers die.
        on = {node: [w for w, n in games._node_of.items() if n == node] for node in (r1, r2)}
        seen["held"] = sum(len(games._assigned[w]) for w in on[r1] + on[r2])
        gone = by_ray_node[r2].node_id
        gateways.stop(gone)
        wait_until(lambda: home.peer_state(gone) != "alive", timeout_s=30, what="the stopped node no longer alive")
        for worker in on[r1] + on[r2]:
            ray.kill(games._workers[worker], no_restart=True)
        seen["games"] = games

    result = spread_run(cfg, ctx, kill)
    assert seen["held"] > 0, "the killed workers held games in flight"
    assert result["complete"] and result["worker_replacements"] >= 1
    assert_every_game_once(records(ctx, cfg), cfg.num_games)
    games = seen["games"]
    # Workers are numbered from 1 (the in-process games search with seed 0): the first `count` started at once.
    replacements = [node for worker, node in games._node_of.items() if worker > games.count]
    assert r2 not in games._node_of.values(), "no replacement on the node whose orchestrator went away"
    assert r1 in replacements, "a worker killed on a live node is replaced there"


def test_a_node_that_joins_during_a_spread_job_gets_workers_and_games(gateways, tmp_path, monkeypatch):
    # The default configuration, as `make run` starts nodes: no voters configured.
    names = [f"join-{uuid.uuid4().hex[:6]}-{i}" for i in range(2)]
    home = gateways.start(names[0], gateways.ray_node_id(0), voters=[], lease_ttl_s=LEASE_TTL_S)
    for i in (0, 2):  # a previous test's workers may still be ending
        ray_node = gateways.ray_node_id(i)
        wait_until(lambda: node_free_cpus(ray_node) >= 2, timeout_s=30, what=f"2 CPUs free on Ray node {i}")
    monkeypatch.setattr(selfplay_workers, "NEW_NODES_LOOK_S", 0.0)  # look at every fill, not every 30 s
    cfg, ctx = config(num_games=40), Context(tmp_path, job_id="spread-join", node_id=home.node_id)
    seen: dict = {}

    def join(games: ServedGames) -> None:
        seen["workers_before"] = len(games._workers)
        joined = gateways.start(names[1], gateways.ray_node_id(2), voters=[], lease_ttl_s=LEASE_TTL_S)
        wait_until(lambda: home.peer_state(joined.node_id) == "alive", timeout_s=60, what="the new node alive")
        seen["node"] = joined

    result = spread_run(cfg, ctx, join)
    assert seen["workers_before"] == 0, "alone at the start: the home node plays in process"
    assert result["complete"] and result["games_done"] == 40
    assert_every_game_once(records(ctx, cfg), 40)
    assert result["workers"] == 1, "the joined node's two free CPUs: one worker, one left for other work"
    assert result["nodes"][seen["node"].node_id] > 0, f"the joined node played: {result['nodes']}"


def test_a_spread_network_job_through_the_supervisor_loads_the_model_on_every_node(cluster):
    """The job path: the home node's job task coordinates; the other nodes fetch the model file they lack."""
    gateways, home, by_ray_node = cluster
    leader_id = wait_until(lambda: home.health()["leader_id"], timeout_s=60, what="a leader")
    model_id = f"{home.node_id}-net"
    doc = ray.get(write_untrained.options(scheduling_strategy=pinned(gateways.ray_node_id(0))).remote(
        "tic_tac_toe", BUILTIN, str(home.settings.node_dir()), model_id, 1, 8, 0), timeout=120)
    ray.get(lookup(election_name(leader_id)).leader_write.remote(REGISTRY_KIND, model_id, doc), timeout=30)
    job_id = f"{home.node_id}-job"
    job_config = {"board_type": "tic_tac_toe", "agent": f"model:{model_id}+mcts_4", "num_games": 12,
                  "parallel_games": 2, "nodes": "all"}
    started = home.post("/start_job", json={"job_id": job_id, "job_type": "selfplay", "config": job_config})
    assert started.status_code == 200, started.text
    job = wait_until(lambda: (j := home.job(job_id))["state"] in ("completed", "failed") and j,
                     timeout_s=240, interval_s=0.5, what="the spread job finished")
    assert job["state"] == "completed", job
    result = job["result"]
    assert result["complete"] and result["games_done"] == 12 and not result["served"]
    assert result["workers"] >= 2, "the other nodes' free CPUs"
    assert sum(1 for n in result["nodes"].values() if n > 0) >= 2, f"games played on several nodes: {result['nodes']}"
    for ray_node, node in by_ray_node.items():
        if node is not home and result["nodes"][node.node_id] > 0:
            assert any(node.settings.node_dir().rglob(f"*{model_id}*")), f"{node.node_id} fetched the model file"
