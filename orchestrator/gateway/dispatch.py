"""Starting work on a chosen node: fencing first (the node refuses a stale leader), then its supervisor."""
from __future__ import annotations

from typing import Any

from actors.bootstrap import election_actor, jobs_actor
from actors.naming import root_cause
from orchestrator.errors import Conflict, Unavailable


def _remote(node, target: str, lookup) -> Any:
    try:
        return lookup(target)
    except ValueError:
        raise Unavailable(f"node {target!r} has no running actors", node_id=target) from None


async def start_job_on(node, target: str, job_id: str, job_type: str, config: dict[str, Any],
                       epoch: int | None) -> dict[str, Any]:
    """Start a job on `target`; with an epoch (a leader's command) the target checks it first."""
    if epoch is not None:
        try:
            await node.call(_remote(node, target, election_actor).check_command_epoch.remote(epoch))
        except Conflict as refused:  # a newer leadership exists: stop acting as leader at once
            newer = getattr(root_cause(refused), "extra", {}).get("epoch", epoch + 1)
            await node.call(node.actors.election.observe_epoch.remote(newer))
            await node.refresh()
            raise
    supervisor = node.actors.jobs if target == node.node_id else _remote(node, target, jobs_actor)
    return await node.call(supervisor.start.remote(job_id, job_type, config))


async def stop_job_on(node, target: str, job_id: str) -> dict[str, Any]:
    supervisor = node.actors.jobs if target == node.node_id else _remote(node, target, jobs_actor)
    return await node.call(supervisor.stop.remote(job_id))
