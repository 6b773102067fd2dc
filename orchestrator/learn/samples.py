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
from typing import Callable, Generator, Iterator, Sequence

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
    check the bound. Within an epoch no row is served twice; rows of a block that do not fill a
    last batch are carried into the next block, so only the epoch's final few (fewer than a batch)
    sit it out, as the last partial batch of an epoch always has."""

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
        self.chunk = max(1, self.cap // CHUNKS_PER_BLOCK)

    @property
    def streaming(self) -> bool:
        return self.samples > self.cap

    def _load(self, ranges: Sequence[tuple[int, int]], carried: np.ndarray) -> tuple[torch.Tensor, ...]:
        """The carried rows plus the row ranges, on the device (in `_index` order)."""
        self.peak_resident = max(self.peak_resident, len(carried) + sum(b - a for a, b in ranges))
        return tuple(torch.from_numpy(np.concatenate([np.asarray(c[carried]), *(np.asarray(c[a:b]) for a, b in ranges)]))
                     .to(self.device) for c in self.columns)

    @staticmethod
    def _index(ranges: Sequence[tuple[int, int]], carried: np.ndarray) -> np.ndarray:
        return np.concatenate([carried, *(np.arange(a, b) for a, b in ranges)])

    def _serve(self, index: np.ndarray, load: Callable[[], tuple[torch.Tensor, ...]],
               skip: list[int]) -> Generator[tuple[torch.Tensor, ...], None, np.ndarray]:
        """The block's whole batches in a random order, less the first `skip[0]` of them (counted
        down: a resumed run passes over the batches it already trained on, drawing the same random
        orders, and loads no block all of whose batches it passes over); returns the row numbers
        left over."""
        order = torch.randperm(len(index), generator=self.generator)
        full = len(index) - len(index) % self.batch
        passed = min(skip[0], full // self.batch)
        skip[0] -= passed
        if passed < full // self.batch:
            block = load()
            on_device = order.to(self.device)
            for start in range(passed * self.batch, full, self.batch):
                rows = on_device[start:start + self.batch]
                yield tuple(t.index_select(0, rows) for t in block)
        return index[order[full:].numpy()]

    def batches(self, skip: int = 0) -> Iterator[tuple[torch.Tensor, ...]]:
        """Endless minibatches; `skip` leaves out the first ones, exactly the ones a loader with the
        same seed would have served first."""
        none = np.empty(0, dtype=np.int64)
        left = [skip]
        if not self.streaming:
            whole = [(0, self.samples)]
            index, loaded = self._index(whole, none), []

            def load() -> tuple[torch.Tensor, ...]:
                if not loaded:  # once: the whole dataset stays on the device
                    loaded.append(self._load(whole, none))
                return loaded[0]
            while True:
                yield from self._serve(index, load, left)
        chunks = math.ceil(self.samples / self.chunk)
        bounds = [(c * self.chunk, min((c + 1) * self.chunk, self.samples)) for c in range(chunks)]
        while True:
            order = torch.randperm(chunks, generator=self.generator).tolist()
            carried, taken = none, 0
            while taken < chunks:
                picked, rows = [], len(carried)
                while taken < chunks and rows + (bounds[order[taken]][1] - bounds[order[taken]][0]) <= self.cap:
                    picked.append(bounds[order[taken]])
                    rows += picked[-1][1] - picked[-1][0]
                    taken += 1
                if not picked:  # the carried rows leave no room for a chunk: they sit out this epoch
                    carried = none
                    continue
                picked.sort()  # sequential reads from the files
                carried = yield from self._serve(self._index(picked, carried),
                                                 lambda p=picked, c=carried: self._load(p, c), left)
