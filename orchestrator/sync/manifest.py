"""A node's data manifest: every synced file under its data directory with size, mtime and sha256.

Only the synced trees are listed (`selfplay/`, `models/`, `training/`): the node's own state
databases, temp files of atomic writes (`*.tmp`) and partial downloads (`*.partial`) never appear,
and a symlink is never followed. Hashing is the expensive part, so digests are cached by
(path, size, mtime_ns): a refresh rereads only files that changed. The cache is a plain dict the
caller persists; losing it costs one rehash of the data directory, never a wrong digest.
"""
from __future__ import annotations

import fnmatch
import hashlib
import os
import stat
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Iterable, Mapping

from orchestrator.errors import BadRequest

SYNCED_TREES = {"selfplay": "selfplay", "models": "model", "training": "training"}  # top directory -> kind
SKIPPED_SUFFIXES = (".tmp", ".partial")
HASH_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class FileEntry:
    path: str  # relative to the data directory, POSIX separators
    size: int
    mtime: float
    mtime_ns: int
    sha256: str
    kind: str
    board_type: str | None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, value: Mapping) -> "FileEntry":
        return cls(**{name: value[name] for name in cls.__dataclass_fields__})


@dataclass(frozen=True)
class ScanStats:
    files: int
    hashed: int  # files whose digest was (re)computed: new or changed since the cached one
    bytes_hashed: int


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def classify(relative: str) -> tuple[str, str | None] | None:
    """(kind, board_type) of a synced path, or None for a path outside the synced trees.

    Self-play files live at `selfplay/<board_type>/<job_id>/...` and training data at
    `training/<board_type>/...`; a model's board type is in the registry, not in its path."""
    parts = PurePosixPath(relative).parts
    if len(parts) < 2 or parts[0] not in SYNCED_TREES:
        return None
    if parts[-1].startswith(".") or parts[-1].endswith(SKIPPED_SUFFIXES):
        return None
    kind = SYNCED_TREES[parts[0]]
    board_type = parts[1] if kind in ("selfplay", "training") and len(parts) > 2 else None
    return kind, board_type


def scan(root: Path, cache: Mapping[str, Mapping]) -> tuple[dict[str, FileEntry], ScanStats]:
    """Walk the synced trees of `root`; reuse a cached digest when path, size and mtime_ns match."""
    root = Path(root).resolve()
    entries: dict[str, FileEntry] = {}
    hashed = bytes_hashed = 0
    for tree in SYNCED_TREES:
        top = root / tree
        if top.is_symlink() or not top.is_dir():
            continue
        for directory, subdirs, files in os.walk(top, followlinks=False):
            subdirs[:] = [d for d in subdirs if not (Path(directory) / d).is_symlink()]
            for name in files:
                path = Path(directory) / name
                relative = path.relative_to(root).as_posix()
                entry, rehashed = _entry(root, relative, cache.get(relative))
                if entry is None:
                    continue
                entries[relative] = entry
                if rehashed:
                    hashed += 1
                    bytes_hashed += entry.size
    return dict(sorted(entries.items())), ScanStats(len(entries), hashed, bytes_hashed)


def entry_for(root: Path, relative: str, cached: Mapping | None) -> FileEntry | None:
    """The current entry of one file (rehashed only if it changed), or None if it is not a synced file."""
    return _entry(Path(root), relative, cached)[0]


def _entry(root: Path, relative: str, cached: Mapping | None) -> tuple[FileEntry | None, bool]:
    kind_board = classify(relative)
    if kind_board is None:
        return None, False
    path = root / relative
    try:
        info = os.lstat(path)
        if not stat.S_ISREG(info.st_mode):  # symlinks are never followed, devices never read
            return None, False
        if cached is not None and (cached["size"], cached["mtime_ns"]) == (info.st_size, info.st_mtime_ns):
            digest = cached["sha256"]
            return FileEntry(relative, info.st_size, info.st_mtime, info.st_mtime_ns, digest, *kind_board), False
        digest = sha256_file(path)
    except FileNotFoundError:  # removed since the listing
        return None, False
    return FileEntry(relative, info.st_size, info.st_mtime, info.st_mtime_ns, digest, *kind_board), True


# -- patterns ----------------------------------------------------------------------------------

def check_pattern(pattern: str) -> str:
    """A pattern names paths relative to the data directory; one that could escape it is refused."""
    if not pattern or "\x00" in pattern or pattern.startswith(("/", "\\")) or os.path.isabs(pattern):
        raise BadRequest(f"patterns: {pattern!r} must be a non-empty path relative to the data directory",
                         field="patterns")
    parts = pattern.replace("\\", "/").split("/")
    if any(part in ("..", ".") for part in parts) or "" in parts[:-1]:
        raise BadRequest(f"patterns: {pattern!r} escapes the data directory", field="patterns")
    return pattern


def matches(relative: str, pattern: str) -> bool:
    """Glob per path segment: `*` and `?` stay inside one segment, `**` spans any number of them."""
    return _match(relative.split("/"), pattern.split("/"))


def _match(parts: list[str], pattern: list[str]) -> bool:
    if not pattern:
        return not parts
    if pattern[0] == "**":
        return any(_match(parts[i:], pattern[1:]) for i in range(len(parts) + 1))
    return bool(parts) and fnmatch.fnmatchcase(parts[0], pattern[0]) and _match(parts[1:], pattern[1:])


def select(entries: Iterable[FileEntry], patterns: Iterable[str], since_timestamp: float | None) -> list[FileEntry]:
    """Entries matching any pattern and modified after `since_timestamp` (all of them without one)."""
    patterns = [check_pattern(p) for p in patterns]
    return [e for e in entries
            if any(matches(e.path, p) for p in patterns) and (since_timestamp is None or e.mtime > since_timestamp)]


def cache_of(entries: Mapping[str, FileEntry]) -> dict[str, dict]:
    return {path: {"size": e.size, "mtime_ns": e.mtime_ns, "sha256": e.sha256} for path, e in entries.items()}
