"""The record of one registered model: what it is, where it came from, and where it stands.

A `ModelRecord` is immutable and validated on construction; the cluster store keeps it as one
SQLite row (`to_row`/`from_row`), so the whole lineage of every model (parent, the exact data
files by sha256, the training config, the code version) survives any failure of the node that
trained it. Status changes go through `transition`, which only allows the moves of the promotion
and rollback protocol, so a retried promotion is a no-op rather than a corruption.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field, replace
from pathlib import PurePosixPath
from typing import Any, Iterable, Mapping

from orchestrator.errors import BadRequest, Conflict

KINDS = ("policy_value", "nnue", "agent_params")
STATUSES = ("candidate", "best", "archived", "rolled_back")

# Which status may follow which. A rollback demotes the best to `rolled_back` and restores an
# `archived` former best; a rolled-back model can only come back by being evaluated again.
TRANSITIONS: dict[str, frozenset[str]] = {
    "candidate": frozenset({"best", "archived"}),
    "best": frozenset({"archived", "rolled_back"}),
    "archived": frozenset({"best"}),
    "rolled_back": frozenset({"candidate"}),
}

ROW_COLUMNS = (
    "model_id", "board_type", "kind", "parent", "created_at", "data_window", "training_config",
    "metrics", "code_version", "path", "sha256", "status",
)

_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


class InvalidModelRecord(BadRequest, ValueError):
    """A record field that does not validate; the message names the field."""


class InvalidTransition(Conflict, ValueError):
    """A status change that the promotion/rollback protocol does not allow."""


def _fail(field_name: str, why: str) -> InvalidModelRecord:
    return InvalidModelRecord(f"{field_name}: {why}", field=field_name)


def _relative_path(field_name: str, value: Any) -> str:
    # Paths in records are relative to a node's data directory, so a record stays valid when
    # the data moves to another node; an absolute or escaping path would point outside it.
    if not isinstance(value, str) or not value:
        raise _fail(field_name, "must be a non-empty relative path")
    path = PurePosixPath(value)
    if path.is_absolute() or ".." in path.parts or "\\" in value or "\x00" in value:
        raise _fail(field_name, f"{value!r} must be relative to the data directory, without '..'")
    return value


def _sha256(field_name: str, value: Any) -> str:
    if not isinstance(value, str) or not _SHA256_RE.match(value):
        raise _fail(field_name, "must be 64 lowercase hex digits")
    return value


def _json_object(field_name: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise _fail(field_name, "must be an object")
    try:
        # A round trip both copies (the record must not share mutable state with the caller)
        # and proves the value is plain finite JSON, as the SQLite row will store it.
        copied = json.loads(json.dumps(dict(value), allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise _fail(field_name, f"must be JSON with finite numbers ({exc})") from None
    return copied


def game_ids_digest(game_ids: Iterable[str]) -> str:
    """Order-independent sha256 over a set of game ids: the same games give the same digest."""
    digest = hashlib.sha256()
    for game_id in sorted(set(game_ids)):
        digest.update(game_id.encode())
        digest.update(b"\n")
    return digest.hexdigest()


@dataclass(frozen=True)
class DataFile:
    path: str
    sha256: str
    node_id: str | None = None  # the node the file came from (its writer, or the node it was copied from); None: unrecorded

    def __post_init__(self) -> None:
        _relative_path("data_window.files.path", self.path)
        _sha256("data_window.files.sha256", self.sha256)
        if self.node_id is not None and (not isinstance(self.node_id, str) or not self.node_id.strip()):
            raise _fail("data_window.files.node_id", "must be a non-empty string or null")


@dataclass(frozen=True)
class DataWindow:
    """The exact training data: the files read (by content hash) and the games taken from them."""

    files: tuple[DataFile, ...]
    game_count: int
    game_ids_digest: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "files", tuple(self.files))
        if not all(isinstance(f, DataFile) for f in self.files):
            raise _fail("data_window.files", "must be DataFile entries")
        if len({f.path for f in self.files}) != len(self.files):
            raise _fail("data_window.files", "lists a path twice")
        if isinstance(self.game_count, bool) or not isinstance(self.game_count, int) or self.game_count < 0:
            raise _fail("data_window.game_count", "must be a non-negative integer")
        _sha256("data_window.game_ids_digest", self.game_ids_digest)

    def to_dict(self) -> dict[str, Any]:
        return {
            "files": [{"path": f.path, "sha256": f.sha256, "node_id": f.node_id} for f in self.files],
            "game_count": self.game_count,
            "game_ids_digest": self.game_ids_digest,
        }

    @classmethod
    def from_dict(cls, value: Any) -> DataWindow:
        if not isinstance(value, Mapping):
            raise _fail("data_window", "must be an object")
        files = value.get("files")
        if not isinstance(files, list) or not all(isinstance(f, Mapping) for f in files):
            raise _fail("data_window.files", "must be a list of {path, sha256, node_id?}")
        return cls(
            files=tuple(DataFile(path=f.get("path"), sha256=f.get("sha256"), node_id=f.get("node_id")) for f in files),
            game_count=value.get("game_count"),
            game_ids_digest=value.get("game_ids_digest"),
        )


@dataclass(frozen=True)
class ModelRecord:
    model_id: str
    board_type: str
    kind: str
    parent: str | None
    created_at: float
    data_window: DataWindow
    training_config: dict[str, Any] = field(hash=False)
    metrics: dict[str, Any] = field(hash=False)
    code_version: str
    path: str
    sha256: str
    status: str = "candidate"

    def __post_init__(self) -> None:
        if not isinstance(self.model_id, str) or not _ID_RE.match(self.model_id):
            raise _fail("model_id", "must be 1-128 of [A-Za-z0-9._-]")
        if not isinstance(self.board_type, str) or not self.board_type.strip():
            raise _fail("board_type", "must be a non-empty string")
        if self.kind not in KINDS:
            raise _fail("kind", f"must be one of {', '.join(KINDS)}")
        if self.parent is not None:
            if not isinstance(self.parent, str) or not _ID_RE.match(self.parent):
                raise _fail("parent", "must be null or 1-128 of [A-Za-z0-9._-]")
            if self.parent == self.model_id:
                raise _fail("parent", "a model cannot be its own parent")
        if isinstance(self.created_at, bool) or not isinstance(self.created_at, (int, float)) \
                or not math.isfinite(self.created_at) or self.created_at < 0:
            raise _fail("created_at", "must be a finite non-negative unix time in seconds")
        object.__setattr__(self, "created_at", float(self.created_at))
        if not isinstance(self.data_window, DataWindow):
            raise _fail("data_window", "must be a DataWindow")
        object.__setattr__(self, "training_config", _json_object("training_config", self.training_config))
        object.__setattr__(self, "metrics", _json_object("metrics", self.metrics))
        if not isinstance(self.code_version, str) or not self.code_version.strip():
            raise _fail("code_version", "must be a non-empty string")
        _relative_path("path", self.path)
        _sha256("sha256", self.sha256)
        if self.status not in STATUSES:
            raise _fail("status", f"must be one of {', '.join(STATUSES)}")

    def transition(self, status: str) -> ModelRecord:
        """The record with a new status; the same status again is a no-op, so retries are safe."""
        if status not in STATUSES:
            raise _fail("status", f"must be one of {', '.join(STATUSES)}")
        if status == self.status:
            return self
        if status not in TRANSITIONS[self.status]:
            allowed = ", ".join(sorted(TRANSITIONS[self.status])) or "nothing"
            raise InvalidTransition(
                f"model {self.model_id} cannot go from {self.status} to {status}; allowed: {allowed}",
                model_id=self.model_id,
            )
        return replace(self, status=status)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form, as the API shows a model."""
        return {
            "model_id": self.model_id,
            "board_type": self.board_type,
            "kind": self.kind,
            "parent": self.parent,
            "created_at": self.created_at,
            "data_window": self.data_window.to_dict(),
            "training_config": json.loads(json.dumps(self.training_config)),
            "metrics": json.loads(json.dumps(self.metrics)),
            "code_version": self.code_version,
            "path": self.path,
            "sha256": self.sha256,
            "status": self.status,
        }

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> ModelRecord:
        missing = [name for name in ROW_COLUMNS if name not in value and name != "status"]
        if missing:
            raise _fail(missing[0], "is required")
        return cls(
            model_id=value["model_id"],
            board_type=value["board_type"],
            kind=value["kind"],
            parent=value["parent"],
            created_at=value["created_at"],
            data_window=DataWindow.from_dict(value["data_window"]),
            training_config=value["training_config"],
            metrics=value["metrics"],
            code_version=value["code_version"],
            path=value["path"],
            sha256=value["sha256"],
            status=value.get("status", "candidate"),
        )

    def to_row(self) -> dict[str, Any]:
        """One SQLite row: scalars as they are, nested values as JSON text (sorted keys, stable)."""
        plain = self.to_dict()
        for name in ("data_window", "training_config", "metrics"):
            plain[name] = json.dumps(plain[name], sort_keys=True, separators=(",", ":"))
        return plain

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> ModelRecord:
        """Accepts a dict or an `sqlite3.Row`; a corrupt JSON column is reported by its name."""
        keys = row.keys()
        value = {name: row[name] for name in ROW_COLUMNS if name in keys}
        for name in ("data_window", "training_config", "metrics"):
            if name in value:
                try:
                    value[name] = json.loads(value[name])
                except (TypeError, ValueError):
                    raise _fail(name, "column is not valid JSON") from None
        return cls.from_dict(value)
