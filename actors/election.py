"""ElectionActor: this node's part in the Bully election with majority voter leases.

A pump around `orchestrator.cluster.election.ElectionNode` (sans-IO): it ticks the node, carries
its messages to the other nodes' election actors as Ray calls (a lost or late answer is simply
dropped, as the election expects), answers their requests, and registers each new leadership's
epoch with the ClusterStore, where fencing happens. The gateway's HTTP election endpoints land in
`on_request` too, so nodes outside Ray can take part.

What survives a failure: the node's election record (accepted epoch, highest epoch seen, its
voter's last grant) is written to the node's SQLite database whenever it changes and before any
reply or message that depends on it leaves; a restarted actor reloads it, starts as a follower
with a fresh lease id, and its voter keeps a restart quarantine. Every term this node held is
appended to `state/election_history.jsonl` for the overlap checker.
"""
from __future__ import annotations

import asyncio
from dataclasses import asdict
import logging
import os
import time
from typing import Any

import ray

from actors.cluster_store import ensure_cluster_store
from actors.naming import NAMESPACE, PEER_PREFIX, election_name, peer_name
from orchestrator.cluster.election import ElectionNode, Outgoing, Role
from orchestrator.cluster.election_history import TermRecord, append_term, read_terms
from orchestrator.cluster.lease import ElectionConfig
from orchestrator.config import Settings
from orchestrator.errors import BadRequest, Conflict, Unavailable
from orchestrator.store import STATE_DIR, NodeStore, node_db_path

log = logging.getLogger(__name__)
KV = "kv"
RECORD_KEY = "election"
HISTORY_FILE = "election_history.jsonl"
TICKS_PER_RENEWAL = 10
ELIGIBLE_REFRESH_S = 1.0


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class ElectionActor:
    def __init__(self, node_id: str, settings: Settings) -> None:
        self.node_id = node_id
        self.settings = settings
        self.store = NodeStore(node_db_path(settings.node_dir()))
        self.history_path = settings.node_dir() / STATE_DIR / HISTORY_FILE
        self.node: ElectionNode | None = None
        self.config: ElectionConfig | None = None
        self.isolated: set[str] = set()
        self.registered_epoch = 0
        self._saved: dict[str, Any] | None = None
        self._handles: dict[str, Any] = {}
        self._loop: asyncio.Task | None = None
        self._starting: asyncio.Task | None = None
        self._eligible_at = 0.0
        self._cluster_store: Any = None
        self._recorded_end = float("-inf")

    # --- start-up ------------------------------------------------------------------------
    async def _ensure_started(self) -> ElectionNode:
        if self._starting is None:
            self._starting = asyncio.get_running_loop().create_task(self._start())
        await asyncio.shield(self._starting)
        if self._loop is None or self._loop.done():
            self._loop = asyncio.get_running_loop().create_task(self._run())
        return self.node

    async def _start(self) -> None:
        voters = await self._voters()
        self.config = ElectionConfig(voters=tuple(voters), lease_ttl_s=self.settings.lease_ttl_s,
                                     election_timeout_s=self.settings.election_timeout_s,
                                     max_clock_drift=self.settings.max_clock_drift,
                                     safety_margin_s=self.settings.lease_safety_margin_s)
        eligible = await self._eligible()
        record = self.store.get(KV, RECORD_KEY)
        now = time.monotonic()
        self.node = (ElectionNode.from_record(record, self.config, now=now, eligible=eligible) if record
                     else ElectionNode(self.node_id, self.config, eligible=eligible, now=now))
        self._persist()

    async def _voters(self) -> list[str]:
        """Configured voters, else the set the cluster recorded when it formed (first writer wins)."""
        if self.settings.voters:
            return sorted(self.settings.voters)
        store = self._store()
        recorded = await store.setting_once.remote("voters", None)
        if recorded:
            return recorded
        await asyncio.sleep(self.settings.formation_window_s)
        present = sorted({self.node_id} | set(_named_peers()))
        return await store.setting_once.remote("voters", present) or present

    async def _eligible(self) -> list[str]:
        """Known nodes that are not retired, plus the configured voters that are not retired."""
        try:
            snapshot = await asyncio.wait_for(_actor(peer_name(self.node_id)).snapshot.remote(), 5.0)
        except Exception:  # the peer actor restarting: keep the last view
            return sorted(self.node.eligible) if self.node else [self.node_id]
        retired = {p["node_id"] for p in snapshot["peers"] if p["state"] == "retired"}
        known = set(snapshot["eligible"]) | set(self.config.voters if self.config else ())
        return sorted(known - retired)

    # --- the pump ------------------------------------------------------------------------
    async def _run(self) -> None:
        interval = self.settings.lease_ttl_s / 3 / TICKS_PER_RENEWAL
        while True:
            try:
                now = time.monotonic()
                if now - self._eligible_at >= ELIGIBLE_REFRESH_S:
                    self._eligible_at = now
                    self.node.set_eligible(await self._eligible(), time.monotonic())
                self._dispatch(self.node.tick(time.monotonic()))
                await self._settle()
            except Exception:
                log.exception("election tick failed")
            await asyncio.sleep(interval)

    def _dispatch(self, messages: list[Outgoing]) -> None:
        self._persist()  # before anything that depends on the new state leaves this node
        for message in messages:
            if message.destination not in self.isolated:
                asyncio.get_running_loop().create_task(self._deliver(message))

    async def _deliver(self, message: Outgoing) -> None:
        try:
            handle = self._handles.get(message.destination) or _actor(election_name(message.destination))
            self._handles[message.destination] = handle
            reply = await asyncio.wait_for(handle.on_request.remote(message.kind, message.payload, self.node_id),
                                           self.settings.election_timeout_s)
        except Exception:  # lost: the election's own timeouts handle it
            self._handles.pop(message.destination, None)
            return
        self._dispatch(self.node.on_response(message.request_id, reply, time.monotonic()))
        await self._settle()

    async def _settle(self) -> None:
        """Register a new term's epoch with the store (or step down), and record terms as they go."""
        now = time.monotonic()
        if self.node.is_leader(now) and self.registered_epoch != self.node.epoch:
            epoch = self.node.epoch
            try:
                await self._store().begin_term.remote(self.node_id, epoch)
                self.registered_epoch = epoch
            except Conflict as refused:
                self.node.observe_epoch(_refused_epoch(refused, epoch), time.monotonic())
            self._persist()
        for term in self.node.drain_terms():
            self._record(term)
        term = self.node.current_term
        # While leading, record how far the term reaches at each renewal, so a leader that dies
        # mid-term still leaves the checker its promised end.
        if term is not None and self.registered_epoch == term.epoch and term.end - self._recorded_end >= self.config.renew_interval_s:
            self._record(term)

    def _record(self, term) -> None:
        append_term(self.history_path, TermRecord.from_monotonic(
            self.node_id, term, monotonic_now=time.monotonic(), wall_now=time.time()))
        self._recorded_end = term.end

    def _store(self) -> Any:
        if self._cluster_store is None:
            self._cluster_store = ensure_cluster_store(self.settings.node_dir())
        return self._cluster_store

    def _persist(self) -> None:
        record = self.node.to_record()
        if record != self._saved:
            self.store.put(KV, RECORD_KEY, record)
            self._saved = record

    # --- API -----------------------------------------------------------------------------
    async def on_request(self, kind: str, payload: dict[str, Any], sender: str | None = None) -> dict[str, Any]:
        node = await self._ensure_started()
        if sender is not None and sender in self.isolated:
            raise Unavailable(f"{self.node_id} is cut off from {sender}")
        try:
            reply = node.on_request(kind, payload, time.monotonic())
        except (ValueError, KeyError, TypeError) as exc:
            raise BadRequest(str(exc).strip("'\""), field=str(exc).split(":")[0].strip("'\"")) from None
        self._persist()
        await self._settle()
        return reply

    async def status(self) -> dict[str, Any]:
        if self.node is None:  # still forming the voter set: answer at once, never hold up a gateway
            asyncio.get_running_loop().create_task(self._ensure_started())
            return {"node_id": self.node_id, "role": "forming", "is_leader": False, "leader_id": None, "epoch": 0,
                    "highest_epoch": 0, "voters": [], "quorum": 0, "eligible": [], "leader_valid_for_s": None,
                    "isolated_from": sorted(self.isolated)}
        node = await self._ensure_started()
        now = time.monotonic()
        leading = node.is_leader(now) and self.registered_epoch == node.epoch
        valid_until = node.leader_valid_until
        return {
            "node_id": self.node_id,
            "role": node.role.value if not (node.role is Role.LEADER and not leading) else Role.CANDIDATE.value,
            "is_leader": leading,
            "leader_id": self.node_id if leading else (node.leader_id if node.leader_id != self.node_id else None),
            "epoch": node.epoch,
            "highest_epoch": node.highest_epoch,
            "voters": list(self.config.voters),
            "quorum": self.config.quorum,
            "eligible": sorted(node.eligible),
            "leader_valid_for_s": None if valid_until is None else round(max(0.0, valid_until - now), 3),
            "isolated_from": sorted(self.isolated),
        }

    async def check_command_epoch(self, epoch: int) -> None:
        """Fencing for commands a leader sends this node: refuse an epoch below the highest seen."""
        node = await self._ensure_started()
        # Compared with the newest leadership this node accepted, not with epochs merely proposed
        # by candidates that lost: those never led, so they must not fence a sitting leader.
        if epoch < node.epoch:
            raise Conflict(f"stale epoch {epoch}: this node follows epoch {node.epoch}", epoch=node.epoch)
        node.observe_epoch(epoch, time.monotonic())
        self._persist()

    async def observe_epoch(self, epoch: int) -> dict[str, Any]:
        """A command of ours was refused by someone who has seen `epoch`: step down if it is newer."""
        node = await self._ensure_started()
        node.observe_epoch(epoch, time.monotonic())
        self._persist()
        return await self.status()

    async def leader_write(self, kind: str, key: str, doc: dict[str, Any]) -> dict[str, Any]:
        """Write cluster state as leader, carrying this term's epoch; a refusal makes us step down."""
        node = await self._ensure_started()
        epoch = node.epoch
        if not (node.is_leader(time.monotonic()) and self.registered_epoch == epoch):
            raise Conflict(f"{self.node_id} is not the leader", leader_id=node.leader_id, epoch=node.highest_epoch)
        try:
            return await self._store().write.remote(kind, key, doc, epoch, self.node_id)
        except Conflict as refused:
            node.observe_epoch(_refused_epoch(refused, epoch), time.monotonic())
            self._persist()
            raise

    async def isolate(self, node_ids: list[str]) -> list[str]:
        """Fault injection for chaos tests: drop all election traffic to and from these nodes."""
        self.isolated = set(node_ids)
        return sorted(self.isolated)

    async def pid(self) -> int:
        return os.getpid()

    async def history(self) -> list[dict[str, Any]]:
        """This node's recorded terms (wall-clock times), for the overlap checker."""
        if not self.history_path.exists():
            return []
        return [asdict(term) for term in read_terms(self.history_path)]


def _refused_epoch(refused: Conflict, ours: int) -> int:
    """The epoch to step down to after the store refused ours: its highest, and always above ours,
    since an equal epoch held by another node voids our term just the same."""
    cause = getattr(refused, "cause", refused)
    return max(int(getattr(cause, "extra", {}).get("epoch", 0)), ours + 1)


def _actor(name: str) -> Any:
    return ray.get_actor(name, namespace=NAMESPACE)


def _named_peers() -> list[str]:
    return [entry["name"][len(PEER_PREFIX):] for entry in ray.util.list_named_actors(all_namespaces=True)
            if entry["namespace"] == NAMESPACE and entry["name"].startswith(PEER_PREFIX)]
