"""Path safety: every path a request names is relative to the data directory and stays inside it."""
from __future__ import annotations

import os
from pathlib import Path

from orchestrator.errors import BadRequest


def resolve_inside(root: Path, relative: str) -> Path:
    """Resolve `relative` under `root`; refuse absolute paths, `..` and symlinks that lead outside."""
    if not relative or os.path.isabs(relative) or "\x00" in relative:
        raise BadRequest(f"path must be relative to the data directory: {relative!r}", field="path")
    root = Path(root).resolve()
    target = (root / relative).resolve()
    if os.path.commonpath([root, target]) != str(root):
        raise BadRequest(f"path escapes the data directory: {relative!r}", field="path")
    return target


def is_inside(root: Path, path: Path) -> bool:
    root = Path(root).resolve()
    return os.path.commonpath([root, Path(path).resolve()]) == str(root)
