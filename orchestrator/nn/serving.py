"""Dynamic batching of network evaluations: many clients' leaf batches, one forward pass.

A search worker sends the observations of its pending leaves (a float32 array [n, *shape]) and
waits for the network's raw outputs. `DynamicBatcher` queues such requests and runs one forward
pass over the concatenation of as many whole requests as fit in `max_batch` rows, as soon as
that many rows are waiting or the oldest request has waited `max_wait_s`, whichever comes first.
Requests that arrive while a forward pass runs are batched into the next one, so the longer a pass
takes, the larger the next batch becomes without any waiting at all. A request may name its client:
when every client heard from in the last `CLIENT_ACTIVE_S` already has a request waiting, nobody
else is coming and the batch runs at once (a lone worker never pays the wait).

`NetworkServer` keeps one batcher per network key (several models served at once, for example a
tournament between two), each with its own thread for the forward pass, so that the event loop
keeps gathering requests while the device computes. The forward pass runs in inference mode, with
batch norms folded and activations channels-last, in the precision each network was loaded with
(`auto`: what `serving_dtype` picks, bfloat16 on a GPU, float16 where the card lacks bfloat16, and
on a CPU that computes bfloat16 in hardware, float32 on other CPUs). The in-process evaluator runs
its network through the same `PreparedNetwork`, so for the same batch both give the same numbers.

Nothing here knows who the clients are or how requests travel; the Ray actor that hosts this
(actors/inference.py) does.
"""
from __future__ import annotations

import asyncio
import functools
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Hashable, Literal, get_args

import numpy as np
import torch

from orchestrator.nn.resnet import PolicyValueNet, inference_copy

DEFAULT_MAX_BATCH = 1024  # rows (leaf observations) per forward pass
DEFAULT_MAX_WAIT_S = 0.002  # how long the oldest request may wait for others to join its batch
Precision = Literal["auto", "float32", "bfloat16", "float16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
CLIENT_ACTIVE_S = 1.0  # a client silent this long no longer holds a batch back

Forward = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


class UnknownNetwork(KeyError):
    """A request named a network this server has not loaded (for example after a restart)."""


@dataclass(frozen=True)
class ServingConfig:
    max_batch: int = DEFAULT_MAX_BATCH
    max_wait_s: float = DEFAULT_MAX_WAIT_S
    cpu_threads: int | None = None  # torch threads for CPU forward passes; None leaves torch's setting

    def __post_init__(self) -> None:
        if self.max_batch < 1 or not self.max_wait_s >= 0:
            raise ValueError(f"invalid serving config {self}")
        if self.cpu_threads is not None and self.cpu_threads < 1:
            raise ValueError("cpu_threads must be >= 1")


@functools.lru_cache(maxsize=None)
def cpu_computes_bfloat16(cpuinfo_path: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU has bfloat16 instructions (AVX512-BF16 or AMX). Only there is a bfloat16
    forward pass faster than float32 (2.3x at batch 62 on an AVX512-BF16 EPYC core, the same at
    batch 1); other CPUs emulate it, slower than float32."""
    try:
        with open(cpuinfo_path) as cpuinfo:
            flags = next((line.split(":", 1)[1].split() for line in cpuinfo if line.startswith("flags")), [])
    except OSError:
        return False
    return not {"avx512_bf16", "amx_bf16"}.isdisjoint(flags)


def serving_dtype(precision: str, device: torch.device) -> torch.dtype:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    if precision == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if cpu_computes_bfloat16() else torch.float32
    return getattr(torch, precision)


class PreparedNetwork:
    """A network on its device in inference form; called with a float32 batch, returns float32 (logits, values).

    Image batches (4-D) run channels-last, which convolutions compute 1.1-1.3x faster on a CPU at
    every batch size measured, whatever the precision.
    """

    def __init__(self, module: torch.nn.Module, device: str = "cpu", precision: str = "auto") -> None:
        self.device = torch.device(device)
        self.dtype = serving_dtype(precision, self.device)
        module = module.to(self.device).eval()
        model = inference_copy(module) if isinstance(module, PolicyValueNet) else module
        self.model = model.to(self.dtype, memory_format=torch.channels_last)

    def prepare(self, batch: torch.Tensor) -> torch.Tensor:
        """A float32 batch as the network takes it: on its device, in its precision and layout."""
        batch = batch.to(self.device, self.dtype, non_blocking=True)
        return batch.contiguous(memory_format=torch.channels_last) if batch.dim() == 4 else batch

    def __call__(self, observations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.inference_mode():
            # An array straight from Ray's object store is read-only, which torch will not wrap: copy that one.
            batch = torch.from_numpy(observations if observations.flags.writeable else observations.copy())
            logits, values = self.model(self.prepare(batch))
            return logits.float().cpu().numpy(), values.float().cpu().numpy()


@dataclass
class _Request:
    observations: np.ndarray
    future: asyncio.Future
    arrived: float
    client: Hashable | None


class DynamicBatcher:
    """Gathers requests into forward passes of at most `max_batch` rows; one request is never split.

    A request larger than `max_batch` runs alone. `forward` runs in `executor` (one thread: passes
    of one network never overlap), so it must be thread-safe only against itself.
    """

    def __init__(self, forward: Forward, max_batch: int = DEFAULT_MAX_BATCH, max_wait_s: float = DEFAULT_MAX_WAIT_S,
                 executor: ThreadPoolExecutor | None = None) -> None:
        if max_batch < 1 or max_wait_s < 0:
            raise ValueError("max_batch must be >= 1 and max_wait_s >= 0")
        self.forward = forward
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._executor = executor or ThreadPoolExecutor(max_workers=1, thread_name_prefix="forward")
        self._pending: deque[_Request] = deque()
        self._pending_rows = 0
        self._arrived: asyncio.Event | None = None
        self._last_seen: dict[Hashable, float] = {}  # client -> when its last request arrived
        self._runner: asyncio.Task | None = None
        self.batches = 0
        self.requests = 0
        self.rows = 0
        self.largest_batch = 0
        self.forward_s = 0.0

    async def submit(self, observations: np.ndarray, client: Hashable | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The network's (logits, values) for these observations, computed in some batch with others."""
        if observations.ndim < 1 or len(observations) == 0:
            raise ValueError("a request needs at least one observation")
        loop = asyncio.get_running_loop()
        if self._runner is None or self._runner.done():
            self._arrived = asyncio.Event()
            self._runner = loop.create_task(self._run())
        request = _Request(observations, loop.create_future(), loop.time(), client)
        if client is not None:
            self._last_seen[client] = request.arrived
        self._pending.append(request)
        self._pending_rows += len(observations)
        self._arrived.set()
        return await request.future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        arrived = self._arrived
        while True:
            while not self._pending:
                arrived.clear()
                await arrived.wait()
            # The oldest request's own arrival starts the clock: one that queued during the last
            # forward pass has already waited, and goes now with whatever else is there.
            deadline = self._pending[0].arrived + self.max_wait_s
            while (self._pending_rows < self.max_batch and (remaining := deadline - loop.time()) > 0
                   and not self._everyone_waiting(loop.time())):
                arrived.clear()
                try:
                    await asyncio.wait_for(arrived.wait(), remaining)
                except asyncio.TimeoutError:
                    break
            batch = [self._pending.popleft()]
            rows = len(batch[0].observations)
            while self._pending and rows + len(self._pending[0].observations) <= self.max_batch:
                batch.append(self._pending.popleft())
                rows += len(batch[-1].observations)
            self._pending_rows -= rows
            await self._execute(batch, rows)

    def _everyone_waiting(self, now: float) -> bool:
        waiting = {request.client for request in self._pending}
        if None in waiting:
            return False
        for client, seen in list(self._last_seen.items()):
            if now - seen > CLIENT_ACTIVE_S:
                del self._last_seen[client]
        return self._last_seen.keys() <= waiting

    async def _execute(self, batch: list[_Request], rows: int) -> None:
        started = time.perf_counter()
        try:
            # Inside the try: requests of mismatched shapes fail their batch, not the batcher.
            inputs = batch[0].observations if len(batch) == 1 else np.concatenate([r.observations for r in batch])
            logits, values = await asyncio.get_running_loop().run_in_executor(self._executor, self.forward, inputs)
        except Exception as exc:  # every waiting client hears of the failure; the batcher goes on
            for request in batch:
                if not request.future.done():
                    request.future.set_exception(exc)
            return
        self.forward_s += time.perf_counter() - started
        self.batches += 1
        self.requests += len(batch)
        self.rows += rows
        self.largest_batch = max(self.largest_batch, rows)
        start = 0
        for request in batch:
            end = start + len(request.observations)
            if not request.future.done():  # a client that gave up (cancelled) is skipped
                request.future.set_result((logits[start:end], values[start:end]))
            start = end

    def stats(self) -> dict[str, float]:
        return {
            "batches": float(self.batches), "requests": float(self.requests), "rows": float(self.rows),
            "mean_batch": self.rows / self.batches if self.batches else 0.0,
            "requests_per_batch": self.requests / self.batches if self.batches else 0.0,
            "largest_batch": float(self.largest_batch), "forward_s": self.forward_s,
            "pending_rows": float(self._pending_rows),
        }


class NetworkServer:
    """One `DynamicBatcher` (and forward thread) per network key, all on one device."""

    def __init__(self, device: str = "cpu", config: ServingConfig | None = None) -> None:
        self.device = device
        self.config = config or ServingConfig()
        if self.config.cpu_threads is not None and device == "cpu":
            torch.set_num_threads(self.config.cpu_threads)
        self._batchers: dict[str, DynamicBatcher] = {}

    def load(self, key: str, module: torch.nn.Module, precision: str = "auto") -> bool:
        """Serve `module` under `key` in `precision`; False (and nothing changes) when the key is already served."""
        if key in self._batchers:
            return False
        network = PreparedNetwork(module, self.device, precision)
        self._batchers[key] = DynamicBatcher(network, self.config.max_batch, self.config.max_wait_s)
        return True

    def unload(self, key: str) -> bool:
        return self._batchers.pop(key, None) is not None

    def keys(self) -> list[str]:
        return sorted(self._batchers)

    async def evaluate(self, key: str, observations: np.ndarray, client: Hashable | None = None
                       ) -> tuple[np.ndarray, np.ndarray]:
        batcher = self._batchers.get(key)
        if batcher is None:
            raise UnknownNetwork(key)
        return await batcher.submit(np.ascontiguousarray(observations, dtype=np.float32), client)

    def stats(self) -> dict[str, dict[str, float]]:
        return {key: batcher.stats() for key, batcher in self._batchers.items()}
