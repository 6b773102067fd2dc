"""A node with a (fake) GPU: Ray reports it, the leader prefers it, and GPU job types are given one."""
from tests.conftest import node_args
from tests.harness import wait_until


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
