"""Command line: `orchestrator start ...` (also `python scripts/p2p_orchestrator.py ...`).

`start` joins the Ray cluster at --ray-address / RAY_ADDRESS, or starts an embedded local
head when none is given; creates this node's actors; serves the gateway in the foreground.
Ctrl-C (or SIGTERM) stops the gateway and this node's actors, and the embedded Ray if it
started one.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

FLAGS = {  # flag -> Settings field; flags beat P2P_* variables, which beat cluster.yaml
    "--port": ("port", int), "--node-id": ("node_id", str), "--host": ("host", str),
    "--advertise-host": ("advertise_host", str), "--data-dir": ("data_dir", Path),
    "--auth-token": ("auth_token", str), "--auth-token-file": ("auth_token_file", Path),
    "--ray-address": ("ray_address", str), "--ray-node-ip": ("ray_node_ip", str),
    "--cluster-config": ("cluster_config", Path), "--num-cpus": ("ray_num_cpus", int), "--num-gpus": ("ray_num_gpus", int),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="orchestrator", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("start", help="start this node: Ray actors and the HTTP gateway")
    for flag, (field, kind) in FLAGS.items():
        start.add_argument(flag, dest=field, type=kind, default=None)
    start.add_argument("--insecure", action="store_true", default=None,
                       help="serve beyond loopback without an auth token")
    start.add_argument("--no-dashboard", dest="ray_dashboard", action="store_false", default=None)
    start.add_argument("--no-pipeline", dest="autostart_pipeline", action="store_const", const="", default=None,
                       help="do not start the continuous improvement pipeline (autostart_pipeline)")
    return parser


async def _serve(settings) -> None:
    import ray

    from actors.bootstrap import connect, ensure_node_actors
    from orchestrator.gateway.app import serve
    from orchestrator.gateway.node import NodeGateway
    from orchestrator.ops import restart

    bind = settings.bind_host()  # refuses an unsafe address before anything starts
    started_ray = connect(settings)
    advertise = settings.advertise_host or ray.util.get_node_ip_address()
    actors = ensure_node_actors(settings, advertise, settings.port)
    node = NodeGateway(settings, actors)
    runner = await serve(node)
    print(f"node {settings.node_id} serving http://{bind}:{settings.port} "
          f"({'embedded Ray head' if started_ray else 'joined Ray at ' + str(settings.ray_address)})", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    restart.install(lambda: loop.call_soon_threadsafe(stop.set))  # a code update stops serving, then re-execs
    if settings.autostart_pipeline:
        from orchestrator.gateway.routes_pipeline import autostart

        loop.create_task(autostart(settings))
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        if restart.requested():  # the new code resumes the jobs: let them stop between units first
            await _suspend_jobs(actors.jobs, settings.restart_suspend_timeout_s)
        for handle in actors.local():
            ray.kill(handle, no_restart=True)
        if started_ray:
            ray.shutdown()


async def _suspend_jobs(supervisor, timeout_s: float) -> None:
    import ray

    try:
        answer = await asyncio.wait_for(supervisor.suspend.remote(timeout_s), timeout_s + 10)
    except (asyncio.TimeoutError, ray.exceptions.RayError) as exc:  # the restart goes on: recovery relaunches them
        logging.getLogger(__name__).warning("jobs not suspended before the restart: %s", exc)
        return
    logging.getLogger(__name__).info("suspended %d job(s) for the restart; not at a unit boundary: %s",
                                     len(answer["suspended"]), answer["not_at_boundary"] or "none")


def main(argv: list[str] | None = None) -> int:
    from orchestrator.config import Settings
    from orchestrator.ops import restart

    args = _parser().parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if k != "command" and v is not None}
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = Settings(**overrides)
        settings.bind_host()
    except ValueError as exc:
        print(f"orchestrator: {exc}", file=sys.stderr)
        return 2
    asyncio.run(_serve(settings))
    restart.exec_if_requested()
    return 0


if __name__ == "__main__":
    sys.exit(main())
