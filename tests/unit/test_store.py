"""Opening a node's or the cluster's SQLite file waits out another process's lock instead of failing."""
import sqlite3
import threading

import pytest

from orchestrator.store import NodeStore, connect_sqlite


def _lock_exclusively(path):
    holder = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    holder.execute("CREATE TABLE IF NOT EXISTS t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    return holder


def test_a_store_opens_once_a_lock_held_elsewhere_is_released(tmp_path):
    path = tmp_path / "state" / "node.db"
    path.parent.mkdir()
    holder = _lock_exclusively(path)
    threading.Timer(0.5, holder.rollback).start()
    store = NodeStore(path)
    store.put("kv", "k", {"v": 1})
    assert store.get("kv", "k") == {"v": 1}
    assert sqlite3.connect(str(path)).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_lock_that_outlasts_the_timeout_is_an_error_not_a_hang(tmp_path):
    path = tmp_path / "x.db"
    holder = _lock_exclusively(path)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        connect_sqlite(path, synchronous="NORMAL", timeout_s=0.3)
    holder.rollback()
