"""Real gateways for tests: each node's aiohttp app served on loopback from one background
event loop, with its actors pinned to a chosen Ray node of the session's cluster."""
from __future__ import annotations

import asyncio
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import ray
import requests

from actors.bootstrap import NodeActors, ensure_node_actors
from orchestrator.config import Settings
from orchestrator.gateway.app import serve
from orchestrator.gateway.node import NodeGateway

FAST_TIMINGS = dict(heartbeat_interval_s=0.2, peer_timeout_s=1.0, dead_after_s=4.0, retire_after_s=6.0,
                    stuck_after_s=2.0, view_refresh_s=0.2, actor_call_timeout_s=20.0,
                    lease_ttl_s=2.0, election_timeout_s=0.3, lease_safety_margin_s=0.2)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate: Callable[[], Any], timeout_s: float = 20.0, interval_s: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}; last value: {value!r}")


@dataclass
class TestNode:
    node_id: str
    url: str
    settings: Settings
    actors: NodeActors
    runner: Any = None
    token: str | None = None

    def request(self, method: str, path: str, *, token: str | None = "default", **kwargs) -> requests.Response:
        headers = kwargs.pop("headers", {})
        token = self.token if token == "default" else token
        if token:
            headers["Authorization"] = f"Bearer {token}"
        kwargs.setdefault("timeout", 30)
        return requests.request(method, self.url + path, headers=headers, **kwargs)

    def get(self, path: str, **kwargs) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, json: Any = None, **kwargs) -> requests.Response:
        return self.request("POST", path, json=json, **kwargs)

    def post_to_leader(self, path: str, json: Any = None, timeout_s: float = 60.0,
                       answer_timeout_s: float = 30.0) -> requests.Response:
        """A leader-only call as a client makes it: retried while leadership settles (503 with no leader
        known, or 409 from a node that has just stopped leading), as a loaded box can let a lease lapse."""
        answers: list[requests.Response] = []

        def settled() -> bool:
            answers.append(self.post(path, json=json, timeout=answer_timeout_s))
            last = answers[-1]
            return not (last.status_code == 503 or last.status_code == 409 and "not the leader" in last.text)

        wait_until(settled, timeout_s=timeout_s, interval_s=0.5, what=f"{path} answered by a leader")
        return answers[-1]

    def status(self) -> dict:
        return self.get("/status").json()

    def peer_state(self, node_id: str) -> str | None:
        return next((p["state"] for p in self.status()["peers"] if p["node_id"] == node_id), None)

    def health(self) -> dict:
        return self.get("/health").json()

    def job(self, job_id: str) -> dict:
        return self.get("/job/status", params={"job_id": job_id}).json()["job"]


class GatewayHarness:
    def __init__(self, cluster, tmp_path: Path) -> None:
        self.cluster = cluster
        self.tmp_path = tmp_path
        self.nodes: dict[str, TestNode] = {}
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def ray_node_id(self, index: int) -> str:
        """0 = the head, 1.. = the session's worker nodes."""
        node = self.cluster.head_node if index == 0 else self.cluster.worker_nodes_list[index - 1]
        return node.node_id

    def _run(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(60)

    def start(self, node_id: str, ray_node_id: str, token: str | None = None, voters: list[str] | None = None,
              **overrides) -> TestNode:
        """Start a node; every node of one test must be given the same `voters` (default: itself alone;
        `[]`: none configured, so the cluster records its own)."""
        port = free_port()
        values = {**FAST_TIMINGS, "node_id": node_id, "port": port, "host": "127.0.0.1",
                  "voters": [node_id] if voters is None else voters,
                  "data_dir": self.tmp_path / node_id, "auth_token": token, **overrides}
        settings = Settings(**values)
        actors = ensure_node_actors(settings, "127.0.0.1", port, ray_node_id)
        node = TestNode(node_id, f"http://127.0.0.1:{port}", settings, actors, token=token)
        # Known before its gateway starts, so a failed start still has its actors stopped at close.
        self.nodes[node_id] = node
        node.runner = self._run(serve(NodeGateway(settings, actors)))
        return node

    def stop_gateway(self, node_id: str) -> None:
        node = self.nodes[node_id]
        if node.runner is not None:
            self._run(node.runner.cleanup())
            node.runner = None

    def stop(self, node_id: str) -> None:
        self.stop_gateway(node_id)
        node = self.nodes.pop(node_id)
        for handle in node.actors.local():
            try:
                ray.kill(handle, no_restart=True)
            except Exception:
                pass  # its Ray node may already be gone

    def close(self) -> None:
        for node_id in list(self.nodes):
            self.stop(node_id)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
