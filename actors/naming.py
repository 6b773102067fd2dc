"""Names and placement shared by every actor: one namespace, node-local actors named after their node."""
from __future__ import annotations

from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

NAMESPACE = "p2p"
PEER_PREFIX = "peer:"
JOBS_PREFIX = "jobs:"
ELECTION_PREFIX = "election:"
SYNC_PREFIX = "sync:"
INFERENCE_PREFIX = "inference:"
CLUSTER_STORE = "cluster_store"
TOURNAMENT_ACTOR = "tournament"


def peer_name(node_id: str) -> str:
    return f"{PEER_PREFIX}{node_id}"


def jobs_name(node_id: str) -> str:
    return f"{JOBS_PREFIX}{node_id}"


def election_name(node_id: str) -> str:
    return f"{ELECTION_PREFIX}{node_id}"


def sync_name(node_id: str) -> str:
    return f"{SYNC_PREFIX}{node_id}"


def inference_name(node_id: str) -> str:
    return f"{INFERENCE_PREFIX}{node_id}"


def pinned(ray_node_id: str) -> NodeAffinitySchedulingStrategy:
    """Hard affinity: a node-local actor or task never runs anywhere but its own node."""
    return NodeAffinitySchedulingStrategy(node_id=ray_node_id, soft=False)


def lookup(name: str) -> Any:
    """The one place a named actor is looked up; ValueError if no actor has that name."""
    return ray.get_actor(name, namespace=NAMESPACE)


def root_cause(exc: BaseException) -> BaseException:
    """Ray re-raises a task's or actor's exception wrapped in a RayTaskError; the original is its `cause`."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(exc, ray.exceptions.RayTaskError) and isinstance(cause, BaseException) else exc
