"""Disk cleanup inside one node's data directory.

Removes what is safe to lose: temp files of interrupted atomic writes (`*.tmp`), partial
downloads (`*.partial`) and training states left for a resume (`*.resume`) past their age, and
self-play data past the retention window when one is set. It never follows a symlink, never leaves
the data directory and never touches the node's state database.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.store import STATE_DIR
from orchestrator.sync.paths import is_inside

DAY_S = 86400.0
TEMP_SUFFIXES = (".tmp",)
# downloads, and training states (with the digest sidecars an earlier version wrote beside them):
# what a later attempt goes on from
PARTIAL_SUFFIXES = (".partial", ".resume", ".resume.sha256")
RETAINED_TREES = ("selfplay",)


@dataclass(frozen=True)
class CleanupPolicy:
    temp_max_age_s: float
    partial_max_age_s: float
    retention_days: float | None = None


@dataclass
class CleanupReport:
    dry_run: bool
    files: list[str] = field(default_factory=list)
    bytes_freed: int = 0


def _expired(path: Path, relative: str, age_s: float, policy: CleanupPolicy) -> bool:
    if path.name.endswith(TEMP_SUFFIXES):
        return age_s > policy.temp_max_age_s
    if path.name.endswith(PARTIAL_SUFFIXES):
        return age_s > policy.partial_max_age_s
    if policy.retention_days is not None and relative.split(os.sep, 1)[0] in RETAINED_TREES:
        return age_s > policy.retention_days * DAY_S
    return False


def cleanup(root: Path, policy: CleanupPolicy, now: float, dry_run: bool) -> CleanupReport:
    root = Path(root).resolve()
    report = CleanupReport(dry_run=dry_run)
    if not root.is_dir():
        return report
    for directory, subdirs, files in os.walk(root, followlinks=False):
        relative_dir = os.path.relpath(directory, root)
        if relative_dir == STATE_DIR:
            subdirs[:] = []
            continue
        for name in files:
            path = Path(directory) / name
            relative = os.path.normpath(os.path.join(relative_dir, name))
            if path.is_symlink() or not is_inside(root, path):
                continue
            stat = path.stat()
            if not _expired(path, relative, now - stat.st_mtime, policy):
                continue
            report.files.append(relative)
            report.bytes_freed += stat.st_size
            if not dry_run:
                path.unlink(missing_ok=True)
    report.files.sort()
    return report
