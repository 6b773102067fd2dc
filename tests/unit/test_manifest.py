"""Manifests list only synced files, hash each once per (path, size, mtime), and select by pattern."""
import hashlib
import os

import pytest

from orchestrator.errors import BadRequest
from orchestrator.sync.manifest import cache_of, check_pattern, entry_for, matches, scan, select


def _write(path, data: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_scan_lists_synced_files_with_digest_kind_and_board(tmp_path):
    _write(tmp_path / "selfplay" / "square8" / "job1" / "games-0-0.jsonl", b"game\n")
    _write(tmp_path / "models" / "m1.pt", b"weights")
    _write(tmp_path / "state" / "node.db", b"private")
    _write(tmp_path / "cluster" / "cluster.db", b"private")
    _write(tmp_path / "selfplay" / "square8" / "job1" / ".games.jsonl.abc.tmp", b"half")
    _write(tmp_path / "models" / ".m2.pt.0123.partial", b"half")
    entries, stats = scan(tmp_path, {})
    assert sorted(entries) == ["models/m1.pt", "selfplay/square8/job1/games-0-0.jsonl"]
    game = entries["selfplay/square8/job1/games-0-0.jsonl"]
    assert (game.kind, game.board_type, game.size) == ("selfplay", "square8", 5)
    assert game.sha256 == hashlib.sha256(b"game\n").hexdigest()
    assert (entries["models/m1.pt"].kind, entries["models/m1.pt"].board_type) == ("model", None)
    assert (stats.files, stats.hashed) == (2, 2)


def test_refresh_rehashes_only_changed_files(tmp_path):
    a = _write(tmp_path / "selfplay" / "b" / "j" / "a.jsonl", b"one")
    _write(tmp_path / "selfplay" / "b" / "j" / "b.jsonl", b"two")
    entries, _ = scan(tmp_path, {})
    again, stats = scan(tmp_path, cache_of(entries))
    assert stats.hashed == 0 and again == entries
    a.write_bytes(b"changed")
    os.utime(a, ns=(a.stat().st_atime_ns, a.stat().st_mtime_ns + 10**9))
    third, stats = scan(tmp_path, cache_of(again))
    assert stats.hashed == 1 and stats.bytes_hashed == len(b"changed")
    assert third["selfplay/b/j/a.jsonl"].sha256 == hashlib.sha256(b"changed").hexdigest()


def test_a_stale_cache_entry_is_never_trusted(tmp_path):
    a = _write(tmp_path / "models" / "m.pt", b"new bytes")
    wrong = {"models/m.pt": {"size": 3, "mtime_ns": a.stat().st_mtime_ns, "sha256": "0" * 64}}
    entries, stats = scan(tmp_path, wrong)
    assert entries["models/m.pt"].sha256 == hashlib.sha256(b"new bytes").hexdigest() and stats.hashed == 1


def test_symlinks_are_never_followed(tmp_path):
    outside = _write(tmp_path.parent / f"{tmp_path.name}-outside" / "secret.jsonl", b"secret")
    (tmp_path / "selfplay" / "b").mkdir(parents=True)
    os.symlink(outside, tmp_path / "selfplay" / "b" / "link.jsonl")
    os.symlink(outside.parent, tmp_path / "selfplay" / "dirlink")
    entries, _ = scan(tmp_path, {})
    assert entries == {}
    assert entry_for(tmp_path, "selfplay/b/link.jsonl", None) is None


def test_patterns_match_per_segment():
    assert matches("selfplay/sq8/job/g.jsonl", "selfplay/*/*/*.jsonl")
    assert not matches("selfplay/sq8/job/g.jsonl", "selfplay/*.jsonl")
    assert matches("selfplay/sq8/job/g.jsonl", "selfplay/**/*.jsonl")
    assert matches("models/m.pt", "models/*")
    assert not matches("models/sub/m.pt", "models/*")


@pytest.mark.parametrize("pattern", ["../*", "/etc/*", "selfplay/../../x", "", "a\x00b", "./x", "a//b"])
def test_patterns_that_escape_are_refused(pattern):
    with pytest.raises(BadRequest) as raised:
        check_pattern(pattern)
    assert raised.value.extra["field"] == "patterns"


def test_select_by_pattern_and_time(tmp_path):
    old = _write(tmp_path / "selfplay" / "b" / "j" / "old.jsonl", b"1")
    _write(tmp_path / "selfplay" / "b" / "j" / "new.jsonl", b"2")
    _write(tmp_path / "models" / "m.pt", b"3")
    os.utime(old, (1000, 1000))
    entries, _ = scan(tmp_path, {})
    chosen = select(entries.values(), ["selfplay/*/*/*.jsonl"], since_timestamp=2000)
    assert [e.path for e in chosen] == ["selfplay/b/j/new.jsonl"]
    assert len(select(entries.values(), ["selfplay/**", "models/*"], None)) == 3
