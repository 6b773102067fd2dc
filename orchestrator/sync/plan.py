"""Transfer planning from manifests: each byte moves once, and only where it is needed.

A file is copied to a target only when the target lacks it or holds a copy whose sha256
differs from the wanted version; a node that already holds the wanted version is never a
target for it. Without a named source, the wanted version of a path is the newest one in the
cluster (by mtime, then digest, so every planner picks the same), and each copy is fetched from
the holder of that version with the fewest bytes assigned so far, spreading the load.
Pure: the caller gathers the manifests and hands the transfers to the targets.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Container, Iterable, Iterator, Mapping, Sequence

from orchestrator.sync.manifest import FileEntry, select

# Lower runs first: a new best model, then a training window, then everything else.
PRIORITY_MODEL = 0
PRIORITY_TRAINING = 1
PRIORITY_DEFAULT = 2

Manifests = Mapping[str, Mapping[str, FileEntry]]  # node_id -> path -> entry


@dataclass(frozen=True)
class Transfer:
    path: str
    sha256: str
    size: int
    source_node: str
    target_node: str
    priority: int = PRIORITY_DEFAULT

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, value: Mapping) -> "Transfer":
        return cls(**{name: value[name] for name in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Plan:
    transfers: tuple[Transfer, ...]
    skipped: int  # (file, target) pairs left alone because the target already holds the wanted version

    def bytes_total(self) -> int:
        return sum(t.size for t in self.transfers)

    def by_target(self) -> dict[str, list[Transfer]]:
        grouped: dict[str, list[Transfer]] = {}
        for transfer in sorted(self.transfers, key=lambda t: (t.priority, t.path)):
            grouped.setdefault(transfer.target_node, []).append(transfer)
        return grouped


def _wanted(manifests: Manifests, path: str, source: str | None) -> FileEntry | None:
    if source is not None:
        return manifests.get(source, {}).get(path)
    versions = [files[path] for files in manifests.values() if path in files]
    return max(versions, key=lambda e: (e.mtime_ns, e.sha256)) if versions else None


def plan_transfers(manifests: Manifests, patterns: Iterable[str], since_timestamp: float | None = None, *,
                   source_node: str | None = None, target_nodes: Iterable[str] | None = None,
                   priority: int = PRIORITY_DEFAULT) -> Plan:
    """Transfers that make every target hold the wanted version of every selected file.

    `manifests` holds the nodes that may serve or receive (the alive ones); `target_nodes`
    defaults to all of them but the named source."""
    patterns = list(patterns)
    sources = [source_node] if source_node is not None else list(manifests)
    paths = sorted({e.path for node in sources for e in select(manifests.get(node, {}).values(), patterns,
                                                                since_timestamp)})
    targets = [n for n in (target_nodes if target_nodes is not None else manifests) if n != source_node]
    assigned = {node: 0 for node in manifests}
    transfers: list[Transfer] = []
    skipped = 0
    for path in paths:
        wanted = _wanted(manifests, path, source_node)
        if wanted is None or (since_timestamp is not None and wanted.mtime <= since_timestamp):
            continue
        holders = [n for n, files in manifests.items() if files.get(path) is not None
                   and files[path].sha256 == wanted.sha256]
        for target in targets:
            if target in holders:
                skipped += 1
                continue
            source = source_node if source_node is not None else min(holders, key=lambda n: (assigned[n], n))
            assigned[source] = assigned.get(source, 0) + wanted.size
            transfers.append(Transfer(path, wanted.sha256, wanted.size, source, target, priority))
    return Plan(tuple(transfers), skipped)


QueueEntry = tuple[int, int, str, int]  # (priority, arrival, sync_id, index of the transfer in its job)


def queue_entries(sync_id: str, transfers: Sequence[Mapping], settled: Container[str],
                  arrival: Iterator[int]) -> list[QueueEntry]:
    """A node's queue entries for the transfers of one sync job that are not settled yet (`settled`
    holds the indexes, as strings, of those done or failed). A min-heap of them hands out the lowest
    priority value first (a new best model ahead of a training window ahead of everything else),
    and within one priority the earliest arrival."""
    return [(transfer["priority"], next(arrival), sync_id, index)
            for index, transfer in enumerate(transfers) if str(index) not in settled]


def merge_manifests(manifests: Manifests) -> dict[str, dict]:
    """path -> which node holds which version, and whether the copies differ (for the cluster view)."""
    merged: dict[str, dict] = {}
    for node, files in sorted(manifests.items()):
        for path, entry in files.items():
            row = merged.setdefault(path, {"path": path, "kind": entry.kind, "board_type": entry.board_type,
                                           "holders": {}})
            row["holders"][node] = {"sha256": entry.sha256, "size": entry.size, "mtime": entry.mtime}
    for row in merged.values():
        digests = {holder["sha256"] for holder in row["holders"].values()}
        row["copies"] = len(row["holders"])
        row["differs"] = len(digests) > 1
    return dict(sorted(merged.items()))
