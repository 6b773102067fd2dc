"""ClusterStore: cluster-wide state in one detached actor pinned to the Ray head node.

The head is already the cluster's single point of failure (Ray's GCS) unless GCS fault
tolerance is configured, so pinning the store there adds none. Any node reads; only the holder
of the highest epoch writes (see `orchestrator.cluster.fencing`). Ray restarts the actor on
failure and it reopens its SQLite file on the head's disk, so no record is lost.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import ray

from actors.naming import CLUSTER_STORE, NAMESPACE, pinned
from orchestrator.cluster.fencing import ClusterDB

CLUSTER_DB = Path("cluster") / "cluster.db"
HEAD_RESOURCE = "node:__internal_head__"


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class ClusterStore:
    def __init__(self, data_dir: str) -> None:
        self.db = ClusterDB(Path(data_dir) / CLUSTER_DB)

    def highest_epoch(self) -> tuple[int, str | None]:
        return self.db.highest_epoch()

    def begin_term(self, node_id: str, epoch: int, voters_version: int | None = None) -> dict[str, Any]:
        return self.db.begin_term(node_id, epoch, voters_version)

    def epoch_holder(self, epoch: int) -> str | None:
        return self.db.epoch_holder(epoch)

    def epoch_history(self) -> list[dict[str, Any]]:
        return self.db.epoch_history()

    def write(self, kind: str, key: str, doc: dict[str, Any], epoch: int, writer: str) -> dict[str, Any]:
        return self.db.write(kind, key, doc, epoch=epoch, writer=writer)

    def write_once(self, kind: str, key: str, doc: dict[str, Any], epoch: int, writer: str) -> dict[str, Any]:
        return self.db.write_once(kind, key, doc, epoch=epoch, writer=writer)

    def read(self, kind: str, key: str) -> dict[str, Any] | None:
        return self.db.read(kind, key)

    def list(self, kind: str) -> dict[str, dict[str, Any]]:
        return self.db.list(kind)

    def setting_once(self, name: str, value: Any) -> Any:
        return self.db.setting_once(name, value)

    def voters(self) -> dict[str, Any] | None:
        return self.db.voters()

    def form_voters(self, present: list[str]) -> dict[str, Any]:
        return self.db.form_voters(present)

    def change_voters(self, add: list[str], remove: list[str], *, epoch: int, writer: str) -> dict[str, Any]:
        return self.db.change_voters(add, remove, epoch=epoch, writer=writer)


def head_node_id() -> str:
    for node in ray.nodes():
        if node["Alive"] and HEAD_RESOURCE in node["Resources"]:
            return node["NodeID"]
    raise RuntimeError("no live Ray head node found")


def ensure_cluster_store(data_dir: Path) -> Any:
    """Get or create the store; `data_dir` is a path on the head node's disk."""
    return ClusterStore.options(name=CLUSTER_STORE, namespace=NAMESPACE, lifetime="detached", get_if_exists=True,
                                scheduling_strategy=pinned(head_node_id())).remote(str(Path(data_dir).expanduser()))
