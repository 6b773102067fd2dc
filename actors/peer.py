"""PeerActor: this node's view of the cluster's membership.

Every `heartbeat_interval_s` it heartbeats every other peer actor (found by name in the
namespace) with this node's resources and job summaries, reads Ray's node table as further
evidence of death, and retires peers that stayed offline too long. A Ray-backed peer's address
is what that peer's own actor answers (the reply to our heartbeat), never what someone else's
heartbeat claims. HTTP heartbeats from nodes outside Ray land in the same table, under the
address their requests come from (see `Membership.http_address`).

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

from actors.naming import NAMESPACE, PEER_PREFIX, jobs_name, lookup, peer_name
from orchestrator.cluster.membership import Membership, MembershipConfig, Peer
from orchestrator.config import Settings
from orchestrator.errors import Conflict, NotFound
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
        me = self._heartbeat_self()
        payload = {"node_id": me.node_id, "timestamp": time.time(), "resources": me.resources, "jobs": me.jobs}
        for entry in ray.util.list_named_actors(all_namespaces=True):
            name = entry["name"]
            if entry["namespace"] != NAMESPACE or not name.startswith(PEER_PREFIX) or name == peer_name(self.node_id):
                continue
            previous = self._in_flight.get(name)
            if previous is not None:
                if not _done(previous):
                    continue  # one outstanding heartbeat per peer: a dead peer never piles calls up
                await self._take_address(name[len(PEER_PREFIX):], previous)
            try:
                handle = self._handles.get(name) or lookup(name)
            except ValueError:
                continue
            self._handles[name] = handle
            self._in_flight[name] = handle.receive_heartbeat.remote(payload)
        dead = {n["NodeID"] for n in ray.nodes() if not n["Alive"]}
        for peer in self.membership.mark_ray_dead(dead) + self.membership.tick():
            self._save(peer)

    async def _take_address(self, node_id: str, reply_ref: ray.ObjectRef) -> None:
        """The address `peer:<node_id>` itself answered with: the one source trusted for it."""
        try:
            reply = await reply_ref  # already done: no wait
        except Exception:  # a failed heartbeat says nothing about the address
            return
        if reply.get("node_id") == node_id and reply.get("host") and reply.get("port"):
            peer = self.membership.get(node_id)
            if peer is None or (peer.host, peer.port, peer.ray_node_id) != (reply["host"], reply["port"],
                                                                            reply["ray_node_id"]):
                self._save(self.membership.set_address(node_id, reply["host"], reply["port"], reply["ray_node_id"]))

    def _heartbeat_self(self) -> Peer:
        self.membership.set_address(self.node_id, self.host, self.port, self.ray_node_id)
        return self._save(self.membership.heartbeat(self.node_id, timestamp=time.time(), resources=self._resources(),
                                                    jobs=self._local_jobs))

    async def _fetch_local_jobs(self) -> list[dict[str, Any]]:
        try:
            supervisor = lookup(jobs_name(self.node_id))
            return await asyncio.wait_for(supervisor.summaries.remote(), self.settings.heartbeat_interval_s * 2)
        except (ValueError, asyncio.TimeoutError, ray.exceptions.RayActorError):
            return self._local_jobs

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
        """A Ray peer's heartbeat: liveness, resources and jobs. The reply carries this node's own
        address, which is how the sender learns it."""
        self._ensure_loop()
        peer = self._save(self.membership.heartbeat(info["node_id"], timestamp=info.get("timestamp"),
                                                    resources=info.get("resources"), jobs=info.get("jobs")))
        return {"node_id": self.node_id, "host": self.host, "port": self.port, "ray_node_id": self.ray_node_id,
                "peer": self.membership.view(peer)}

    async def http_heartbeat(self, info: dict[str, Any], source: str, register: bool) -> dict[str, Any]:
        """A heartbeat or register over HTTP from `source`; a Ray-backed node id is refused (409)."""
        self._ensure_loop()
        node_id = info["node_id"]
        if node_id == self.node_id or _has_peer_actor(node_id):
            raise Conflict(f"{node_id} is a Ray node: its heartbeats and address come through Ray", node_id=node_id)
        self.membership.http_address(node_id, source=source, claimed_host=info.get("host"), port=info.get("port"),
                                     register=register)
        peer = self._save(self.membership.heartbeat(node_id, timestamp=info.get("timestamp"),
                                                    resources=info.get("resources"), jobs=info.get("jobs")))
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
            self._heartbeat_self()
        return {
            "node_id": self.node_id,
            "peers": [self.membership.view(p) for p in self.membership.peers()],
            "eligible": self.membership.eligible(),
        }


def _has_peer_actor(node_id: str) -> bool:
    try:
        lookup(peer_name(node_id))
    except ValueError:
        return False
    return True


def _done(ref: ray.ObjectRef) -> bool:
    ready, _ = ray.wait([ref], timeout=0)
    return bool(ready)
