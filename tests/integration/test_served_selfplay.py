"""Served self-play on the real Ray cluster: search workers against a batched inference server actor.

Each test starts its own server (a unique name), runs a self-play job through the same
`run_selfplay` loop the job task runs, with `ServedGames` playing the games, and checks the
records: every game id once, whatever was killed on the way.
"""
from __future__ import annotations

import json
import uuid
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import ray

from actors.inference import InferenceClient, start_inference_server
from actors.naming import election_name, inference_name, lookup, pinned
from actors.pipeline import write_untrained
from actors.selfplay_workers import ServedGames, node_free_cpus, wants_served
from orchestrator.learn.registry import REGISTRY_KIND
from orchestrator.nn.serving import PreparedNetwork, ServingConfig
from orchestrator.play.games import BUILTIN
from orchestrator.play.records import game_files, read_games
from orchestrator.play.evaluators import NetworkEvaluator
from orchestrator.play.selfplay import GameBatch, SelfplayConfig, _make_agent, job_directory, run_selfplay
from tests.harness import wait_until
from tests.unit.test_selfplay import Context
from tests.unit.test_serving import observations, tiny_net

pytestmark = pytest.mark.usefixtures("ray_cluster")


@pytest.fixture
def server():
    node = f"served-{uuid.uuid4().hex[:8]}"
    handle = start_inference_server(node, ray.get_runtime_context().get_node_id(),
                                    ServingConfig(max_batch=256, max_wait_s=0.02))
    ray.get(handle.info.remote())
    yield inference_name(node), handle
    ray.kill(handle, no_restart=True)


def config(**overrides) -> SelfplayConfig:
    values = {"board_type": "tic_tac_toe", "agent": "model:tiny+mcts_8", "num_games": 8, "parallel_games": 2,
              "games_per_file": 1, "seed": 3, "served": True}
    return SelfplayConfig(**{**values, **overrides})


def served_run(cfg: SelfplayConfig, ctx: Context, server_name: str, net, workers: int, on_report=None):
    """run_selfplay with served games; `on_report(games)` runs once, at the first progress report."""
    made: list[ServedGames] = []
    report = ctx.report

    def reporting(progress):
        if on_report is not None and len(ctx.reports) == 0:
            on_report(made[0])
        return report(progress)

    def started(c: SelfplayConfig, x: Context) -> ServedGames:
        games = ServedGames(c, x, net, workers=workers, server_names=[server_name])
        # Every worker up before the first game: on this small box a worker process takes seconds to
        # start, and the first one could otherwise play every game alone.
        ray.get([handle.advance.remote([]) for handle in games._workers.values()], timeout=120)
        made.append(games)
        return games

    ctx.report = reporting  # type: ignore[method-assign]
    return run_selfplay(cfg, ctx, started)


def cpus_free_here(count: int) -> str:
    """This driver's Ray node, once `count` CPUs are free on it (a previous test's workers may still be ending)."""
    here = ray.get_runtime_context().get_node_id()
    wait_until(lambda: node_free_cpus(here) >= count, timeout_s=30, what=f"{count} CPUs free here")
    return here


def records(ctx: Context, cfg: SelfplayConfig) -> list[dict]:
    return list(read_games(game_files(job_directory(ctx.data_dir, cfg.board_type, ctx.job_id))))


def assert_every_game_once(rows: list[dict], count: int) -> None:
    ids = [r["game_id"] for r in rows]
    assert len(ids) == len(set(ids)), "no game recorded twice"
    assert sorted(r["game_index"] for r in rows) == list(range(count))


def test_workers_share_batches_and_finish_every_game(server, tmp_path):
    name, handle = server
    cfg, ctx = config(num_games=12), Context(tmp_path, job_id="served-batch")
    cpus_free_here(2)  # the session's nodes have 2 CPUs: one worker each
    result = served_run(cfg, ctx, name, tiny_net(1), workers=2)
    assert result["complete"] and result["workers"] == 2 and result["served"]
    assert_every_game_once(records(ctx, cfg), 12)
    stats = ray.get(handle.info.remote())["networks"]["tiny"]
    assert stats["requests"] > stats["batches"], f"some forward pass served several workers' requests: {stats}"
    assert result["eval_leaves"] == stats["rows"]


def test_each_worker_holds_a_cpu_on_rays_books_and_no_more_start_than_are_free(server, tmp_path):
    name, _ = server
    here = cpus_free_here(2)
    before = node_free_cpus(here)
    cfg, ctx = config(num_games=6), Context(tmp_path, job_id="served-cpus")
    during = {}

    def look(games: ServedGames) -> None:
        during["workers"] = games.count
        wait_until(lambda: node_free_cpus(here) == before - games.count, timeout_s=30,
                   what="the workers' CPUs taken on Ray's books")

    result = served_run(cfg, ctx, name, tiny_net(1), workers=8, on_report=look)
    assert result["complete"] and result["worker_cpus"] == 1.0
    assert during["workers"] == int(before), "asked for 8: as many as the node had free"
    wait_until(lambda: node_free_cpus(here) == before, timeout_s=30, what="the workers' CPUs given back")


def test_a_worker_killed_mid_game_loses_only_its_unfinished_games(server, tmp_path):
    name, _ = server
    cfg, ctx = config(), Context(tmp_path, job_id="served-kill")
    killed = {}

    def kill_a_worker(games: ServedGames) -> None:
        # A worker holding games: the one whose answer just came may have finished all of its own.
        worker = next(w for w, held in games._assigned.items() if held)
        killed["games"] = list(games._assigned[worker])
        ray.kill(games._workers[worker], no_restart=True)

    result = served_run(cfg, ctx, name, tiny_net(1), workers=2, on_report=kill_a_worker)
    assert killed["games"], "the worker held games in flight when it was killed"
    assert result["complete"] and result["worker_replacements"] == 1
    assert_every_game_once(records(ctx, cfg), cfg.num_games)


def test_server_killed_and_restarted_while_workers_wait(server, tmp_path):
    name, handle = server
    cfg, ctx = config(num_games=10), Context(tmp_path, job_id="served-restart")
    result = served_run(cfg, ctx, name, tiny_net(1), workers=2,
                        on_report=lambda games: ray.kill(handle, no_restart=False))
    assert result["complete"]
    assert result["server_retries"] + result["server_reloads"] >= 1, "workers saw the restart and retried"
    assert result["server_channel_failures"] >= 1, "the kill broke the socket channel: batches went as actor calls"
    assert result["server_channel_batches"] > 0
    assert_every_game_once(records(ctx, cfg), cfg.num_games)
    assert ray.get(handle.info.remote())["networks"]["tiny"]["rows"] > 0, "the restarted server reloaded the network"


def test_a_graceful_stop_keeps_the_finished_games_and_ends_the_workers(server, tmp_path):
    name, _ = server
    cfg, ctx = config(num_games=20), Context(tmp_path, job_id="served-stop", stop_after=1)
    handles = []

    def keep_handles(games: ServedGames) -> None:
        handles.extend(games._workers.values())

    result = served_run(cfg, ctx, name, tiny_net(1), workers=2, on_report=keep_handles)
    assert result["stopped"] and not result["complete"] and result["in_flight"] == 0
    assert len(records(ctx, cfg)) == result["games_done"] >= 1

    def ended(handle) -> bool:
        try:
            ray.get(handle.advance.remote([]), timeout=60)
            return False  # ray.kill is asynchronous: a call may still be served before the kill lands
        except ray.exceptions.RayActorError:
            return True

    for handle in handles:
        wait_until(lambda: ended(handle), timeout_s=30, interval_s=0.2, what="a closed job's worker gone")


def test_two_networks_served_at_once(server):
    name, handle = server
    nets = {"net-a": tiny_net(1), "net-b": tiny_net(2)}
    clients = {key: InferenceClient(name, key, ray.put(net)) for key, net in nets.items()}
    for client in clients.values():
        client.ensure_loaded()
    x = observations(6)
    with ThreadPoolExecutor(4) as pool:  # both networks' requests in flight together
        answers = {key: pool.submit(client, x) for key, client in clients.items()}
        answers = {key: future.result() for key, future in answers.items()}
    for key, net in nets.items():
        np.testing.assert_allclose(answers[key][0], PreparedNetwork(net)(x)[0], rtol=1e-5, atol=1e-6)
    assert not np.allclose(answers["net-a"][0], answers["net-b"][0])
    assert set(ray.get(handle.info.remote())["networks"]) == {"net-a", "net-b"}


def test_served_moves_equal_in_process_moves_at_a_fixed_seed(server, tmp_path):
    """One worker sends the same batches the in-process search evaluates, so float32 answers are bit-identical."""
    name, _ = server
    cfg = config(num_games=6, parallel_games=3, agent="model:tiny+gumbel_8")
    local_ctx = Context(tmp_path / "local", job_id="served-eq")
    served_ctx = Context(tmp_path / "served", job_id="served-eq")
    net = tiny_net(4)
    # In process, the same network evaluated here (the job would load it from its checkpoint).
    run_selfplay(cfg, local_ctx, lambda c, x: GameBatch(c, x, _make_agent(
        c.agent_spec(), c, x, evaluator=NetworkEvaluator(net, x.games.load(c.board_type)))))
    served_run(cfg, served_ctx, name, net, workers=1)
    local = {r["game_id"]: (r["moves"], r["policies"]) for r in records(local_ctx, cfg)}
    served = {r["game_id"]: (r["moves"], r["policies"]) for r in records(served_ctx, cfg)}
    assert len(local) == 6 and local == served


def test_served_only_where_asked_or_on_a_gpu_node_and_only_for_network_searches():
    here = ray.get_runtime_context().get_node_id()  # the session cluster's nodes have no GPU
    assert not wants_served(config(served=None), here)
    assert wants_served(config(served=None), here, "on"), "the node setting serves a CPU node"
    assert wants_served(config(served=True), here, "off"), "the job's own choice beats the node's"
    assert wants_served(config(served=True), here)
    assert not wants_served(config(served=False), here)
    assert not wants_served(config(agent="mcts_8"), here), "rollouts have no network to serve"
    assert json.loads(config().model_dump_json())["served"] is True


def test_a_served_selfplay_job_through_the_supervisor(gateways):
    """The job path: /start_job, the supervisor's Ray task, the catalogue's served run, the node's named server.

    The job leaves `served` null: the node's `selfplay_served: on` setting is what serves it on a CPU node."""
    suffix = uuid.uuid4().hex[:6]
    cpus_free_here(2)
    node = gateways.start(f"served-{suffix}", gateways.ray_node_id(0), selfplay_served="on")
    wait_until(lambda: node.health()["leader_id"] == node.node_id, timeout_s=60, what="the node leads itself")
    model_id = f"served-{suffix}-net"
    doc = ray.get(write_untrained.options(scheduling_strategy=pinned(gateways.ray_node_id(0))).remote(
        "tic_tac_toe", BUILTIN, str(node.settings.node_dir()), model_id, 1, 8, 0), timeout=120)
    ray.get(lookup(election_name(node.node_id)).leader_write.remote(REGISTRY_KIND, model_id, doc), timeout=30)
    job_config = {"board_type": "tic_tac_toe", "agent": f"model:{model_id}+mcts_4", "num_games": 6,
                  "parallel_games": 2, "workers": 2, "precision": "float32"}
    bad = node.post("/start_job", json={"job_id": f"served-bad-{suffix}", "job_type": "selfplay",
                                        "config": {**job_config, "precision": "int8"}})
    assert bad.status_code == 400 and "precision" in bad.text, bad.text
    started = node.post("/start_job", json={"job_id": f"served-job-{suffix}", "job_type": "selfplay", "config": job_config})
    assert started.status_code == 200, started.text
    job = wait_until(lambda: (j := node.job(f"served-job-{suffix}"))["state"] in ("completed", "failed") and j,
                     timeout_s=180, interval_s=0.5, what="the served job finished")
    assert job["state"] == "completed", job
    result = job["result"]
    # The node's 2 CPUs: one for the job's own task, one free for a worker, however many were asked for.
    assert result["served"] and result["workers"] == 1 and result["worker_cpus"] == 1.0
    assert result["complete"] and result["games_done"] == 6 and result["servers"] == 1
    assert result["server_channel_batches"] > 0, "workers on the server's machine use its socket channel"
    server = lookup(inference_name(node.node_id))
    try:
        # Served in the precision the job asked for, under a key of its own.
        networks = ray.get(server.info.remote())["networks"]
        assert list(networks) == [f"{model_id}@float32"]
        assert networks[f"{model_id}@float32"]["rows"] == result["eval_leaves"]
    finally:
        ray.kill(server, no_restart=True)
