"""Joining or starting Ray, and creating this node's actors (idempotently, by name)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import ray

from actors.cluster_store import ensure_cluster_store
from actors.cmaes import ensure_cmaes_actor
from actors.registrar import ensure_model_registrar
from actors.sync import ensure_sync_actor
from actors.tournament import ensure_tournament_actor
from actors.pipeline import ensure_pipeline_actor
from actors.election import ElectionActor
from actors.jobs import JobSupervisor
from actors.naming import NAMESPACE, election_name, jobs_name, lookup, peer_name, pinned
from actors.peer import PeerActor
from orchestrator.config import Settings
from orchestrator.play.games import GameCatalog

# Ray's own token auth would be switched on by a stray ~/.ray/auth_token; we choose explicitly.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def connect(settings: Settings) -> bool:
    """Join the cluster at `ray_address`, or start an embedded local head. True if we started Ray."""
    if ray.is_initialized():
        return False
    if settings.ray_address:
        ray.init(address=settings.ray_address, namespace=NAMESPACE, _node_ip_address=settings.ray_node_ip,
                 logging_level="WARNING")
        return False
    # address="local": always a new embedded head, never a cluster some other program left running.
    ray.init(address="local", namespace=NAMESPACE, _node_ip_address=settings.ray_node_ip,
             include_dashboard=settings.ray_dashboard,
             num_cpus=settings.ray_num_cpus, num_gpus=settings.ray_num_gpus, logging_level="WARNING")
    return True


@dataclass(frozen=True)
class NodeActors:
    node_id: str
    ray_node_id: str
    peer: Any
    jobs: Any
    election: Any
    cluster_store: Any
    cmaes: Any  # the CMA-ES singleton on the head
    sync: Any  # this node's SyncActor (data manifest, file serving, transfers in)

    def local(self) -> tuple[Any, ...]:
        """The actors that belong to this node alone (the cluster store is shared)."""
        return (self.peer, self.jobs, self.election, self.sync)


def ensure_node_actors(settings: Settings, host: str, port: int, ray_node_id: str | None = None) -> NodeActors:
    """Get or create `peer:`, `jobs:` and `election:<node_id>`, pinned to this node's Ray node, and
    the cluster store on the head."""
    ray_node_id = ray_node_id or ray.get_runtime_context().get_node_id()
    settings.node_dir().mkdir(parents=True, exist_ok=True)
    common = dict(namespace=NAMESPACE, lifetime="detached", get_if_exists=True, scheduling_strategy=pinned(ray_node_id))
    peer = PeerActor.options(name=peer_name(settings.node_id), **common).remote(
        settings.node_id, host, port, ray_node_id, settings)
    jobs = JobSupervisor.options(name=jobs_name(settings.node_id), **common).remote(
        settings.node_id, ray_node_id, settings)
    election = ElectionActor.options(name=election_name(settings.node_id), **common).remote(settings.node_id, settings)
    store = ensure_cluster_store(settings.node_dir())
    ensure_model_registrar()  # registers finished training runs through whichever node leads
    ensure_tournament_actor(GameCatalog.from_settings(settings.games))  # tournaments, A/B tests, ratings
    ensure_pipeline_actor(GameCatalog.from_settings(settings.games))  # improvement runs, pipeline, rollbacks
    return NodeActors(node_id=settings.node_id, ray_node_id=ray_node_id, peer=peer, jobs=jobs, election=election,
                      cluster_store=store, cmaes=ensure_cmaes_actor(settings.node_dir()),
                      sync=ensure_sync_actor(settings, ray_node_id))


def jobs_actor(node_id: str) -> Any:
    """Another node's JobSupervisor, for calls about jobs that live there; ValueError if none."""
    return lookup(jobs_name(node_id))


def election_actor(node_id: str) -> Any:
    """Another node's ElectionActor (its fencing point for commands); ValueError if none."""
    return lookup(election_name(node_id))
