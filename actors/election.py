"""ElectionActor: this node's part in the Bully election with majority voter leases.

A pump around `orchestrator.cluster.election.ElectionNode` (sans-IO): it ticks the node, carries
its messages to the other nodes' election actors as Ray calls (a lost or late answer is simply
dropped, as the election expects), answers their requests, and registers each new leadership's
epoch with the ClusterStore, where fencing happens. The gateway's HTTP election endpoints land in
`on_request` too, so nodes outside Ray can take part. Every input's `Ready` goes through `_apply`,
the one path that persists, then registers the new term, then sends.

Voters: the configured ones, or else the set recorded in the ClusterStore when the cluster formed
(the first node to find none records the Ray-backed peers it sees alive after
`formation_window_s`), re-read every second; `change_voters` is how an operator changes it.

What survives a failure: the node's election record (accepted epoch, highest epoch seen, its
voter's last grant) is written to the node's SQLite database before any reply or message that
depends on it leaves; a restarted actor reloads it, starts as a follower with a fresh lease id,
and its voter keeps a restart quarantine. The voter set survives in the ClusterStore. Every term
this node held is appended to `state/election_history.jsonl` for the overlap checker.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import asdict
from typing import Any, Mapping

import ray

from actors.cluster_store import ensure_cluster_store
from actors.naming import election_name, lookup, peer_name, root_cause
from orchestrator.cluster.election import COORDINATOR, ElectionNode, Outgoing, Ready, Role
from orchestrator.cluster.election_history import TermRecord, append_term, read_terms
from orchestrator.cluster.lease import ElectionConfig, MalformedMessage, epoch_field, str_field
from orchestrator.config import Settings
from orchestrator.errors import BadRequest, Conflict, NotFound, Unavailable
from orchestrator.store import STATE_DIR, NodeStore, node_db_path

log = logging.getLogger(__name__)
KV = "kv"
RECORD_KEY = "election"
HISTORY_FILE = "election_history.jsonl"
TICKS_PER_RENEWAL = 10
REFRESH_S = 1.0  # how often the eligible nodes and the recorded voter set are re-read
STORE_CALL_TIMEOUT_S = 5.0
PROVEN_TERMS_KEPT = 64


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class ElectionActor:
    def __init__(self, node_id: str, settings: Settings) -> None:
        self.node_id = node_id
        self.settings = settings
        self.store = NodeStore(node_db_path(settings.node_dir()))
        self.history_path = settings.node_dir() / STATE_DIR / HISTORY_FILE
        self.node: ElectionNode | None = None
        self.voters_version: int | None = None  # None: configured voters, nothing recorded
        self.isolated: set[str] = set()
        self.registered_epoch = 0
        self._proven: dict[tuple[int, str], None] = {}  # (epoch, leader) the store registered
        self._handles: dict[str, Any] = {}
        self._loop: asyncio.Task | None = None
        self._starting: asyncio.Task | None = None
        self._refreshed_at = 0.0
        self._cluster_store: Any = None
        self._recorded_end = float("-inf")
        self._changing_voters = False  # no own candidacy between stepping down and reading the new set

    # --- start-up ------------------------------------------------------------------------
    async def _ensure_started(self) -> ElectionNode:
        if self._starting is None:
            self._starting = asyncio.get_running_loop().create_task(self._start())
        try:
            await asyncio.shield(self._starting)
        except Exception:
            self._starting = None  # the store or peer actor was not there yet: the next call tries again
            raise
        if self._loop is None or self._loop.done():
            self._loop = asyncio.get_running_loop().create_task(self._run())
        return self.node

    async def _start(self) -> None:
        voters, self.voters_version = await self._voters()
        config = ElectionConfig(voters=tuple(voters), lease_ttl_s=self.settings.lease_ttl_s,
                                election_timeout_s=self.settings.election_timeout_s,
                                max_clock_drift=self.settings.max_clock_drift,
                                safety_margin_s=self.settings.lease_safety_margin_s)
        eligible = await self._eligible(config.voters)
        record = self.store.get(KV, RECORD_KEY)
        now = time.monotonic()
        # Nothing to persist yet: the first Ready carries the record, before any message leaves.
        self.node = (ElectionNode.from_record(record, config, now=now, eligible=eligible) if record
                     else ElectionNode(self.node_id, config, eligible=eligible, now=now))

    async def _voters(self) -> tuple[list[str], int | None]:
        """Configured voters, else the set the cluster recorded when it formed (first writer wins)."""
        if self.settings.voters:
            return sorted(self.settings.voters), None
        store = self._store()
        recorded = await store.voters.remote()
        if recorded is None:
            await asyncio.sleep(self.settings.formation_window_s)
            recorded = await store.form_voters.remote(await self._present())
        return recorded["voters"], recorded["version"]

    async def _present(self) -> list[str]:
        """This node and the Ray-backed peers it hears from now (an HTTP-only peer cannot take
        part in the Ray election traffic, so it is never made a voter by formation)."""
        snapshot = await self._peer_snapshot()
        alive = {p["node_id"] for p in (snapshot or {}).get("peers", [])
                 if p["state"] == "alive" and p.get("ray_node_id")}
        return sorted(alive | {self.node_id})

    async def _peer_snapshot(self) -> dict[str, Any] | None:
        try:
            return await asyncio.wait_for(lookup(peer_name(self.node_id)).snapshot.remote(), STORE_CALL_TIMEOUT_S)
        except Exception:  # the peer actor restarting: the caller keeps its last view
            return None

    async def _eligible(self, voters: tuple[str, ...]) -> list[str]:
        """Known nodes that are not retired, plus the voters that are not retired."""
        snapshot = await self._peer_snapshot()
        if snapshot is None:
            return sorted(self.node.eligible) if self.node else [self.node_id]
        retired = {p["node_id"] for p in snapshot["peers"] if p["state"] == "retired"}
        return sorted((set(snapshot["eligible"]) | set(voters)) - retired)

    # --- the one path from the core to the world -----------------------------------------
    async def _apply(self, ready: Ready) -> dict[str, Any] | None:
        """Persist, then register the new term, then send: nothing leaves that the disk and the
        store do not already back. Returns the reply to give."""
        if ready.record is not None:
            self.store.put(KV, RECORD_KEY, ready.record)
        if ready.term_epoch is None or await self._register(ready.term_epoch):
            for message in ready.messages:
                if message.destination not in self.isolated:
                    asyncio.get_running_loop().create_task(self._deliver(message))
        self._record_terms()
        return ready.reply

    async def _register(self, epoch: int) -> bool:
        """Begin the term in the store; any failure, a refusal or an unreachable store, ends it unacted."""
        try:
            await asyncio.wait_for(self._store().begin_term.remote(self.node_id, epoch, self.voters_version),
                                   STORE_CALL_TIMEOUT_S)
        except Exception as exc:
            cause = root_cause(exc)
            extra = cause.extra if isinstance(cause, Conflict) else {}
            if "voters_version" in extra:
                self._refreshed_at = 0.0  # we campaigned under an old voter set: read the new one now
            log.warning("term %s not registered: %s", epoch, cause)
            await self._apply(self.node.term_refused(time.monotonic(), extra.get("epoch")))
            return False
        self.registered_epoch = epoch
        return True

    async def _deliver(self, message: Outgoing) -> None:
        try:
            handle = self._handles.get(message.destination) or lookup(election_name(message.destination))
            self._handles[message.destination] = handle
            reply = await asyncio.wait_for(handle.on_request.remote(message.kind, message.payload, self.node_id),
                                           self.settings.election_timeout_s)
        except Exception:  # lost: the election's own timeouts handle it
            self._handles.pop(message.destination, None)
            return
        try:
            ready = self.node.on_response(message.request_id, reply, time.monotonic())
        except MalformedMessage as bad:
            log.warning("unreadable %s answer from %s: %s", message.kind, message.destination, bad)
            return
        await self._apply(ready)

    def _record_terms(self) -> None:
        for term in self.node.drain_terms():
            self._record(term)
        term = self.node.current_term
        # While leading, record how far the term reaches at each renewal, so a leader that dies
        # mid-term still leaves the checker its promised end.
        if (term is not None and self.registered_epoch == term.epoch
                and term.end - self._recorded_end >= self.node.config.renew_interval_s):
            self._record(term)

    def _record(self, term) -> None:
        append_term(self.history_path, TermRecord.from_monotonic(
            self.node_id, term, monotonic_now=time.monotonic(), wall_now=time.time()))
        self._recorded_end = term.end

    # --- the pump ------------------------------------------------------------------------
    async def _run(self) -> None:
        interval = self.settings.lease_ttl_s / 3 / TICKS_PER_RENEWAL
        while True:
            try:
                if time.monotonic() - self._refreshed_at >= REFRESH_S:
                    self._refreshed_at = time.monotonic()
                    await self._refresh_voters()
                    eligible = await self._eligible(self.node.config.voters)
                    await self._apply(self.node.set_eligible(eligible, time.monotonic()))
                if not self._changing_voters:
                    await self._apply(self.node.tick(time.monotonic()))
            except Exception:
                log.exception("election tick failed")
            await asyncio.sleep(interval)

    async def _refresh_voters(self) -> None:
        if self.voters_version is None:
            return
        try:
            recorded = await asyncio.wait_for(self._store().voters.remote(), STORE_CALL_TIMEOUT_S)
        except Exception as exc:  # the store restarting: no term can begin meanwhile anyway
            log.warning("could not read the voter set: %s", root_cause(exc))
            return
        if recorded["version"] != self.voters_version:
            self.voters_version = recorded["version"]
            await self._apply(self.node.set_voters(recorded["voters"], time.monotonic()))

    def _store(self) -> Any:
        if self._cluster_store is None:
            self._cluster_store = ensure_cluster_store(self.settings.node_dir())
        return self._cluster_store

    async def _term_registered(self, payload: Mapping[str, Any]) -> bool:
        """Whether the store registered the announced epoch for the announced leader."""
        key = (epoch_field(payload, "epoch", minimum=1), str_field(payload, "leader_id"))
        if key not in self._proven:
            try:
                holder = await asyncio.wait_for(self._store().epoch_holder.remote(key[0]), STORE_CALL_TIMEOUT_S)
            except Exception:  # unverifiable: refused; the leader announces again at its next renewal
                return False
            if holder != key[1]:
                return False
            self._proven[key] = None
            while len(self._proven) > PROVEN_TERMS_KEPT:
                del self._proven[next(iter(self._proven))]
        return True

    def _leading(self, now: float) -> bool:
        return self.node.is_leader(now) and self.registered_epoch == self.node.epoch

    # --- API -----------------------------------------------------------------------------
    async def on_request(self, kind: str, payload: dict[str, Any], sender: str | None = None) -> dict[str, Any]:
        node = await self._ensure_started()
        if sender is not None and sender in self.isolated:
            raise Unavailable(f"{self.node_id} is cut off from {sender}")
        if not isinstance(payload, Mapping):
            raise BadRequest("payload: expected an object", field="payload")
        try:
            registered = await self._term_registered(payload) if kind == COORDINATOR else False
            ready = node.on_request(kind, payload, time.monotonic(), term_registered=registered)
        except MalformedMessage as bad:
            raise BadRequest(str(bad), field=bad.field) from None
        return await self._apply(ready)

    async def status(self) -> dict[str, Any]:
        if self.node is None:  # still forming the voter set: answer at once, never hold up a gateway
            asyncio.get_running_loop().create_task(self._ensure_started())
            return {"node_id": self.node_id, "role": "forming", "is_leader": False, "leader_id": None, "epoch": 0,
                    "highest_epoch": 0, "voters": [], "voters_version": None, "quorum": 0, "eligible": [],
                    "leader_valid_for_s": None, "isolated_from": sorted(self.isolated)}
        node = await self._ensure_started()
        now = time.monotonic()
        leading = self._leading(now)
        valid_until = node.leader_valid_until
        return {
            "node_id": self.node_id,
            "role": node.role.value if not (node.role is Role.LEADER and not leading) else Role.CANDIDATE.value,
            "is_leader": leading,
            "leader_id": self.node_id if leading else (node.leader_id if node.leader_id != self.node_id else None),
            "epoch": node.epoch,
            "highest_epoch": node.highest_epoch,
            "voters": list(node.config.voters),
            "voters_version": self.voters_version,
            "quorum": node.config.quorum,
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
        await self._apply(node.observe_epoch(epoch, time.monotonic()))

    async def observe_epoch(self, epoch: int) -> dict[str, Any]:
        """A command of ours was refused by someone who has seen `epoch`: step down if it is newer."""
        node = await self._ensure_started()
        await self._apply(node.observe_epoch(epoch, time.monotonic()))
        return await self.status()

    async def leader_write(self, kind: str, key: str, doc: dict[str, Any], once: bool = False) -> dict[str, Any]:
        """Write cluster state as leader, carrying this term's epoch; a refusal makes us step down.
        `once`: a record already stored under the key is kept (see ClusterDB.write_once)."""
        node = await self._ensure_started()
        epoch = node.epoch
        if not self._leading(time.monotonic()):
            raise Conflict(f"{self.node_id} is not the leader", leader_id=node.leader_id, epoch=node.highest_epoch)
        store = self._store()
        try:
            return await (store.write_once if once else store.write).remote(kind, key, doc, epoch, self.node_id)
        except Conflict as refused:
            await self._apply(node.observe_epoch(_refused_epoch(refused, epoch), time.monotonic()))
            raise

    async def change_voters(self, add: list[str], remove: list[str]) -> dict[str, Any]:
        """Add and remove voters of a cluster whose voters were recorded at formation (leader only).

        This leader steps down *before* the store records the change: a candidate under the new set
        may win as soon as it is recorded, and must not overlap a leader acting under the old one.
        A node that has not read the change yet may still win the old set's majority, but the store
        begins no term under an old version. A change that changes nothing is answered as is, so a
        retried request neither changes the set twice nor costs a leadership.
        """
        node = await self._ensure_started()
        if self.voters_version is None:
            raise Conflict("voters are configured (settings or cluster.yaml): change them there, on every node")
        now = time.monotonic()
        if not self._leading(now):
            raise Conflict(f"{self.node_id} is not the leader", leader_id=node.leader_id)
        current = await self._store().voters.remote()
        wanted = sorted((set(current["voters"]) | set(add)) - set(remove))
        if wanted == current["voters"]:
            return {**current, "changed": False}
        if not wanted:
            raise BadRequest("remove: would leave no voters", field="remove")
        await self._check_new_voters(add, wanted)
        epoch = node.epoch
        # Standing again under the old set before the change is recorded would only make the store
        # refuse the change (a newer term): this node waits until it has read the new set.
        self._changing_voters = True
        try:
            await self._apply(node.step_down(time.monotonic()))
            recorded = await self._store().change_voters.remote(add, remove, epoch=epoch, writer=self.node_id)
        finally:
            await self._refresh_voters()
            self._changing_voters = False
        return {**recorded, "changed": True}

    async def _check_new_voters(self, add: list[str], wanted: list[str]) -> None:
        """Every added voter is a live Ray-backed peer, and a strict majority of the new set is
        alive now, so the new set can elect a leader at once (the old set's majority is ours)."""
        snapshot = await self._peer_snapshot()
        if snapshot is None:
            raise Unavailable("this node's peer view is restarting; retry")
        peers = {p["node_id"]: p for p in snapshot["peers"]}
        unknown = sorted(n for n in add if n not in peers or not peers[n].get("ray_node_id")
                         or peers[n]["state"] == "retired")
        if unknown:
            raise NotFound(f"not a known Ray-backed peer: {', '.join(unknown)}", field="add", nodes=unknown)
        alive = [n for n in wanted if n in peers and peers[n]["state"] == "alive"]
        if len(alive) < len(wanted) // 2 + 1:
            raise Conflict(f"only {len(alive)} of the new voters {wanted} are alive; a majority must be",
                           alive=alive)

    async def isolate(self, node_ids: list[str]) -> list[str]:
        """Fault injection for chaos tests: drop all election traffic to and from these nodes.
        Refused unless the node was started with `fault_injection` on."""
        if not self.settings.fault_injection:
            raise PermissionError("fault injection is off on this node (settings.fault_injection)")
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
    cause = root_cause(refused)
    return max(int(getattr(cause, "extra", {}).get("epoch", 0)), ours + 1)
