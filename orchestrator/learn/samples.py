"""Training samples that need not fit in memory: a column store written once, read a block at a time.

`SampleWriter` appends rows (one per position) to a fixed set of columns, in memory or, given a
directory, in memory-mapped `.npy` files there, so a window of millions of games is replayed
straight to disk and never held whole. `BlockLoader` serves minibatches from those columns while
holding at most `max_samples_in_memory` rows at once (on the training device): a dataset that fits
is loaded once and each epoch is one permutation, as fast as a loop over device tensors; a larger
one is read a block at a time, in a fresh random order of chunks every epoch, and shuffled within
the block.

What survives a failure: nothing here needs to. The cache files are scratch space of one training
attempt; the job removes its directory before it starts and when it ends, and a crash in between
leaves files the next attempt of the same job removes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

CHUNKS_PER_BLOCK = 8  # a block mixes this many random chunks of the data, so a batch spans many games


@dataclass(frozen=True)
class Column:
    name: str
    shape: tuple[int, ...]  # of one row


class SampleWriter:
    """Rows appended to `columns`, at most `capacity` of them; memory-mapped files under
    `directory` when one is given (it must not exist yet, or be empty), else plain arrays."""

    def __init__(self, columns: Sequence[Column], capacity: int, directory: Path | None = None) -> None:
        self.capacity = max(0, int(capacity))
        self.rows = 0
        if directory is None:
            self.arrays = tuple(np.empty((self.capacity, *c.shape), dtype=np.float32) for c in columns)
        else:
            directory.mkdir(parents=True, exist_ok=True)
            # open_memmap cannot make a zero-length file; one spare row costs nothing.
            self.arrays = tuple(np.lib.format.open_memmap(directory / f"{c.name}.npy", mode="w+", dtype=np.float32,
                                                          shape=(max(1, self.capacity), *c.shape))
                                for c in columns)

    def append(self, *blocks: np.ndarray) -> None:
        """Add the same number of rows to every column."""
        count = len(blocks[0])
        if self.rows + count > self.capacity:
            raise ValueError(f"capacity: {self.rows + count} rows do not fit the {self.capacity} reserved")
        for array, block in zip(self.arrays, blocks):
            array[self.rows:self.rows + count] = block
        self.rows += count

    def finish(self) -> tuple[np.ndarray, ...]:
        """The written rows of each column (views: memory-mapped columns stay on disk)."""
        for array in self.arrays:
            if isinstance(array, np.memmap):
                array.flush()
        return tuple(array[:self.rows] for array in self.arrays)


class BlockLoader:
    """Endless minibatches (tuples of device tensors, one per column) with a bound on resident rows.

    `peak_resident` is the most rows this loader ever held at once, for callers and tests that
    check the bound. Each epoch sees every row at most once; rows left over at the end of a block
    (fewer than a batch) sit out that epoch, as the last partial batch of an epoch always has."""

    def __init__(self, columns: Sequence[np.ndarray], batch_size: int, max_samples_in_memory: int,
                 device: str | torch.device, seed: int) -> None:
        self.columns = tuple(columns)
        self.samples = int(len(self.columns[0]))
        if self.samples == 0:
            raise ValueError("dataset: no samples to train on")
        self.batch = min(batch_size, self.samples)
        if max_samples_in_memory < self.batch:
            raise ValueError(f"max_samples_in_memory: {max_samples_in_memory} is below the batch of {self.batch}")
        self.cap = max_samples_in_memory
        self.device = device
        self.generator = torch.Generator().manual_seed(seed)
        self.peak_resident = 0
        # Chunks of whole batches, so that only the data's last, partial chunk leaves rows out of an epoch.
        self.chunk = max(1, self.cap // CHUNKS_PER_BLOCK // self.batch) * self.batch

    @property
    def streaming(self) -> bool:
        return self.samples > self.cap

    def _load(self, ranges: Sequence[tuple[int, int]]) -> tuple[torch.Tensor, ...]:
        rows = sum(stop - start for start, stop in ranges)
        self.peak_resident = max(self.peak_resident, rows)
        return tuple(torch.from_numpy(np.concatenate([np.asarray(c[a:b]) for a, b in ranges])).to(self.device)
                     for c in self.columns)

    def _serve(self, block: tuple[torch.Tensor, ...]) -> Iterator[tuple[torch.Tensor, ...]]:
        rows = int(block[0].shape[0])
        order = torch.randperm(rows, generator=self.generator).to(self.device)
        for start in range(0, rows - self.batch + 1, self.batch):
            index = order[start:start + self.batch]
            yield tuple(t.index_select(0, index) for t in block)

    def batches(self) -> Iterator[tuple[torch.Tensor, ...]]:
        if not self.streaming:
            block = self._load([(0, self.samples)])
            while True:
                yield from self._serve(block)
        chunks = math.ceil(self.samples / self.chunk)
        per_block = max(1, self.cap // self.chunk)
        while True:
            order = torch.randperm(chunks, generator=self.generator).tolist()
            for first in range(0, chunks, per_block):
                picked = sorted(order[first:first + per_block])  # sorted: sequential reads from the files
                block = self._load([(c * self.chunk, min((c + 1) * self.chunk, self.samples)) for c in picked])
                yield from self._serve(block)
                del block  # before the next block is read, so two are never held at once
