"""Transfers land whole and verified: resume after an interruption, retry a corrupt copy clean, then report."""
import hashlib
import os

import pytest

from orchestrator.errors import BadRequest
from orchestrator.sync.transfer import (InsufficientStorage, Interrupted, Opened, RangeNotSatisfiable,
                                        TransferFailed, check_disk, parse_range, partial_path, transfer_file)

DATA = bytes(range(256)) * 4096  # 1 MiB
SHA = hashlib.sha256(DATA).hexdigest()
PATH = "selfplay/b/j/g.jsonl"


class Source:
    """Serves DATA from any offset; can cut the stream after `cut_at` bytes or corrupt a byte."""

    def __init__(self, cut_at=None, corrupt_times=0, honour_range=True, chunk=64 * 1024):
        self.cut_at, self.corrupt_times, self.honour_range, self.chunk = cut_at, corrupt_times, honour_range, chunk
        self.offsets = []

    def __call__(self, path, offset):
        assert path == PATH
        self.offsets.append(offset)
        start = offset if self.honour_range else 0
        body = bytearray(DATA[start:])
        if self.corrupt_times:
            self.corrupt_times -= 1
            body[len(body) // 2] ^= 0xFF
        cut, self.cut_at = self.cut_at, None

        def chunks():
            sent = 0
            for i in range(0, len(body), self.chunk):
                piece = bytes(body[i:i + self.chunk])
                if cut is not None and start + sent + len(piece) > cut:
                    yield piece[:cut - start - sent]
                    raise Interrupted("connection reset")
                sent += len(piece)
                yield piece
        return Opened(start, chunks(), lambda: None)


def test_plain_transfer_is_verified_and_renamed(tmp_path):
    result = transfer_file(tmp_path, PATH, SHA, len(DATA), Source())
    assert (tmp_path / PATH).read_bytes() == DATA
    assert result.bytes_fetched == len(DATA) and result.resumed_from == 0
    assert not partial_path(tmp_path / PATH, SHA).exists()


def test_interrupted_stream_resumes_from_the_partial(tmp_path):
    source = Source(cut_at=300_000)
    result = transfer_file(tmp_path, PATH, SHA, len(DATA), source)
    assert source.offsets == [0, 300_000]
    assert result.interruptions == 1 and result.bytes_fetched == len(DATA)
    assert (tmp_path / PATH).read_bytes() == DATA


def test_a_partial_left_by_a_dead_transfer_is_resumed(tmp_path):
    dest = tmp_path / PATH
    dest.parent.mkdir(parents=True)
    partial_path(dest, SHA).write_bytes(DATA[:400_000])
    source = Source()
    result = transfer_file(tmp_path, PATH, SHA, len(DATA), source)
    assert source.offsets == [400_000] and result.resumed_from == 400_000
    assert result.bytes_fetched == len(DATA) - 400_000 and dest.read_bytes() == DATA


def test_source_ignoring_range_starts_over(tmp_path):
    dest = tmp_path / PATH
    dest.parent.mkdir(parents=True)
    partial_path(dest, SHA).write_bytes(DATA[:1000])
    transfer_file(tmp_path, PATH, SHA, len(DATA), Source(honour_range=False))
    assert dest.read_bytes() == DATA


def test_corrupt_copy_is_refetched_clean(tmp_path):
    source = Source(corrupt_times=1)
    result = transfer_file(tmp_path, PATH, SHA, len(DATA), source)
    assert result.clean_retries == 1 and source.offsets == [0, 0]
    assert (tmp_path / PATH).read_bytes() == DATA


def test_persistent_corruption_is_reported_and_never_installed(tmp_path):
    (tmp_path / PATH).parent.mkdir(parents=True)
    (tmp_path / PATH).write_bytes(b"old version")
    with pytest.raises(TransferFailed, match="sha256 mismatch"):
        transfer_file(tmp_path, PATH, SHA, len(DATA), Source(corrupt_times=5))
    assert (tmp_path / PATH).read_bytes() == b"old version"
    assert not partial_path(tmp_path / PATH, SHA).exists()


def test_endless_interruptions_are_reported_keeping_the_partial(tmp_path):
    def always_cut(path, offset):
        def chunks():
            yield DATA[offset:offset + 1000]
            raise Interrupted("reset")
        return Opened(offset, chunks(), lambda: None)
    with pytest.raises(TransferFailed, match="interrupted"):
        transfer_file(tmp_path, PATH, SHA, len(DATA), always_cut)
    assert partial_path(tmp_path / PATH, SHA).stat().st_size == 4000  # resumable later


def test_a_file_already_in_place_is_not_fetched(tmp_path):
    (tmp_path / PATH).parent.mkdir(parents=True)
    (tmp_path / PATH).write_bytes(DATA)
    source = Source()
    assert transfer_file(tmp_path, PATH, SHA, len(DATA), source).already_present and source.offsets == []


@pytest.mark.parametrize("bad", ["../x", "/etc/passwd", "a\x00b", "selfplay/../../x"])
def test_destination_never_leaves_the_data_dir(tmp_path, bad):
    with pytest.raises(BadRequest):
        transfer_file(tmp_path, bad, SHA, len(DATA), Source())


def test_disk_limit_refuses_with_507(tmp_path):
    check_disk(tmp_path, 0, 100.0)
    with pytest.raises(InsufficientStorage) as refused:
        check_disk(tmp_path, 2**62, 100.0)
    assert refused.value.code == 507


def test_parse_range():
    assert parse_range(None, 10) is None
    assert parse_range("bytes=0-", 10) == (0, 10)
    assert parse_range("bytes=3-5", 10) == (3, 6)
    assert parse_range("bytes=-4", 10) == (6, 10)
    assert parse_range("bytes=8-100", 10) == (8, 10)
    for bad in ("bytes=10-", "bytes=5-2", "items=0-1", "bytes=0-1,3-4", "bytes=x-", "bytes=-0", "bytes=5"):
        with pytest.raises(RangeNotSatisfiable):
            parse_range(bad, 10)
