"""Cluster-wide state with epoch fencing: the heart of the ClusterStore actor, over SQLite.

Every leadership term registers its epoch here before it writes anything; epochs are strictly
increasing, and a write is accepted only from the holder of the highest epoch. A leader that
was paused past its lease and resumes still carries its old epoch, so its writes are refused
(409) once a successor has begun a term: this is where fencing bites.

The voter set of a cluster formed without configured voters lives here too (`voters`): recorded
once by the first node to finish forming, read back by every node, and changed only by the holder
of the newest term (which steps down first). Each change bumps its version, and a term begins only
under the version the store holds, so a node that has not read a change yet can win the old set's
majority but never act on it. Epochs are SQLite INTEGERs: anything outside 1..2**63-1 is a 400.

What survives a failure: everything, in one SQLite file (WAL) on the head node's disk, written
in a transaction per call. A restarted store finds every record and the epoch history as the
last committed write left them.
"""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from orchestrator.cluster.lease import MAX_EPOCH
from orchestrator.errors import BadRequest, Conflict
from orchestrator.store import connect_sqlite

VOTERS_SETTING = "voters"

SCHEMA = """
CREATE TABLE IF NOT EXISTS epochs (epoch INTEGER PRIMARY KEY, node_id TEXT NOT NULL, started_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS records (kind TEXT NOT NULL, key TEXT NOT NULL, doc TEXT NOT NULL,
    epoch INTEGER NOT NULL, writer TEXT NOT NULL, updated_at REAL NOT NULL, PRIMARY KEY (kind, key));
CREATE TABLE IF NOT EXISTS settings (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class ClusterDB:
    def __init__(self, path: Path) -> None:
        self._db = connect_sqlite(path, synchronous="FULL")  # cluster history is worth an fsync per commit
        self._lock = threading.Lock()
        with self._lock:
            self._db.executescript(SCHEMA)

    # --- epochs --------------------------------------------------------------------------
    def highest_epoch(self) -> tuple[int, str | None]:
        with self._lock:
            row = self._db.execute("SELECT epoch, node_id FROM epochs ORDER BY epoch DESC LIMIT 1").fetchone()
        return (row[0], row[1]) if row else (0, None)

    def begin_term(self, node_id: str, epoch: int, voters_version: int | None = None) -> dict[str, Any]:
        """Record a new term; an epoch not above every earlier one is refused, and so is one won under
        a voter set other than the recorded one (`voters_version`; None: voters are configured, not
        recorded). Idempotent for a retry."""
        _check_epoch(epoch)
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                voters = self._voters()
                if voters_version is not None and voters is not None and voters["version"] != voters_version:
                    raise Conflict(f"term won under voter set version {voters_version}; "
                                   f"the cluster's is version {voters['version']}", voters_version=voters["version"])
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

    def epoch_holder(self, epoch: int) -> str | None:
        """The node that registered `epoch`, if any: what a follower checks before it accepts a leader."""
        _check_epoch(epoch)
        with self._lock:
            row = self._db.execute("SELECT node_id FROM epochs WHERE epoch = ?", (epoch,)).fetchone()
        return row[0] if row else None

    def epoch_history(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT epoch, node_id, started_at FROM epochs ORDER BY epoch").fetchall()
        return [{"epoch": e, "node_id": n, "started_at": t} for e, n, t in rows]

    # --- fenced records ------------------------------------------------------------------
    def write(self, kind: str, key: str, doc: dict[str, Any], *, epoch: int, writer: str) -> dict[str, Any]:
        self._fenced_insert("INSERT OR REPLACE", kind, key, doc, epoch, writer)
        return {"kind": kind, "key": key, "epoch": epoch}

    def write_once(self, kind: str, key: str, doc: dict[str, Any], *, epoch: int, writer: str) -> dict[str, Any]:
        """Store `doc` unless a record is stored under (kind, key) already; that one is kept. Returns
        `created` and the stored doc, so concurrent writers of one key all learn the single winner."""
        created, stored = self._fenced_insert("INSERT OR IGNORE", kind, key, doc, epoch, writer)
        return {"kind": kind, "key": key, "epoch": epoch, "created": created, "doc": json.loads(stored)}

    def _fenced_insert(self, verb: str, kind: str, key: str, doc: dict[str, Any], epoch: int,
                       writer: str) -> tuple[bool, str]:
        """One transaction: the writer must hold the newest term; returns (row written, stored doc)."""
        if not kind or not key:
            raise BadRequest("kind and key are required", field="key")
        _check_epoch(epoch)
        encoded = json.dumps(doc, sort_keys=True)
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._check_holder(epoch, writer)
                written = self._db.execute(f"{verb} INTO records VALUES (?, ?, ?, ?, ?, ?)",
                                           (kind, key, encoded, epoch, writer, time.time())).rowcount == 1
                row = self._db.execute("SELECT doc FROM records WHERE kind = ? AND key = ?", (kind, key)).fetchone()
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return written, row[0]

    def read(self, kind: str, key: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT doc FROM records WHERE kind = ? AND key = ?", (kind, key)).fetchone()
        return json.loads(row[0]) if row else None

    def list(self, kind: str) -> dict[str, dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT key, doc FROM records WHERE kind = ? ORDER BY key", (kind,)).fetchall()
        return {key: json.loads(doc) for key, doc in rows}

    def _check_holder(self, epoch: int, writer: str) -> None:
        """Inside a transaction: refuse unless (epoch, writer) is the newest term."""
        row = self._db.execute("SELECT epoch, node_id FROM epochs ORDER BY epoch DESC LIMIT 1").fetchone()
        if row is None or (epoch, writer) != (row[0], row[1]):
            held = f"epoch {row[0]} held by {row[1]}" if row else "no term begun"
            raise Conflict(f"stale epoch {epoch} from {writer}: {held}",
                           epoch=row[0] if row else 0, leader_id=row[1] if row else None)

    # --- one-time settings (first writer wins) ---------------------------------------------
    def setting_once(self, name: str, value: Any) -> Any:
        """Store `value` under `name` unless one is stored already; returns what is stored.
        None is refused: stored, it would read back as "nothing recorded" forever after."""
        if value is None:
            raise BadRequest(f"{name}: a setting cannot be recorded as null", field=name)
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO settings VALUES (?, ?)", (name, json.dumps(value)))
            row = self._db.execute("SELECT value FROM settings WHERE name = ?", (name,)).fetchone()
        return json.loads(row[0])

    # --- the recorded voter set ------------------------------------------------------------
    def voters(self) -> dict[str, Any] | None:
        """`{"voters": [...], "version": n}` once the cluster formed; None before."""
        with self._lock:
            return self._voters()

    def _voters(self) -> dict[str, Any] | None:
        row = self._db.execute("SELECT value FROM settings WHERE name = ?", (VOTERS_SETTING,)).fetchone()
        return json.loads(row[0]) if row else None

    def form_voters(self, present: list[str]) -> dict[str, Any]:
        """Record the nodes present at formation as the voters, unless some node did first."""
        if not present or not all(isinstance(n, str) and n for n in present):
            raise BadRequest("voters: needs at least one node id", field="voters")
        return self.setting_once(VOTERS_SETTING, {"voters": sorted(set(present)), "version": 1})

    def change_voters(self, add: list[str], remove: list[str], *, epoch: int, writer: str) -> dict[str, Any]:
        """The newest term's holder changes the recorded set; a change that changes nothing is a
        no-op (so a retried request is one change). Refused (409) before the cluster formed."""
        _check_epoch(epoch)
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._check_holder(epoch, writer)
                current = self._voters()
                if current is None:
                    raise Conflict("the cluster has not recorded its voters yet")
                voters = sorted((set(current["voters"]) | set(add)) - set(remove))
                if not voters:
                    raise BadRequest("remove: would leave no voters", field="remove")
                if voters != current["voters"]:
                    current = {"voters": voters, "version": current["version"] + 1}
                    self._db.execute("UPDATE settings SET value = ? WHERE name = ?",
                                     (json.dumps(current), VOTERS_SETTING))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return current

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _check_epoch(epoch: Any) -> None:
    if isinstance(epoch, bool) or not isinstance(epoch, int) or not 1 <= epoch <= MAX_EPOCH:
        raise BadRequest(f"epoch: must be an integer between 1 and {MAX_EPOCH}", field="epoch")
