"""One real local Ray cluster per test session, started lazily by the tests that need it.

Every Ray node listens on its own loopback address (Ray rewrites 127.0.0.1 to the external
address), object store and memory are capped per node, and node death is detected in about
three seconds instead of fifteen.
"""
from __future__ import annotations

import os

os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
os.environ["RAY_AUTH_MODE"] = "disabled"
os.environ["P2P_AUTOSTART_PIPELINE"] = ""  # nodes started by tests (and their CLI subprocesses) run no pipeline
os.environ.setdefault("RAY_health_check_period_ms", "1000")
os.environ.setdefault("RAY_health_check_timeout_ms", "1000")
os.environ.setdefault("RAY_health_check_failure_threshold", "3")

import pytest  # noqa: E402

HEAD_IP = "127.0.0.2"
WORKER_IPS = ("127.0.0.3", "127.0.0.4")
NODE_CPUS = 2
OBJECT_STORE_BYTES = 80 * 2**20
NODE_MEMORY_BYTES = 2 * 2**30


def node_args(ip: str, **extra) -> dict:
    return {"node_ip_address": ip, "num_cpus": NODE_CPUS, "object_store_memory": OBJECT_STORE_BYTES,
            "memory": NODE_MEMORY_BYTES, **extra}


@pytest.fixture(scope="session")
def ray_cluster():
    import ray
    from ray.cluster_utils import Cluster

    from actors.naming import NAMESPACE

    cluster = Cluster(initialize_head=True, head_node_args=node_args(HEAD_IP, include_dashboard=False))
    workers = [cluster.add_node(**node_args(ip)) for ip in WORKER_IPS]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, namespace=NAMESPACE, _node_ip_address=HEAD_IP, logging_level="WARNING")
    cluster.worker_nodes_list = workers
    yield cluster
    ray.shutdown()
    cluster.shutdown()


@pytest.fixture
def gateways(ray_cluster, tmp_path):
    from tests.harness import GatewayHarness

    harness = GatewayHarness(ray_cluster, tmp_path)
    yield harness
    harness.close()
