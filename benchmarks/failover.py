"""Forced leader failovers on a local 3-node Ray cluster with a short lease TTL.

Each round SIGKILLs the current leader's ElectionActor (Ray restarts it, as a follower with a
fresh lease id and its voter in quarantine) and times how long until a leader serves again at a
higher epoch (Bully may hand the office back to the restarted node: it still ranks highest).
Prints the median and max failover time as a multiple of the TTL, and the number of overlapping
leaderships the history checker finds across all nodes (must be 0).

    .venv/bin/python benchmarks/failover.py [--rounds 10] [--ttl 2.0]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

POLL_S = 0.02


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--ttl", type=float, default=2.0)
    args = parser.parse_args()

    import ray
    from ray.cluster_utils import Cluster

    from actors.bootstrap import ensure_node_actors
    from actors.naming import NAMESPACE
    from orchestrator.cluster.election_history import TermRecord, find_overlaps
    from orchestrator.config import Settings

    ips = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
    common = {"num_cpus": 1, "object_store_memory": 80 * 2**20}
    cluster = Cluster(initialize_head=True, head_node_args={"node_ip_address": ips[0], "include_dashboard": False, **common})
    workers = [cluster.add_node(node_ip_address=ip, **common) for ip in ips[1:]]
    ray.init(address=cluster.address, namespace=NAMESPACE, _node_ip_address=ips[0], logging_level="ERROR")
    ray_nodes = [cluster.head_node.node_id] + [w.node_id for w in workers]
    names = ["fo-a", "fo-b", "fo-c"]
    with tempfile.TemporaryDirectory() as tmp:
        actors = {}
        for name, ray_node in zip(names, ray_nodes):
            settings = Settings(node_id=name, port=1, data_dir=Path(tmp) / name, voters=names, lease_ttl_s=args.ttl,
                                election_timeout_s=args.ttl / 8, lease_safety_margin_s=args.ttl / 10,
                                heartbeat_interval_s=0.2, view_refresh_s=0.2)
            actors[name] = ensure_node_actors(settings, "127.0.0.1", 1, ray_node)

        def leader_above(epoch: int) -> tuple[str, int] | None:
            statuses = ray.get([a.election.status.remote() for a in actors.values()], timeout=30)
            return next(((s["node_id"], s["epoch"]) for s in statuses if s["is_leader"] and s["epoch"] > epoch), None)

        def wait_for_leader(epoch: int) -> tuple[str, int]:
            while (found := leader_above(epoch)) is None:
                time.sleep(POLL_S)
            return found

        leader, epoch = wait_for_leader(0)
        times = []
        for round_index in range(args.rounds):
            time.sleep(args.ttl)  # a settled term, renewed a few times
            ray.kill(actors[leader].election, no_restart=False)
            killed = time.monotonic()
            new_leader, new_epoch = wait_for_leader(epoch)
            times.append(time.monotonic() - killed)
            print(f"round {round_index + 1}: {leader}@{epoch} -> {new_leader}@{new_epoch} in {times[-1]:.2f}s "
                  f"({times[-1] / args.ttl:.2f} TTL)", flush=True)
            leader, epoch = new_leader, new_epoch
        time.sleep(args.ttl)
        records = [TermRecord(**r) for a in actors.values() for r in ray.get(a.election.history.remote(), timeout=30)]
        overlaps = find_overlaps(records)
    ray.shutdown()
    cluster.shutdown()
    print(f"TTL {args.ttl}s, {args.rounds} failovers, {len(records)} term records")
    print(f"median failover: {statistics.median(times) / args.ttl:.2f} x TTL ({statistics.median(times):.2f}s)")
    print(f"max failover:    {max(times) / args.ttl:.2f} x TTL ({max(times):.2f}s)  (issue bound: 1.5 x TTL + 1s)")
    print(f"overlap violations: {len(overlaps)}")
    for overlap in overlaps:
        print("  " + overlap.describe())


if __name__ == "__main__":
    main()
