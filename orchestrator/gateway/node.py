"""The gateway's handle on its node: actor handles plus a cached view of the cluster.

`/health` and `/status` are answered from the cache, refreshed every `view_refresh_s` and
right after any call that changes state, so reads never wait on an actor round trip. The cache
also remembers why the last periodic refresh failed and when a leader was last known, which
`/health` judges by `health.NODE_HEALTH_RULE`; all of it is memory, rebuilt after a restart.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Awaitable

import aiohttp

from actors.bootstrap import NodeActors
from orchestrator import __version__
from orchestrator.cluster.membership import cluster_health
from orchestrator.config import Settings
from orchestrator.errors import Unavailable
from orchestrator.gateway.health import NODE_HEALTH_RULE, HealthTimings, judge
from orchestrator.gateway.routes_connectivity import outgoing_trace
from orchestrator.play.games import GameCatalog

log = logging.getLogger(__name__)
HEALTH_RULE = ("critical: no leader known or fewer than a strict majority of non-retired peers alive; "
               "degraded: a non-retired peer suspect or dead, or a job stuck; healthy: otherwise")


class NodeGateway:
    def __init__(self, settings: Settings, actors: NodeActors) -> None:
        self.settings = settings
        self.actors = actors
        self.node_id = settings.node_id
        self.started = time.monotonic()
        self.games = GameCatalog.from_settings(settings.games)
        self._snapshot: dict[str, Any] = {"peers": [], "eligible": [self.node_id]}
        self._jobs: list[dict[str, Any]] = []
        self._election: dict[str, Any] = {"is_leader": False, "leader_id": None, "epoch": 0}
        self._refreshed_at = 0.0
        self._refresh_error: str | None = None
        self._failed_refreshes = 0  # in a row, since the last one that succeeded
        self._leader_seen_at = self.started  # a new node has lease TTLs to find a leader before it is unavailable
        self._refresher: asyncio.Task | None = None
        self._http: aiohttp.ClientSession | None = None

    # --- actor calls -----------------------------------------------------------------------
    async def call(self, ref: Awaitable[Any]) -> Any:
        try:
            return await asyncio.wait_for(ref, self.settings.actor_call_timeout_s)
        except asyncio.TimeoutError:
            raise Unavailable("node actor did not answer in time") from None

    async def refresh(self) -> None:
        asked_at = time.monotonic()  # the view is as old as the question, not the answer
        snapshot, jobs, election = await asyncio.gather(self.call(self.actors.peer.snapshot.remote()),
                                                        self.call(self.actors.jobs.summaries.remote()),
                                                        self.call(self.actors.election.status.remote()))
        self._snapshot, self._jobs, self._election = snapshot, jobs, election
        self._refreshed_at, self._refresh_error, self._failed_refreshes = asked_at, None, 0
        if self.leader_id is not None:
            self._leader_seen_at = asked_at

    async def _refresh_forever(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception as exc:  # a restarting actor must not stop the view from recovering
                self._refresh_error = f"{type(exc).__name__}: {exc}".splitlines()[0]
                self._failed_refreshes += 1
                log.warning("view refresh failed: %s", exc)
            await asyncio.sleep(self.settings.view_refresh_s)

    async def start(self) -> None:
        await self.refresh()
        self._refresher = asyncio.get_running_loop().create_task(self._refresh_forever())

    async def stop(self) -> None:
        if self._refresher:
            self._refresher.cancel()
        if self._http:
            await self._http.close()

    def http(self) -> aiohttp.ClientSession:
        """One client session per gateway, for calls to other nodes' gateways."""
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.settings.actor_call_timeout_s),
                                               trace_configs=[outgoing_trace(self)])  # /connectivity/transport_stats
        return self._http

    # --- cached views ----------------------------------------------------------------------
    @property
    def leader_id(self) -> str | None:
        if self._election["leader_id"] == self.node_id and not self.is_leader:
            return None
        return self._election["leader_id"]

    @property
    def is_leader(self) -> bool:
        """Never past the lease the election actor last reported: a paused or dead actor cannot
        leave this gateway claiming leadership."""
        valid_for = self._election.get("leader_valid_for_s") or 0.0
        return self._election["is_leader"] and time.monotonic() < self._refreshed_at + valid_for

    def election(self) -> dict[str, Any]:
        return self._election

    def health(self) -> dict[str, Any]:
        now = time.monotonic()
        settings = self.settings
        verdict = judge(now - self._refreshed_at, self._failed_refreshes, self._refresh_error,
                        None if self.leader_id is not None else now - self._leader_seen_at,
                        HealthTimings(settings.view_refresh_s, settings.actor_call_timeout_s, settings.lease_ttl_s))
        return {
            "status": verdict.status,
            "reasons": list(verdict.reasons),
            "health_rule": NODE_HEALTH_RULE,
            "node_id": self.node_id,
            "uptime_seconds": round(time.monotonic() - self.started, 3),
            "is_leader": self.is_leader,
            "leader_id": self.leader_id,
            "version": __version__,
            "view_age_s": round(time.monotonic() - self._refreshed_at, 3),
        }

    def cluster_jobs(self) -> list[dict[str, Any]]:
        """Summaries of this node's active and recent jobs, and the active ones other peers last heartbeated."""
        jobs = list(self._jobs)
        for peer in self._snapshot["peers"]:
            if not peer["is_self"]:
                jobs.extend(peer["running_jobs"])
        return jobs

    def peers(self) -> list[dict[str, Any]]:
        return self._snapshot["peers"]

    def status(self) -> dict[str, Any]:
        jobs = self.cluster_jobs()
        health = cluster_health([p["state"] for p in self.peers()], self.leader_id, sum(1 for j in jobs if j["stuck"]))
        return {
            "node_id": self.node_id,
            "is_leader": self.is_leader,
            "leader_id": self.leader_id,
            "epoch": self._election["epoch"],
            "peers": self.peers(),
            "jobs": jobs,
            "cluster_health": health.value,
            "cluster_health_rule": HEALTH_RULE,
        }

    def peer(self, node_id: str) -> dict[str, Any] | None:
        return next((p for p in self.peers() if p["node_id"] == node_id), None)
