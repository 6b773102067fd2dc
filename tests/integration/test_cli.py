"""The documented launcher joins a running Ray cluster, serves, and cleans up on Ctrl-C."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import ray

from actors.naming import NAMESPACE
from tests.harness import free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]


def test_launcher_joins_cluster_and_stops_cleanly(ray_cluster, tmp_path):
    import requests

    port = free_port()
    env = {**os.environ, "P2P_PORT": str(port), "P2P_NODE_ID": "cli-node", "P2P_DATA_DIR": str(tmp_path),
           "P2P_AUTH_TOKEN": "tok", "P2P_HOST": "127.0.0.1"}
    process = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "p2p_orchestrator.py"),
                                "--ray-address", ray_cluster.address, "--ray-node-ip", "127.0.0.3"],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        def healthy():
            try:
                return requests.get(f"http://127.0.0.1:{port}/health", timeout=2).json()
            except requests.RequestException:
                return None
        health = wait_until(healthy, timeout_s=90, what="launcher health")
        assert health["node_id"] == "cli-node"
        assert requests.get(f"http://127.0.0.1:{port}/status", timeout=5).status_code == 401
        status = requests.get(f"http://127.0.0.1:{port}/status", headers={"Authorization": "Bearer tok"}, timeout=5).json()
        me = next(p for p in status["peers"] if p["node_id"] == "cli-node")
        assert me["host"] == "127.0.0.3", "it joined through the node it was told"
        ray.get_actor("peer:cli-node", namespace=NAMESPACE)
        process.send_signal(signal.SIGINT)
        assert process.wait(60) == 0
    finally:
        if process.poll() is None:
            process.kill()
    wait_until(lambda: not _named("peer:cli-node") and not _named("jobs:cli-node"), what="its actors stopped")


def test_refuses_to_serve_beyond_loopback_without_token(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "p2p_orchestrator.py"), "--host", "0.0.0.0",
                             "--data-dir", str(tmp_path)], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "P2P_AUTH_TOKEN": ""})
    assert result.returncode == 2 and "without an auth token" in result.stderr


def _named(name: str) -> bool:
    return any(a["name"] == name for a in ray.util.list_named_actors(all_namespaces=True))
