"""Per-peer statistics of this node's outgoing HTTP calls: requests, errors, bytes, latency percentiles.

A peer is keyed by the `host:port` it was called at (the reader maps that to a node id). Latency
runs from the request's start to the answer's headers; percentiles are over the last
LATENCY_WINDOW calls to that peer, counters over the life of this process. What survives a
failure: nothing, on purpose: the figures describe this process's own calls.
"""
from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass, field

LATENCY_WINDOW = 1024


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of an ascending list; None when empty."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


@dataclass
class _PeerCounters:
    requests: int = 0
    errors: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    last_error: str | None = None
    last_call_at: float | None = None
    latencies_s: deque = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))


class TransportStats:
    """Thread-safe: client callbacks may run on any event loop of the process."""

    def __init__(self) -> None:
        self._peers: dict[str, _PeerCounters] = {}
        self._lock = threading.Lock()

    def _peer(self, peer: str) -> _PeerCounters:
        return self._peers.setdefault(peer, _PeerCounters())

    def record(self, peer: str, latency_s: float | None, now: float, error: str | None = None) -> None:
        """One finished call: `latency_s` up to the answer's headers (None if none came), `error` if it failed."""
        with self._lock:
            counters = self._peer(peer)
            counters.requests += 1
            counters.last_call_at = now
            if latency_s is not None:
                counters.latencies_s.append(latency_s)
            if error is not None:
                counters.errors += 1
                counters.last_error = error

    def add_bytes(self, peer: str, sent: int = 0, received: int = 0) -> None:
        with self._lock:
            counters = self._peer(peer)
            counters.bytes_sent += sent
            counters.bytes_received += received

    def snapshot(self) -> dict[str, dict]:
        with self._lock:
            peers = {name: (c.requests, c.errors, c.bytes_sent, c.bytes_received, c.last_error, c.last_call_at,
                            sorted(c.latencies_s)) for name, c in self._peers.items()}
        return {name: {"requests": requests, "errors": errors, "bytes_sent": sent, "bytes_received": received,
                       "bytes": sent + received, "last_error": last_error, "last_call_at": last_call_at,
                       "latency_samples": len(latencies),
                       "p50_latency_ms": _ms(percentile(latencies, 50)), "p99_latency_ms": _ms(percentile(latencies, 99))}
                for name, (requests, errors, sent, received, last_error, last_call_at, latencies) in peers.items()}


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)
