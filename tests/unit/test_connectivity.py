"""Connectivity probes against real loopback sockets, the verdict, and the transport statistics."""
from __future__ import annotations

import asyncio
import socket

from orchestrator.ops.connectivity import probe_targets, resolve, tcp_connect, verdict
from orchestrator.ops.registry import Host
from orchestrator.ops.transport_stats import LATENCY_WINDOW, TransportStats, percentile


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_tcp_connect_times_a_listener_and_reports_a_refusal():
    async def scenario():
        server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            opened = await tcp_connect("127.0.0.1", port, timeout_s=5)
        refused = await tcp_connect("127.0.0.1", _closed_port(), timeout_s=5)
        return opened, refused

    opened, refused = asyncio.run(scenario())
    assert opened["ok"] and opened["connect_ms"] >= 0 and opened["error"] is None
    assert not refused["ok"] and "ConnectionRefused" in refused["error"]


def test_resolve_names_and_failures():
    found = asyncio.run(resolve("localhost", 8770, timeout_s=5))
    assert "127.0.0.1" in found["addresses"] or "::1" in found["addresses"]
    missing = asyncio.run(resolve("no-such-host.invalid", 8770, timeout_s=5))
    assert missing["addresses"] == [] and missing["error"]


def test_verdict_tells_a_down_gateway_from_a_down_node():
    assert verdict(True, True, True)["reachable"]
    assert "gateway is unwell" in verdict(True, False, True)["summary"]
    assert "gateway is down or blocked" in verdict(False, False, True)["summary"]
    assert "node is down" in verdict(False, False, False)["summary"]
    assert "node is down" in verdict(False, False, None)["summary"]


def test_probe_targets_come_from_registry_hosts_only():
    hosts = [Host("vast", "vast-1", "a", "203.0.113.1", "running", {"ssh": 41022, "gateway": 41770}),
             Host("vast", "vast-2", "b", None, "loading", {"ssh": 22}),
             Host("vast", "vast-3", "c", "203.0.113.3", "running", {})]
    assert [(t.host_id, t.service, t.address, t.port) for t in probe_targets(hosts)] == [
        ("vast-1", "gateway", "203.0.113.1", 41770), ("vast-1", "ssh", "203.0.113.1", 41022)]


def test_percentile_is_nearest_rank():
    values = sorted(float(v) for v in range(1, 101))
    assert percentile(values, 50) == 50.0 and percentile(values, 99) == 99.0 and percentile(values, 100) == 100.0
    assert percentile([], 50) is None and percentile([3.0], 99) == 3.0


def test_transport_stats_per_peer():
    stats = TransportStats()
    for i in range(100):
        stats.record("10.0.0.1:8770", latency_s=(i + 1) / 1000, now=1.0)
    stats.record("10.0.0.1:8770", latency_s=None, now=2.0, error="ClientConnectorError")
    stats.add_bytes("10.0.0.1:8770", sent=10, received=90)
    stats.record("10.0.0.2:8770", latency_s=0.5, now=3.0, error="HTTP 503")
    figures = stats.snapshot()
    one, two = figures["10.0.0.1:8770"], figures["10.0.0.2:8770"]
    assert (one["requests"], one["errors"], one["bytes"], one["last_error"]) == (101, 1, 100, "ClientConnectorError")
    assert (one["p50_latency_ms"], one["p99_latency_ms"]) == (50.0, 99.0)
    assert (two["requests"], two["errors"], two["p50_latency_ms"]) == (1, 1, 500.0)


def test_latency_window_keeps_only_recent_calls():
    stats = TransportStats()
    for _ in range(LATENCY_WINDOW):
        stats.record("p", latency_s=10.0, now=0.0)
    for _ in range(LATENCY_WINDOW):
        stats.record("p", latency_s=0.001, now=1.0)
    figures = stats.snapshot()["p"]
    assert figures["requests"] == 2 * LATENCY_WINDOW and figures["p99_latency_ms"] == 1.0
