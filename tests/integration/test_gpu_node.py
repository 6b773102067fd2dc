"""A node with (fake) GPUs: Ray reports them, the leader prefers it, GPU job types are given one, and
served self-play runs one inference server per GPU. CUDA is absent here, so those servers compute
on the CPU; what is tested is their number, names and placement, and the workers' spread over them."""
import uuid
from pathlib import Path

import ray

from actors.inference import server_name
from actors.naming import lookup, pinned
from actors.selfplay_workers import ServedGames, wants_served
from orchestrator.play.selfplay import SelfplayConfig, run_selfplay
from tests.conftest import node_args
from tests.harness import wait_until
from tests.unit.test_selfplay import Context
from tests.unit.test_serving import tiny_net


def test_gpu_node_gets_gpu_work(gateways, ray_cluster):
    gpu_node = ray_cluster.add_node(**node_args("127.0.0.7", num_gpus=1))
    ray_cluster.wait_for_nodes()
    voters = ["gpu-a", "gpu-g"]
    cpu = gateways.start("gpu-a", gateways.ray_node_id(0), voters=voters)
    gpu = gateways.start("gpu-g", gpu_node.node_id, voters=voters)
    wait_until(lambda: (p := cpu.status()["peers"]) and any(x["node_id"] == "gpu-g" and x["resources"]["ray_gpus"] == 1
                                                           for x in p), what="GPU reported by Ray")
    body = {"board_type": "tic_tac_toe", "agent": "random", "num_games": 2}
    # Sent to either node: a follower forwards it; a leader deposed meanwhile is refused (409) and steps down.
    placed = wait_until(lambda: (r := cpu.post("/selfplay/start", json=body)).status_code == 200 and r,
                        what="self-play placed by the leader")
    assert placed.json()["node_id"] == "gpu-g", "the leader prefers the node with a GPU"
    started = gpu.post("/start_job", json={"job_id": "gpu-bench", "job_type": "benchmark", "config": {"duration_s": 1}})
    assert started.status_code == 200
    job = wait_until(lambda: (j := gpu.job("gpu-bench"))["state"] == "completed" and j, timeout_s=60, what="done")
    assert job["result"]["assigned_device"] == "cuda", "Ray gave the task the node's GPU"
    gateways.stop("gpu-g")
    ray_cluster.remove_node(gpu_node)


@ray.remote(num_cpus=1, num_gpus=1)  # as the supervisor launches a self-play job on a GPU node
def coordinate_served_job(data_dir: str, node_id: str) -> dict:
    """A served self-play job's coordinator with `served` left null (the node setting's `auto`)."""
    cfg = SelfplayConfig(board_type="tic_tac_toe", agent="model:tiny+mcts_4", num_games=6, parallel_games=1,
                         games_per_file=1, seed=5)
    here = ray.get_runtime_context().get_node_id()
    assert wants_served(cfg, here, "auto") and not wants_served(cfg, here, "off"), "auto serves a GPU node, off not"
    made: list[ServedGames] = []
    result = run_selfplay(cfg, Context(Path(data_dir), job_id="gpu-served", node_id=node_id),
                          lambda c, x: made.append(ServedGames(c, x, tiny_net(1))) or made[0])
    return {**result, "server_names": made[0].server_names, "bound": sorted(made[0]._server_of.values())}


def test_one_inference_server_per_gpu_and_workers_spread_over_them(ray_cluster, tmp_path):
    # 3 CPUs: the coordinator's and two free, so the default (CPUs minus one) is two workers.
    gpu_node = ray_cluster.add_node(**node_args("127.0.0.8", num_gpus=2, num_cpus=3))
    ray_cluster.wait_for_nodes()
    node_id = f"gpu2-{uuid.uuid4().hex[:6]}"
    names = [server_name(node_id, gpu) for gpu in (0, 1)]
    try:
        result = ray.get(coordinate_served_job.options(scheduling_strategy=pinned(gpu_node.node_id)).remote(
            str(tmp_path), node_id), timeout=300)
        assert result["complete"] and result["served"] and result["games_done"] == 6
        assert result["server_names"] == names == [f"inference:{node_id}:gpu0", f"inference:{node_id}:gpu1"]
        assert result["workers"] == 2 and result["bound"] == names, "round-robin: one worker per server"
        for gpu, name in enumerate(names):
            info = ray.get(lookup(name).info.remote(), timeout=30)
            assert info["gpu"] == gpu and info["device"] == "cpu", "no CUDA here: the GPU's server runs on the CPU"
            assert info["networks"]["tiny"]["rows"] > 0, f"server {name} served its worker"
    finally:
        for name in names:
            try:
                ray.kill(lookup(name), no_restart=True)
            except ValueError:
                pass
        ray_cluster.remove_node(gpu_node)
