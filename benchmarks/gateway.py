"""Gateway throughput against bare aiohttp baselines, measured in one run.

    /health  vs  a bare aiohttp handler returning the same JSON       (target >= 0.8x)
    /status  vs  a bare aiohttp handler that makes one Ray actor call (target >= 0.8x)

All servers live in this process on one event loop (as the gateway does in production); the
load comes from a separate client process so it does not share the servers' GIL. Targets are
measured in rounds, alternating the order, and the medians are compared.

    .venv/bin/python benchmarks/gateway.py [--seconds 3] [--rounds 3] [--concurrency 16]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


async def _load(url: str, seconds: float, concurrency: int) -> float:
    import aiohttp

    done = 0
    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        async def worker():
            nonlocal done
            while time.monotonic() < deadline:
                async with session.get(url) as response:
                    await response.read()
                    assert response.status == 200, response.status
                done += 1
        started = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return done / (time.monotonic() - started)


def measure(url: str, seconds: float, concurrency: int) -> float:
    out = subprocess.run([sys.executable, __file__, "--load", url, "--seconds", str(seconds),
                          "--concurrency", str(concurrency)], check=True, capture_output=True, text=True)
    return float(out.stdout.strip())


async def _servers(tmp: str):
    import ray
    from aiohttp import web

    from actors.bootstrap import connect, ensure_node_actors
    from orchestrator.config import Settings
    from orchestrator.gateway.app import serve
    from orchestrator.gateway.node import NodeGateway

    settings = Settings(node_id="bench", port=18780, host="127.0.0.1", data_dir=Path(tmp), ray_dashboard=False)
    connect(settings)
    actors = ensure_node_actors(settings, "127.0.0.1", settings.port)
    node = NodeGateway(settings, actors)
    await serve(node)
    await asyncio.sleep(1.0)  # let the view fill
    health_body = node.health()

    @ray.remote(num_cpus=0)
    class Echo:
        async def snapshot(self):
            return {"node_id": "bench", "peers": [], "jobs": []}

    echo = Echo.remote()
    await echo.snapshot.remote()

    async def bare_health(request):
        return web.json_response(health_body)

    async def bare_actor(request):
        return web.json_response(await echo.snapshot.remote())

    bare = web.Application()
    bare.router.add_get("/health", bare_health)
    bare.router.add_get("/status", bare_actor)
    runner = web.AppRunner(bare, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 18781).start()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--load")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    if args.load:
        print(asyncio.run(_load(args.load, args.seconds, args.concurrency)))
        return

    import threading

    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run_coroutine_threadsafe(_servers(tmp), loop).result(120)
        targets = {
            "gateway /health": "http://127.0.0.1:18780/health",
            "bare /health": "http://127.0.0.1:18781/health",
            "gateway /status": "http://127.0.0.1:18780/status",
            "bare+actor /status": "http://127.0.0.1:18781/status",
        }
        results: dict[str, list[float]] = {name: [] for name in targets}
        for round_index in range(args.rounds):
            order = list(targets) if round_index % 2 == 0 else list(reversed(targets))
            for name in order:
                results[name].append(measure(targets[name], args.seconds, args.concurrency))
        medians = {name: statistics.median(values) for name, values in results.items()}
        health_ratio = medians["gateway /health"] / medians["bare /health"]
        status_ratio = medians["gateway /status"] / medians["bare+actor /status"]
        print(f"machine: {platform.machine()} {platform.processor() or ''} cpus={os.cpu_count()} python={platform.python_version()}")
        for name, value in medians.items():
            print(f"{name:>20}: {value:9.0f} req/s  (rounds: {', '.join(f'{v:.0f}' for v in results[name])})")
        print(f"/health ratio gateway/bare:        {health_ratio:.2f}x (target >= 0.8)")
        print(f"/status ratio gateway/bare+actor:  {status_ratio:.2f}x (target >= 0.8)")
        print(json.dumps({"health_ratio": round(health_ratio, 3), "status_ratio": round(status_ratio, 3)}))
    import ray
    ray.shutdown()


if __name__ == "__main__":
    main()
