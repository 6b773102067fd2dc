"""Node-local durable state: one SQLite file (WAL) per node under its data directory.

Each actor that owns a kind of state keeps one table here and rewrites its rows on every
change, so an actor restarted by Ray reloads exactly what it knew. Rows are JSON documents
keyed by id: the schema of a record belongs to its domain module, not to the database.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Iterable

STATE_DIR = "state"
NODE_DB = "node.db"
TABLES = ("peers", "jobs", "kv")
# Another process may hold the file while it recovers its WAL (an actor restarted while its
# predecessor's connection closes); SQLite answers that with SQLITE_BUSY without calling the
# busy handler, so opening waits for it here.
OPEN_TIMEOUT_S = 30.0
OPEN_RETRY_S = 0.1


def connect_sqlite(path: Path, synchronous: str, timeout_s: float = OPEN_TIMEOUT_S) -> sqlite3.Connection:
    """A connection in WAL mode, shared by one owner's threads (its lock keeps transactions whole)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=timeout_s)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                db.close()
                raise
            time.sleep(OPEN_RETRY_S)
    db.execute(f"PRAGMA synchronous={synchronous}")
    return db


def node_db_path(data_dir: Path) -> Path:
    return Path(data_dir) / STATE_DIR / NODE_DB


class NodeStore:
    def __init__(self, path: Path) -> None:
        self._db = connect_sqlite(path, synchronous="NORMAL")
        self._lock = threading.Lock()
        with self._lock:
            for table in TABLES:
                self._db.execute(f"CREATE TABLE IF NOT EXISTS {table} (id TEXT PRIMARY KEY, doc TEXT NOT NULL)")

    def put(self, table: str, key: str, doc: dict[str, Any]) -> None:
        self.put_many(table, [(key, doc)])

    def put_many(self, table: str, rows: Iterable[tuple[str, dict[str, Any]]]) -> None:
        encoded = [(key, json.dumps(doc, sort_keys=True)) for key, doc in rows]
        if not encoded:
            return
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany(f"INSERT OR REPLACE INTO {_checked(table)} (id, doc) VALUES (?, ?)", encoded)
            self._db.execute("COMMIT")

    def get(self, table: str, key: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute(f"SELECT doc FROM {_checked(table)} WHERE id = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def load(self, table: str) -> dict[str, dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(f"SELECT id, doc FROM {_checked(table)}").fetchall()
        return {key: json.loads(doc) for key, doc in rows}

    def delete(self, table: str, keys: Iterable[str]) -> None:
        keys = [(key,) for key in keys]
        if not keys:
            return
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany(f"DELETE FROM {_checked(table)} WHERE id = ?", keys)
            self._db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _checked(table: str) -> str:
    if table not in TABLES:
        raise ValueError(f"unknown table {table!r}")
    return table
