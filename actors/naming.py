"""Names and placement shared by every actor: one namespace, node-local actors named after their node."""
from __future__ import annotations

from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

NAMESPACE = "p2p"
PEER_PREFIX = "peer:"
JOBS_PREFIX = "jobs:"
ELECTION_PREFIX = "election:"
CLUSTER_STORE = "cluster_store"


def peer_name(node_id: str) -> str:
    return f"{PEER_PREFIX}{node_id}"


def jobs_name(node_id: str) -> str:
    return f"{JOBS_PREFIX}{node_id}"


def election_name(node_id: str) -> str:
    return f"{ELECTION_PREFIX}{node_id}"


def pinned(ray_node_id: str) -> NodeAffinitySchedulingStrategy:
    """Hard affinity: a node-local actor or task never runs anywhere but its own node."""
    return NodeAffinitySchedulingStrategy(node_id=ray_node_id, soft=False)
