"""Cleanup stays inside the data directory; path resolution refuses escapes."""
import os

import pytest

from orchestrator.errors import BadRequest
from orchestrator.sync.cleanup import CleanupPolicy, cleanup
from orchestrator.sync.paths import resolve_inside

NOW = 1_000_000.0


def _file(path, size, age_s):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    os.utime(path, (NOW - age_s, NOW - age_s))
    return path


def test_cleanup_removes_only_what_expired(tmp_path):
    root = tmp_path / "data"
    old_tmp = _file(root / "selfplay" / "a.jsonl.tmp", 10, 7200)
    new_tmp = _file(root / "selfplay" / "b.jsonl.tmp", 10, 60)
    partial = _file(root / "sync" / "c.partial", 20, 90000)
    old_games = _file(root / "selfplay" / "g.jsonl", 30, 3 * 86400)
    db = _file(root / "state" / "node.db.tmp", 5, 10**6)
    outside = _file(tmp_path / "outside.tmp", 5, 10**6)
    os.symlink(outside, root / "link.tmp")
    policy = CleanupPolicy(temp_max_age_s=3600, partial_max_age_s=86400, retention_days=2)
    dry = cleanup(root, policy, NOW, dry_run=True)
    assert dry.files == ["selfplay/a.jsonl.tmp", "selfplay/g.jsonl", "sync/c.partial"] and dry.bytes_freed == 60
    assert old_tmp.exists(), "dry run deletes nothing"
    real = cleanup(root, policy, NOW, dry_run=False)
    assert real.files == dry.files
    assert not old_tmp.exists() and not partial.exists() and not old_games.exists()
    assert new_tmp.exists() and db.exists() and outside.exists()


def test_retention_off_keeps_data(tmp_path):
    _file(tmp_path / "selfplay" / "g.jsonl", 30, 300 * 86400)
    assert cleanup(tmp_path, CleanupPolicy(3600, 86400, None), NOW, dry_run=False).files == []


@pytest.mark.parametrize("bad", ["/etc/passwd", "../x", "a/../../x", "", "a\x00b"])
def test_resolve_inside_refuses_escapes(tmp_path, bad):
    with pytest.raises(BadRequest):
        resolve_inside(tmp_path, bad)


def test_resolve_inside_refuses_symlink_escape(tmp_path):
    (tmp_path / "root").mkdir()
    os.symlink(tmp_path, tmp_path / "root" / "up")
    with pytest.raises(BadRequest):
        resolve_inside(tmp_path / "root", "up/secret")
    assert resolve_inside(tmp_path / "root", "a/b.txt") == (tmp_path / "root" / "a" / "b.txt").resolve()
