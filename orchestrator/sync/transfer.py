"""Verified file transfer: streamed to a partial file, resumed by offset, checked by sha256, renamed.

A half-copied file is never visible under its real name: bytes go to
`.<name>.<sha256[:16]>.partial` next to the destination, and only a whole file whose sha256
equals the wanted one is renamed into place (fsync of file and directory first). What survives
a failure: the partial file. An interrupted stream resumes from its length on the next attempt
(an HTTP Range request in production); the partial is named by the wanted digest, so bytes of
one version are never resumed into another. A whole file with the wrong digest is deleted and
fetched once more from a clean file; a second mismatch is reported, never installed.

The source is a seam (`Fetch`): the caller supplies the transport (HTTP in production); tests supply anything.
"""
from __future__ import annotations

import hashlib
import os
import queue
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from orchestrator.errors import ApiError
from orchestrator.sync.paths import resolve_inside

PARTIAL_SUFFIX = ".partial"
RESUME_ATTEMPTS = 4  # interrupted streams tolerated per file before it is reported
MISMATCH_RETRIES = 1  # whole-file digest mismatches retried from a clean file before it is reported
PIPELINE_DEPTH = 8  # chunks in flight between the receiving thread and the hashing/writing one


class InsufficientStorage(ApiError):
    code = 507


class TransferFailed(ApiError):
    code = 502


class Interrupted(Exception):
    """The source stopped mid-stream (connection lost, short read); the partial file is kept."""


class RangeNotSatisfiable(ValueError):
    pass


@dataclass(frozen=True)
class Opened:
    offset: int  # where the chunks start: the asked offset, or 0 when the source ignored the Range
    chunks: Iterator[bytes]
    close: Callable[[], None]


Fetch = Callable[[str, int], Opened]  # (relative path, offset) -> the stream from that offset


@dataclass(frozen=True)
class TransferResult:
    path: str
    sha256: str
    size: int
    bytes_fetched: int  # bytes that crossed the wire (a resumed file fetches only its tail)
    resumed_from: int  # length of the partial file the first attempt resumed from
    interruptions: int
    clean_retries: int
    already_present: bool = False


def partial_path(dest: Path, sha256: str) -> Path:
    return dest.parent / f".{dest.name}.{sha256[:16]}{PARTIAL_SUFFIX}"


def check_disk(root: Path, incoming_bytes: int, limit_percent: float) -> None:
    """Refuse (507) bytes that would fill the data directory's disk past `limit_percent`."""
    usage = shutil.disk_usage(root)
    after = (usage.used + incoming_bytes) / usage.total * 100
    if after > limit_percent:
        raise InsufficientStorage(f"{incoming_bytes} more bytes would fill the disk to {after:.1f}%, past the "
                                  f"limit of {limit_percent}%", incoming_bytes=incoming_bytes,
                                  limit_percent=limit_percent, free_bytes=usage.free)


def _hash_prefix(path: Path, length: int) -> "hashlib._Hash":
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        remaining = length
        while remaining and (chunk := handle.read(min(1 << 20, remaining))):
            digest.update(chunk)
            remaining -= len(chunk)
    return digest


def _same_file(dest: Path, sha256: str, size: int) -> bool:
    if not dest.is_file() or dest.stat().st_size != size:
        return False
    return _hash_prefix(dest, size).hexdigest() == sha256


class _Sink:
    """Hashing and writing on a second thread, so they overlap with receiving (hashlib and file
    writes release the GIL on large buffers)."""

    def __init__(self, handle, digest) -> None:
        self._handle, self._digest = handle, digest
        self._queue: queue.Queue = queue.Queue(PIPELINE_DEPTH)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while (chunk := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._digest.update(chunk)
                    self._handle.write(chunk)
                except BaseException as exc:  # surfaced to the receiving thread in close()
                    self._error = exc

    def put(self, chunk: bytes) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(chunk)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error


def _receive(partial: Path, have: int, opened: Opened, size: int, on_bytes: Callable[[int], None]) -> tuple:
    """Append the stream to the partial file; returns (digest, bytes received)."""
    if opened.offset != have:  # the source ignored our Range: start over from its offset (0)
        have = opened.offset
        with open(partial, "r+b") as handle:
            handle.truncate(have)
    digest = _hash_prefix(partial, have)
    received = 0
    with open(partial, "r+b") as handle:
        handle.seek(have)
        sink = _Sink(handle, digest)
        try:
            for chunk in opened.chunks:
                if have + received + len(chunk) > size:
                    raise Interrupted(f"source sent more than the expected {size} bytes")
                sink.put(chunk)
                received += len(chunk)
                on_bytes(len(chunk))
        finally:
            sink.close()
            handle.flush()
            os.fsync(handle.fileno())
    if have + received < size:
        raise Interrupted(f"stream ended at {have + received} of {size} bytes")
    return digest, received


def transfer_file(root: Path, path: str, sha256: str, size: int, fetch: Fetch, *,
                  on_bytes: Callable[[int], None] = lambda n: None) -> TransferResult:
    """Make `<root>/<path>` hold exactly the bytes whose digest is `sha256` (see module docstring)."""
    dest = resolve_inside(root, path)
    if _same_file(dest, sha256, size):
        return TransferResult(path, sha256, size, 0, 0, 0, 0, already_present=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_path(dest, sha256)
    if not partial.exists() or partial.stat().st_size > size:
        partial.write_bytes(b"")
    resumed_from = partial.stat().st_size
    fetched = interruptions = clean_retries = 0
    while True:
        have = partial.stat().st_size
        try:
            opened = fetch(path, have)
        except Interrupted as exc:
            interruptions += 1
            if interruptions >= RESUME_ATTEMPTS:
                raise TransferFailed(f"{path}: source unreachable after {interruptions} attempts: {exc}",
                                     path=path) from None
            continue

        def count(n: int) -> None:
            nonlocal fetched
            fetched += n
            on_bytes(n)

        try:
            digest, _ = _receive(partial, have, opened, size, count)
        except Interrupted as exc:
            interruptions += 1
            if interruptions >= RESUME_ATTEMPTS:
                raise TransferFailed(f"{path}: interrupted {interruptions} times, last at "
                                     f"{partial.stat().st_size} of {size} bytes: {exc}", path=path) from None
            continue
        finally:
            opened.close()
        if digest.hexdigest() == sha256:
            os.replace(partial, dest)
            _fsync_dir(dest.parent)
            return TransferResult(path, sha256, size, fetched, resumed_from, interruptions, clean_retries)
        partial.write_bytes(b"")  # the bytes are wrong somewhere: keep none of them
        clean_retries += 1
        if clean_retries > MISMATCH_RETRIES:
            partial.unlink(missing_ok=True)
            raise TransferFailed(f"{path}: sha256 mismatch after {clean_retries} clean attempts; expected "
                                 f"{sha256}, got {digest.hexdigest()}", path=path, expected_sha256=sha256)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- the serving side --------------------------------------------------------------------------

def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """One `bytes=` range as (start, end_exclusive), None without a header; RangeNotSatisfiable if
    it lies outside the file. Several ranges in one header are refused (nothing here asks for them)."""
    if not header:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip() != "bytes" or "," in spec:
        raise RangeNotSatisfiable(f"unsupported Range {header!r}")
    first, dash, last = spec.strip().partition("-")
    try:
        if not dash:
            raise ValueError
        if first == "":  # suffix: the last N bytes
            length = int(last)
            if length <= 0:
                raise ValueError
            return max(size - length, 0), size
        start = int(first)
        end = int(last) + 1 if last else size
    except ValueError:
        raise RangeNotSatisfiable(f"malformed Range {header!r}") from None
    if start < 0 or start >= size or end <= start:
        raise RangeNotSatisfiable(f"Range {header!r} outside a file of {size} bytes")
    return start, min(end, size)
