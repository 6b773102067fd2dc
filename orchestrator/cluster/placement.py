"""Where the leader puts work: pure choices over the cached peer views.

Only alive, non-retired nodes get work. For self-play, registered self-play workers with spare
capacity come first, then nodes with a GPU, then the least loaded (fewest active jobs, then the
lowest one-minute load average), with the node id as a stable tie-break.
"""
from __future__ import annotations

from typing import Any, Iterable

from orchestrator.cluster.jobs import ACTIVE

ACTIVE_STATES = frozenset(state.value for state in ACTIVE)


def active_jobs(peer: dict[str, Any], job_type: str | None = None) -> int:
    return sum(1 for j in peer["running_jobs"]
               if j.get("state") in ACTIVE_STATES and (job_type is None or j.get("job_type") == job_type))


def _load_key(peer: dict[str, Any]) -> tuple:
    return (active_jobs(peer), peer["resources"].get("load_avg_1m", 0.0), peer["node_id"])


def pick_selfplay_node(peers: Iterable[dict[str, Any]], workers: dict[str, int]) -> str | None:
    """`workers` maps a registered self-play worker to the number of self-play jobs it takes."""
    alive = [p for p in peers if p["state"] == "alive"]
    if not alive:
        return None

    def key(peer: dict[str, Any]) -> tuple:
        capacity = workers.get(peer["node_id"], 0)
        spare = capacity - active_jobs(peer, "selfplay")
        has_gpu = peer["resources"].get("ray_gpus", 0) > 0
        return (not spare > 0, not has_gpu, *_load_key(peer))

    return min(alive, key=key)["node_id"]


def pick_training_node(peers: Iterable[dict[str, Any]]) -> str | None:
    """A node with a GPU and no training running, else the least loaded node."""
    alive = [p for p in peers if p["state"] == "alive"]
    if not alive:
        return None

    def key(peer: dict[str, Any]) -> tuple:
        training = active_jobs(peer, "training") + active_jobs(peer, "nnue_training")
        free_gpu = peer["resources"].get("ray_gpus", 0) > 0 and training == 0
        return (not free_gpu, *_load_key(peer))

    return min(alive, key=key)["node_id"]


def jobs_to_reduce(jobs: list[dict[str, Any]], *, target_jobs: int | None, factor: float | None) -> list[dict[str, Any]]:
    """The running self-play jobs to stop so that `target_jobs` (or `factor` of them) remain; newest go first."""
    running = sorted((j for j in jobs if j["job_type"] == "selfplay" and j["state"] in ("pending", "running")),
                     key=lambda j: (float("inf") if j.get("started_at") is None else j["started_at"], j["job_id"]))
    keep = target_jobs if target_jobs is not None else int(len(running) * factor)
    return running[keep:][::-1]
