"""Connectivity probes from this node: address resolution, TCP connect time, and what they add up to.

Only standard-library sockets here; the HTTP round trip belongs to whoever owns the HTTP client.
Targets always come from this node's own knowledge (its peer table or the registry), never from
a request. Nothing here keeps state.
"""
from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import dataclass
from typing import Any, Iterable

from orchestrator.ops.registry import Host


async def resolve(host: str, port: int, timeout_s: float) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        infos = await asyncio.wait_for(
            asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM), timeout_s)
    except (OSError, asyncio.TimeoutError) as exc:
        return {"host": host, "addresses": [], "error": _describe(exc), "resolve_ms": _since_ms(started)}
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    return {"host": host, "addresses": addresses, "error": None, "resolve_ms": _since_ms(started)}


async def tcp_connect(host: str, port: int, timeout_s: float) -> dict[str, Any]:
    """Open (and close) one TCP connection; the time is the handshake's, as seen from here."""
    started = time.perf_counter()
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
    except (OSError, asyncio.TimeoutError) as exc:
        return {"ok": False, "connect_ms": None, "error": _describe(exc)}
    elapsed = _since_ms(started)
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass  # the peer may reset a connection that sent nothing; the connect already succeeded
    return {"ok": True, "connect_ms": elapsed, "error": None}


def verdict(tcp_ok: bool, health_ok: bool, ray_alive: bool | None) -> dict[str, Any]:
    """What the probes add up to, in a sentence an operator can act on."""
    if tcp_ok and health_ok:
        return {"reachable": True, "summary": "gateway reachable and healthy"}
    if tcp_ok:
        return {"reachable": False, "summary": "gateway accepts TCP but /health failed: the gateway is unwell"}
    if ray_alive:
        return {"reachable": False,
                "summary": "gateway unreachable while Ray sees the node alive: the gateway is down or blocked"}
    return {"reachable": False, "summary": "gateway unreachable and Ray does not see the node alive: the node is down"}


@dataclass(frozen=True)
class ProbeTarget:
    host_id: str
    service: str
    address: str
    port: int


def probe_targets(hosts: Iterable[Host]) -> list[ProbeTarget]:
    """Every (host, service) the registry knows an address and port for."""
    return [ProbeTarget(h.host_id, service, h.address, port) for h in hosts if h.address
            for service, port in sorted(h.ports.items())]


def _describe(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}"[:300]


def _since_ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
