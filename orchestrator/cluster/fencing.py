"""Cluster-wide state with epoch fencing: the heart of the ClusterStore actor, over SQLite.

Every leadership term registers its epoch here before it writes anything; epochs are strictly
increasing, and a write is accepted only from the holder of the highest epoch. A leader that
was paused past its lease and resumes still carries its old epoch, so its writes are refused
(409) once a successor has begun a term: this is where fencing bites.

What survives a failure: everything, in one SQLite file (WAL) on the head node's disk, written
in a transaction per call. A restarted store finds every record and the epoch history as the
last committed write left them.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from orchestrator.errors import BadRequest, Conflict

SCHEMA = """
CREATE TABLE IF NOT EXISTS epochs (epoch INTEGER PRIMARY KEY, node_id TEXT NOT NULL, started_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS records (kind TEXT NOT NULL, key TEXT NOT NULL, doc TEXT NOT NULL,
    epoch INTEGER NOT NULL, writer TEXT NOT NULL, updated_at REAL NOT NULL, PRIMARY KEY (kind, key));
CREATE TABLE IF NOT EXISTS settings (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class ClusterDB:
    def __init__(self, path: Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")  # cluster history is worth an fsync per commit
            self._db.executescript(SCHEMA)

    # --- epochs --------------------------------------------------------------------------
    def highest_epoch(self) -> tuple[int, str | None]:
        with self._lock:
            row = self._db.execute("SELECT epoch, node_id FROM epochs ORDER BY epoch DESC LIMIT 1").fetchone()
        return (row[0], row[1]) if row else (0, None)

    def begin_term(self, node_id: str, epoch: int) -> dict[str, Any]:
        """Record a new term; an epoch not above every earlier one is refused. Idempotent for a retry."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute("SELECT epoch, node_id FROM epochs ORDER BY epoch DESC LIMIT 1").fetchone()
                if row and (row[0], row[1]) == (epoch, node_id):
                    self._db.execute("COMMIT")
                    return {"epoch": epoch, "node_id": node_id, "created": False}
                if row and epoch <= row[0]:
                    raise Conflict(f"stale epoch {epoch}: epoch {row[0]} belongs to {row[1]}",
                                   epoch=row[0], leader_id=row[1])
                self._db.execute("INSERT INTO epochs VALUES (?, ?, ?)", (epoch, node_id, time.time()))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return {"epoch": epoch, "node_id": node_id, "created": True}

    def epoch_history(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT epoch, node_id, started_at FROM epochs ORDER BY epoch").fetchall()
        return [{"epoch": e, "node_id": n, "started_at": t} for e, n, t in rows]

    # --- fenced records ------------------------------------------------------------------
    def write(self, kind: str, key: str, doc: dict[str, Any], *, epoch: int, writer: str) -> dict[str, Any]:
        if not kind or not key:
            raise BadRequest("kind and key are required", field="key")
        encoded = json.dumps(doc, sort_keys=True)
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute("SELECT epoch, node_id FROM epochs ORDER BY epoch DESC LIMIT 1").fetchone()
                if row is None or (epoch, writer) != (row[0], row[1]):
                    held = f"epoch {row[0]} held by {row[1]}" if row else "no term begun"
                    raise Conflict(f"stale epoch {epoch} from {writer}: {held}",
                                   epoch=row[0] if row else 0, leader_id=row[1] if row else None)
                self._db.execute("INSERT OR REPLACE INTO records VALUES (?, ?, ?, ?, ?, ?)",
                                 (kind, key, encoded, epoch, writer, time.time()))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return {"kind": kind, "key": key, "epoch": epoch}

    def read(self, kind: str, key: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT doc FROM records WHERE kind = ? AND key = ?", (kind, key)).fetchone()
        return json.loads(row[0]) if row else None

    def list(self, kind: str) -> dict[str, dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT key, doc FROM records WHERE kind = ? ORDER BY key", (kind,)).fetchall()
        return {key: json.loads(doc) for key, doc in rows}

    # --- one-time settings (first writer wins) ---------------------------------------------
    def setting_once(self, name: str, value: Any) -> Any:
        """Store `value` under `name` unless one is stored already; returns what is stored."""
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO settings VALUES (?, ?)", (name, json.dumps(value)))
            row = self._db.execute("SELECT value FROM settings WHERE name = ?", (name,)).fetchone()
        return json.loads(row[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
