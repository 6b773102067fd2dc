"""PeerActor: this node's view of the cluster's membership.

Every `heartbeat_interval_s` it heartbeats every other peer actor (found by name in the
namespace) with this node's address, resources and job summaries, reads Ray's node table as
further evidence of death, and retires peers that stayed offline too long. HTTP heartbeats from
nodes outside Ray land in the same table.

What survives a failure: the peer table lives in the node's SQLite database and is rewritten
on every change of a peer, so a restarted actor resumes with the same peers, retirements
included (retired is sticky across restarts).
"""
from __future__ import annotations

import asyncio
import logging
import shutil
import time
from typing import Any

import psutil
import ray

from actors.naming import NAMESPACE, PEER_PREFIX, jobs_name
from orchestrator.cluster.membership import Membership, MembershipConfig, Peer
from orchestrator.config import Settings
from orchestrator.errors import NotFound
from orchestrator.store import NodeStore, node_db_path

log = logging.getLogger(__name__)
TABLE = "peers"


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class PeerActor:
    def __init__(self, node_id: str, host: str, port: int, ray_node_id: str, settings: Settings) -> None:
        self.node_id = node_id
        self.host = host
        self.port = port
        self.ray_node_id = ray_node_id
        self.settings = settings
        self.store = NodeStore(node_db_path(settings.node_dir()))
        self.membership = Membership(node_id, MembershipConfig(
            peer_timeout_s=settings.peer_timeout_s,
            dead_after_s=settings.dead_after_s,
            retire_after_s=settings.retire_after_s,
        ), clock=time.time)
        self.membership.load(list(self.store.load(TABLE).values()))
        self._handles: dict[str, Any] = {}
        self._in_flight: dict[str, ray.ObjectRef] = {}
        self._loop_task: asyncio.Task | None = None
        self._local_jobs: list[dict[str, Any]] = []

    # --- loop ----------------------------------------------------------------------------
    def _ensure_loop(self) -> None:
        if self._loop_task is None or self._loop_task.done():
            self._loop_task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            try:
                await self._round()
            except Exception:  # one bad round must not end membership
                log.exception("membership round failed")
            await asyncio.sleep(self.settings.heartbeat_interval_s)

    async def _round(self) -> None:
        self._local_jobs = await self._fetch_local_jobs()
        me = self._save(self.membership.heartbeat(self.node_id, **self._self_info()))
        payload = {"node_id": me.node_id, "host": me.host, "port": me.port, "ray_node_id": me.ray_node_id,
                   "timestamp": time.time(), "resources": me.resources, "jobs": me.jobs}
        for entry in ray.util.list_named_actors(all_namespaces=True):
            name = entry["name"]
            if entry["namespace"] != NAMESPACE or not name.startswith(PEER_PREFIX) or name == f"{PEER_PREFIX}{self.node_id}":
                continue
            previous = self._in_flight.get(name)
            if previous is not None and not _done(previous):
                continue  # one outstanding heartbeat per peer: a dead peer never piles calls up
            try:
                handle = self._handles.get(name) or ray.get_actor(name, namespace=NAMESPACE)
            except ValueError:
                continue
            self._handles[name] = handle
            self._in_flight[name] = handle.receive_heartbeat.remote(payload)
        dead = {n["NodeID"] for n in ray.nodes() if not n["Alive"]}
        for peer in self.membership.mark_ray_dead(dead) + self.membership.tick():
            self._save(peer)

    async def _fetch_local_jobs(self) -> list[dict[str, Any]]:
        try:
            supervisor = ray.get_actor(jobs_name(self.node_id), namespace=NAMESPACE)
            return await asyncio.wait_for(supervisor.summaries.remote(), self.settings.heartbeat_interval_s * 2)
        except (ValueError, asyncio.TimeoutError, ray.exceptions.RayActorError):
            return self._local_jobs

    def _self_info(self) -> dict[str, Any]:
        return {"host": self.host, "port": self.port, "ray_node_id": self.ray_node_id,
                "timestamp": time.time(), "resources": self._resources(), "jobs": self._local_jobs}

    def _resources(self) -> dict[str, Any]:
        memory = psutil.virtual_memory()
        disk = shutil.disk_usage(self.settings.node_dir())
        ray_totals = next((n["Resources"] for n in ray.nodes() if n["NodeID"] == self.ray_node_id), {})
        return {
            "cpu_count": psutil.cpu_count(),
            "cpu_percent": psutil.cpu_percent(interval=None),
            "load_avg_1m": psutil.getloadavg()[0],
            "memory_total_bytes": memory.total,
            "memory_available_bytes": memory.available,
            "disk_total_bytes": disk.total,
            "disk_free_bytes": disk.free,
            "ray_cpus": ray_totals.get("CPU", 0.0),
            "ray_gpus": ray_totals.get("GPU", 0.0),
        }

    def _save(self, peer: Peer) -> Peer:
        self.store.put(TABLE, peer.node_id, peer.to_record())
        return peer

    # --- API -----------------------------------------------------------------------------
    async def receive_heartbeat(self, info: dict[str, Any]) -> dict[str, Any]:
        self._ensure_loop()
        peer = self._save(self.membership.heartbeat(
            info["node_id"], host=info.get("host"), port=info.get("port"), ray_node_id=info.get("ray_node_id"),
            timestamp=info.get("timestamp"), resources=info.get("resources"), jobs=info.get("jobs")))
        return {"node_id": self.node_id, "peer": self.membership.view(peer)}

    async def unretire(self, node_id: str) -> dict[str, Any]:
        self._ensure_loop()
        if self.membership.get(node_id) is None:
            raise NotFound(f"unknown node {node_id!r}", node_id=node_id)
        return self.membership.view(self._save(self.membership.unretire(node_id)))

    async def purge_retired(self) -> list[str]:
        self._ensure_loop()
        purged = self.membership.purge_retired()
        self.store.delete(TABLE, purged)
        return purged

    async def purge_stale(self, max_age_s: float) -> list[str]:
        self._ensure_loop()
        purged = self.membership.purge_stale(max_age_s)
        self.store.delete(TABLE, purged)
        return purged

    async def snapshot(self) -> dict[str, Any]:
        self._ensure_loop()
        if self.membership.get(self.node_id) is None:
            self._save(self.membership.heartbeat(self.node_id, **self._self_info()))
        return {
            "node_id": self.node_id,
            "peers": [self.membership.view(p) for p in self.membership.peers()],
            "eligible": self.membership.eligible(),
        }


def _done(ref: ray.ObjectRef) -> bool:
    ready, _ = ray.wait([ref], timeout=0)
    return bool(ready)
